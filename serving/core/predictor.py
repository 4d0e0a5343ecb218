"""The predictor core: load a bundle, validate a request against its signature, predict.

Every way of serving (Seldon component, HTTP protocols, batch, stream) calls this module and nothing below
it. No HTTP here. The hot path runs the bundle's ONNX graph with ONNX Runtime (~9 us a row against ~440 us
for scikit-learn's `predict_proba`, most of which is input checking we already do once here); the
graph's parity with scikit-learn was checked when the bundle was packaged. `backend="sklearn"` runs the
scikit-learn estimator instead (for a model whose ONNX export is missing or for a parity check).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from model.bundle import Bundle, BundleError, Signature
from serving.core.onnx_graph import OnnxGraph, Prediction
from serving.core.validation import Features, RequestError, check_answer

__all__ = ["BACKENDS", "Backend", "DigestMismatch", "Prediction", "Predictor", "RequestError"]

Backend = Literal["onnx", "sklearn"]
BACKENDS: tuple[Backend, ...] = ("onnx", "sklearn")


class DigestMismatch(BundleError):
    """The bundle is not the version the deployment pinned (graph parameter `model_digest`)."""


class Predictor:
    """A loaded model version. Thread-safe for `validate` and `predict`."""

    def __init__(self, bundle: Bundle, backend: Backend = "onnx"):
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
        self.bundle = bundle
        self.backend: Backend = backend
        self.signature: Signature = bundle.signature
        self.features = Features.of(bundle.signature.features)
        self.feature_names: list[str] = self.features.names
        self.n_features = self.features.count
        self.classes = np.asarray(bundle.signature.classes)
        self.is_classifier = bundle.signature.is_classifier
        # The columns the protocols answer with: one per class (named by its label), or the predicted value.
        self.output_names: list[str] = (
            [str(c) for c in bundle.signature.classes] if self.is_classifier else ["prediction"]
        )
        self.graph = OnnxGraph(bundle.signature.model_dump())
        self._run = self._onnx_runner() if backend == "onnx" else self._sklearn_runner()

    @classmethod
    def load(
        cls,
        uri: str | Path,
        expected_digest: str | None = None,
        *,
        backend: Backend = "onnx",
        root: str | Path = ".",
    ) -> Predictor:
        """Resolve `uri` (path, `file://`, `models:/name@alias`, `models:/name/version`) and load it.

        With `expected_digest` set, a bundle with another digest is refused (the deployment pins a version).
        """
        from model.registry import resolve_bundle_path

        path = resolve_bundle_path(str(uri), root)
        bundle = Bundle.open(path)
        if expected_digest and bundle.digest != expected_digest:
            raise DigestMismatch(
                f"{uri}: bundle digest {bundle.digest} does not match the pinned model_digest {expected_digest}"
            )
        return cls(bundle, backend)

    @property
    def digest(self) -> str:
        return self.bundle.digest

    @property
    def short_digest(self) -> str:
        return self.bundle.short_digest

    @property
    def name(self) -> str:
        return self.bundle.metadata.name

    # runners ---------------------------------------------------------------------------------------
    def _onnx_runner(self) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One row at a time: thread pools cost more than they give on a 2-core box under concurrent load.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(
            str(self.bundle.onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        graph = self.graph
        outputs, feeds, answer = graph.outputs, graph.feeds, graph.answer

        def run(X: np.ndarray) -> Prediction:
            return answer(session.run(outputs, feeds(X)))

        return run

    def _sklearn_runner(self) -> Any:
        import warnings

        estimator = self.bundle.load_sklearn()
        model_classes = np.asarray(getattr(estimator, "classes_", []))
        named = self.signature.layout == "columns"  # its preprocessing picks columns by name
        names = self.feature_names
        text = [r.type == "categorical" for r in self.features.rules]

        def run(X: np.ndarray) -> Prediction:
            # Columns are already in signature order (validate saw to it); building a named frame per call
            # costs more than the model, so for a model of numbers the fitted-with-names warning is
            # silenced instead.
            rows: Any = X
            if named:
                import pandas as pd

                rows = pd.DataFrame(
                    {n: X[:, j] if text[j] else X[:, j].astype(np.float64) for j, n in enumerate(names)}
                )
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="X does not have valid feature names")
                if not self.is_classifier:
                    values = np.asarray(estimator.predict(rows), dtype=np.float64).reshape(-1)
                    return Prediction(values, values.reshape(-1, 1))
                probabilities = estimator.predict_proba(rows)
            return Prediction(model_classes[probabilities.argmax(axis=1)], probabilities)

        return run

    # requests --------------------------------------------------------------------------------------
    def probe(self) -> Prediction:
        """The answer to a fixed row every model accepts: what a health check asks."""
        return self.predict(self.features.probe())

    def validate(self, rows: Any, names: Sequence[str] | None = None) -> np.ndarray:
        """Any accepted form of rows -> an array (n_rows, n_features) in signature order.

        The rules are `serving.core.validation`'s, the same in every serving mode. Raises `RequestError`.
        """
        return self.features.validate(rows, names)

    def predict(self, X: np.ndarray) -> Prediction:
        """Predict validated rows (the output of `validate`)."""
        result: Prediction = self._run(X)
        return result

    def predict_rows(self, rows: Any, names: Sequence[str] | None = None) -> Prediction:
        """Validate, predict, and refuse rows the model could not compute (`check_answer`)."""
        X = self.features.validate(rows, names)
        prediction = self.predict(X)
        check_answer(X, prediction.probabilities)
        return prediction
