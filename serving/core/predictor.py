"""The predictor core: load a bundle, validate a request against its signature, predict.

Every way of serving (Seldon component, HTTP protocols, batch, stream) calls this module and nothing below
it. No HTTP here. The hot path runs the bundle's ONNX graph with ONNX Runtime (~9 us a row against ~440 us
for scikit-learn's `predict_proba`, most of which is input checking we already do once here); the
graph's parity with scikit-learn was checked when the bundle was packaged. `backend="sklearn"` runs the
scikit-learn estimator instead (for a model whose ONNX export is missing or for a parity check).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from model.bundle import Bundle, BundleError, Signature

Backend = Literal["onnx", "sklearn"]
BACKENDS: tuple[Backend, ...] = ("onnx", "sklearn")


class RequestError(ValueError):
    """A request the model cannot answer; the message names the problem (shown to the caller as a 4xx)."""


class DigestMismatch(BundleError):
    """The bundle is not the version the deployment pinned (graph parameter `model_digest`)."""


class Prediction(NamedTuple):
    """One answer per input row: the class label and the probability of each class (signature order)."""

    labels: np.ndarray
    probabilities: np.ndarray


class Predictor:
    """A loaded model version. Thread-safe for `validate` and `predict`."""

    def __init__(self, bundle: Bundle, backend: Backend = "onnx"):
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
        self.bundle = bundle
        self.backend: Backend = backend
        self.signature: Signature = bundle.signature
        self.feature_names: list[str] = bundle.signature.feature_names
        self.n_features = len(self.feature_names)
        self._index = {name: i for i, name in enumerate(self.feature_names)}
        self.classes = np.asarray(bundle.signature.classes)
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
        input_name = self.signature.onnx_input
        outputs = list(self.signature.onnx_outputs[:2])

        def run(X: np.ndarray) -> Prediction:
            labels, probabilities = session.run(outputs, {input_name: X.astype(np.float32, copy=False)})
            return Prediction(labels if labels.ndim == 1 else labels.reshape(-1), probabilities)

        return run

    def _sklearn_runner(self) -> Any:
        import warnings

        estimator = self.bundle.load_sklearn()
        model_classes = np.asarray(estimator.classes_)

        def run(X: np.ndarray) -> Prediction:
            # Columns are already in signature order (validate saw to it); building a named frame per call
            # costs more than the model, so the fitted-with-names warning is silenced instead.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="X does not have valid feature names")
                probabilities = estimator.predict_proba(X)
            return Prediction(model_classes[probabilities.argmax(axis=1)], probabilities)

        return run

    # requests --------------------------------------------------------------------------------------
    def validate(self, rows: Any, names: Sequence[str] | None = None) -> np.ndarray:
        """Any accepted request shape -> a finite float64 array (n_rows, n_features) in signature order.

        Accepted: a 2-D array or list of lists (signature order, or the order of `names`), one flat row,
        a list of records `{feature: value}`, or columns `{feature: [values]}`. Raises `RequestError`.
        """
        if type(rows) is dict or (type(rows) is not list and isinstance(rows, Mapping)):
            return self._from_columns(rows)
        if (
            isinstance(rows, list | tuple)
            and rows
            and type(rows[0]) is not list
            and isinstance(rows[0], Mapping)
        ):
            return self._from_records(rows)
        X = self._as_matrix(rows)
        if names is not None:
            X = X[:, self._order(names, X.shape[1])]
        elif X.shape[1] != self.n_features:
            raise RequestError(
                f"wrong feature count: got {X.shape[1]} values per row, the model takes {self.n_features}"
            )
        self._check_finite(X)
        return X

    def predict(self, X: np.ndarray) -> Prediction:
        """Predict validated rows (the output of `validate`)."""
        result: Prediction = self._run(X)
        return result

    def predict_rows(self, rows: Any, names: Sequence[str] | None = None) -> Prediction:
        return self.predict(self.validate(rows, names))

    # validation helpers ----------------------------------------------------------------------------
    def _as_matrix(self, rows: Any) -> np.ndarray:
        if isinstance(rows, np.ndarray):
            X = rows
        else:
            if type(rows) is not list and (isinstance(rows, str | bytes) or not isinstance(rows, Sequence)):
                raise RequestError(f"expected a list of rows, records or columns, got {type(rows).__name__}")
            try:
                X = np.asarray(rows)
            except ValueError as e:  # ragged rows
                raise RequestError(f"rows of different lengths: {_first_line(e)}") from None
        if X.size == 0:
            raise RequestError("empty batch: the request holds no rows")
        if X.ndim == 1:
            X = X.reshape(1, -1)
        if X.ndim != 2:
            raise RequestError(f"expected a 2-D array (rows x features), got {X.ndim} dimensions")
        if X.dtype.kind not in "fiu":
            bad = _first_non_numeric(rows if not isinstance(rows, np.ndarray) else rows.tolist())
            if bad is not _NONE or X.dtype.kind != "O":
                raise RequestError(
                    f"non-numeric value in the request: {bad if bad is not _NONE else X.dtype}"
                )
            try:  # e.g. integers too large for int64: numbers all the same
                X = X.astype(np.float64)
            except (TypeError, ValueError, OverflowError) as e:
                raise RequestError(f"non-numeric value in the request: {e}") from None
        return X.astype(np.float64, copy=False)

    def _order(self, names: Sequence[str], width: int) -> list[int]:
        names = list(names)
        if len(names) != width:
            raise RequestError(f"names lists {len(names)} features but each row has {width} values")
        unknown = [n for n in names if n not in self._index]
        if unknown:
            raise RequestError(f"unknown feature {unknown[0]!r} (the model takes {self._hint()})")
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise RequestError(f"feature {dup!r} given twice")
        missing = [n for n in self.feature_names if n not in set(names)]
        if missing:
            raise RequestError(f"missing feature {missing[0]!r} ({len(missing)} missing in all)")
        position = {n: i for i, n in enumerate(names)}
        return [position[n] for n in self.feature_names]

    def _from_records(self, records: Sequence[Any]) -> np.ndarray:
        X = np.empty((len(records), self.n_features), dtype=np.float64)
        for r, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise RequestError(
                    f"row {r}: expected a record {{feature: value}}, got {type(record).__name__}"
                )
            self._check_keys(record.keys(), f"row {r}: ")
            for name, value in record.items():
                X[r, self._index[name]] = _number(value, f"row {r}, feature {name!r}")
        if len(records) == 0:
            raise RequestError("empty batch: the request holds no rows")
        self._check_finite(X)
        return X

    def _from_columns(self, columns: Mapping[str, Any]) -> np.ndarray:
        self._check_keys(columns.keys(), "")
        lengths = set()
        for name, values in columns.items():
            if not isinstance(values, Sequence) or isinstance(values, str | bytes):
                raise RequestError(f"column {name!r}: expected a list of values, got {type(values).__name__}")
            lengths.add(len(values))
        if len(lengths) > 1:
            raise RequestError(f"columns of different lengths: {sorted(lengths)}")
        n = lengths.pop()
        if n == 0:
            raise RequestError("empty batch: the request holds no rows")
        X = np.empty((n, self.n_features), dtype=np.float64)
        for name, values in columns.items():
            j = self._index[name]
            for r, value in enumerate(values):
                X[r, j] = _number(value, f"row {r}, feature {name!r}")
        self._check_finite(X)
        return X

    def _check_keys(self, keys: Any, where: str) -> None:
        keys = set(keys)
        unknown = sorted(k for k in keys if k not in self._index)
        if unknown:
            raise RequestError(f"{where}unknown feature {unknown[0]!r} (the model takes {self._hint()})")
        missing = [n for n in self.feature_names if n not in keys]
        if missing:
            raise RequestError(f"{where}missing feature {missing[0]!r} ({len(missing)} missing in all)")

    def _check_finite(self, X: np.ndarray) -> None:
        # One reduction on the hot path: a finite sum means finite values (an overflowing sum of huge
        # finite values falls through to the exact check, which then passes).
        if math.isfinite(X.sum()):
            return
        if not np.isfinite(X).all():
            r, c = np.argwhere(~np.isfinite(X))[0]
            raise RequestError(
                f"row {r}, feature {self.feature_names[c]!r}: {X[r, c]} is not a finite number (NaN or inf)"
            )

    def _hint(self) -> str:
        names = self.feature_names
        shown = ", ".join(repr(n) for n in names[:5])
        return f"{len(names)} features: {shown}{', ...' if len(names) > 5 else ''}"


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(f"{where}: non-numeric value {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise RequestError(f"{where}: {value} is not a finite number (NaN or inf)")
    return number


_NONE = object()


def _first_non_numeric(rows: Any) -> Any:
    """The first value in nested lists that is not a number, as a repr, or `_NONE`."""
    stack = [rows]
    while stack:
        item = stack.pop()
        if isinstance(item, list | tuple):
            stack.extend(reversed(item))
        elif isinstance(item, bool) or not isinstance(item, int | float):
            return repr(item)
    return _NONE


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__
