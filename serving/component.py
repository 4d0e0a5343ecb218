"""The Seldon Core v1 Python component: what `seldon-core-microservice serving.component.Classifier` runs.

Graph parameters arrive as constructor keyword arguments: `model_uri` (STRING) and `model_digest` (STRING,
`sha256:...`; a bundle with another digest is refused at load, so a manifest pins its version). All the work
is the predictor core's; this class only adapts it to the wrapper's hooks. Bad input raises the wrapper's
`SeldonMicroserviceException`, which it answers with a 400 naming the problem.

    PREDICTIVE_UNIT_PARAMETERS='[{"name":"model_uri","type":"STRING","value":"artifacts/model"}]' \\
        seldon-core-microservice serving.component.Classifier --http-port 9000
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, NoReturn

import numpy as np

from serving.core.feedback import score_feedback, score_values
from serving.core.predictor import Predictor, RequestError
from serving.core.validation import Features, check_answer
from serving.protocols import labels


class Classifier:
    """Serves one bundle; `predict` returns class probabilities, columns named by class label (for a
    regression, the predicted value, one column `prediction`)."""

    def __init__(self, model_uri: str, model_digest: str | None = None, backend: str = "onnx"):
        self.model_uri = model_uri
        self.model_digest = model_digest or None
        self.backend = backend
        self.predictor: Predictor | None = None
        self._metrics: list[dict[str, Any]] = []
        self._rows = 0
        self._feedback = 0
        self._correct = 0

    def load(self) -> None:
        self.predictor = Predictor.load(
            self.model_uri,
            expected_digest=self.model_digest,
            backend="sklearn" if self.backend == "sklearn" else "onnx",
        )

    @property
    def _model(self) -> Predictor:
        if self.predictor is None:  # the wrapper calls load() first; direct users may not
            self.load()
        assert self.predictor is not None
        return self.predictor

    def predict(self, X: Any, features_names: Iterable[str] | None = None, **kwargs: Any) -> np.ndarray:
        started = time.perf_counter()
        rows = self._validate(X, features_names)
        prediction = self._model.predict(rows)
        try:
            check_answer(rows, prediction.probabilities)
        except RequestError as e:
            self._bad_request(str(e))
        self._metrics = [
            {"type": "COUNTER", "key": "sluice_model_rows", "value": len(rows)},
            {
                "type": "TIMER",
                "key": "sluice_model_predict_ms",
                "value": (time.perf_counter() - started) * 1e3,
            },
        ]
        return np.asarray(prediction.probabilities, dtype=np.float64)

    def class_names(self) -> list[str]:
        return list(self._model.output_names)

    def send_feedback(
        self,
        features: Any,
        feature_names: Iterable[str] | None,
        reward: float,
        truth: Any,
        routing: int | None = None,
    ) -> list[Any]:
        """Count feedback by the core's rules: a reward within [0, 1]; `truth` scored on the request's rows.

        The wrapper itself counts `seldon_api_model_feedback_total` and `..._reward_total`; a reward out of
        range is answered with a 400 (the wrapper has counted it by then: the router in front refuses it first).
        """
        model = self._model
        truth_rows: list[Any] | None = None
        predicted: list[Any] | None = None
        if truth is not None and np.size(truth) and features is not None and np.size(features):
            message = {"data": {"ndarray": np.asarray(truth).tolist()}}
            try:
                truth_rows = (
                    labels.truth_labels(message) if model.is_classifier else labels.truth_values(message)
                )
            except RequestError as e:
                self._bad_request(str(e))
            predicted = model.predict(self._validate(features, feature_names)).labels.tolist()
        # The wrapper's message is a protobuf: an absent reward reads 0.0, so with a truth, 0 means "score it".
        given = reward if truth_rows is None or reward else None
        try:
            if model.is_classifier:
                feedback = score_feedback(given, truth_rows, predicted)
            else:
                bounds = model.signature.target_bounds
                assert bounds is not None  # a regression's signature always has them
                feedback = score_values(given, truth_rows, predicted, bounds)
        except RequestError as e:
            self._bad_request(str(e))
        self._metrics = [{"type": "COUNTER", "key": "sluice_model_feedback", "value": 1}]
        if feedback.correct is not None:
            self._feedback += feedback.rows
            self._correct += feedback.correct
            self._metrics += [
                {"type": "COUNTER", "key": "sluice_model_feedback_rows", "value": feedback.rows},
                {"type": "COUNTER", "key": "sluice_model_feedback_correct", "value": feedback.correct},
            ]
        return []

    def metrics(self) -> list[dict[str, Any]]:
        """Custom metrics of the last call (the wrapper adds them to its Prometheus endpoint)."""
        out, self._metrics = self._metrics, []
        return out

    def tags(self) -> dict[str, Any]:
        model = self._model
        return {"model_name": model.name, "model_digest": model.digest}

    def health_status(self) -> list[list[float]]:
        # Healthy means the model answers: predict a fixed row, as Seldon's own servers do.
        model = self._model
        return [[float(p) for p in model.probe().probabilities[0]]]

    def init_metadata(self) -> dict[str, Any]:
        model = self._model
        return {
            "name": model.name,
            "versions": [model.short_digest],
            "platform": f"sluice-{model.backend}",
            "inputs": [{"messagetype": "ndarray", "schema": {"names": model.feature_names}}],
            "outputs": [{"messagetype": "ndarray", "schema": {"names": self.class_names()}}],
            "custom": {"model_digest": model.digest, "model_uri": self.model_uri},
        }

    def _validate(self, X: Any, names: Iterable[str] | None) -> np.ndarray:
        # The wrapper turns data.ndarray / data.tensor into an array and passes data.names; jsonData comes
        # as parsed JSON (records or columns), with the class names as `names`: ignore them there.
        given = list(names) if names is not None and isinstance(X, np.ndarray) else []
        features = self._model.features
        try:
            if isinstance(X, np.ndarray) and X.dtype.kind == "U" and not features.plain:
                X = _typed_from_text(features, X, given)
            return self._model.validate(X, given or None)
        except RequestError as e:
            self._bad_request(str(e))

    def _bad_request(self, message: str) -> NoReturn:
        from seldon_core.flask_utils import SeldonMicroserviceException

        raise SeldonMicroserviceException(message, status_code=400, reason="MICROSERVICE_BAD_DATA")


def _typed_from_text(features: Features, X: np.ndarray, names: list[str]) -> Any:
    """seldon-core reads a data.ndarray of numbers and text with numpy, which turns every value to text:
    read each back by its feature's type (jsonData records keep JSON's own types). Rows of another shape,
    or names the model does not have, are left for the validator to name."""
    rows = X.reshape(1, -1) if X.ndim == 1 else X
    order = [features.index.get(n, -1) for n in names] if names else list(range(features.count))
    if rows.ndim != 2 or rows.shape[1] != len(order) or -1 in order:
        return X
    return np.asarray(
        [
            [
                features.from_text(v, j, f"row {r}, feature {features.names[j]!r}")
                for v, j in zip(row, order, strict=True)
            ]
            for r, row in enumerate(rows.tolist())
        ],
        dtype=object,
    )
