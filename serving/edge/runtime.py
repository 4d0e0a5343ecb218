"""The edge runtime: load an edge bundle and predict with ONNX Runtime, importing only numpy and onnxruntime.

A device runs this module and nothing else of Sluice: it reads the bundle's JSON files itself (no pydantic,
no scikit-learn, no pandas) and checks every file against the manifest before loading the model.
`python -m serving.edge.runtime --bundle DIR [--input rows.csv|rows.json]` prints predictions as JSON lines.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serving.core.onnx_graph import OnnxGraph
from serving.core.validation import Features, RequestError, check_answer
from serving.edge.manifest import (
    METADATA_FILE,
    SELFTEST_FILE,
    SIGNATURE_FILE,
    EdgeBundleError,
    EdgeManifest,
    read_json,
    read_manifest,
    verify,
)

# Input rows the model cannot take (the message names the row, feature and value), or an unreadable input file.
EdgeInputError = RequestError


@dataclass(frozen=True)
class EdgePrediction:
    labels: np.ndarray
    probabilities: np.ndarray


@dataclass(frozen=True)
class SelfTestResult:
    passed: bool
    rows: int
    label_matches: int
    max_probability_diff: float
    tolerance: float

    def explain(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"self-test {verdict}: labels match on {self.label_matches}/{self.rows} golden rows, largest "
            f"probability difference {self.max_probability_diff:.2e} (tolerance {self.tolerance:.0e})"
        )


class EdgeModel:
    """A loaded edge bundle. `predict` takes validated rows; `predict_rows` validates first.

    Rows are checked by the same validator as every other serving mode, against the features' types in
    the signature (numbers, booleans, categories, missing values); a classifier answers labels and
    probabilities, a regression its values (as `labels`, and as one column of `probabilities`)."""

    def __init__(
        self, directory: Path, manifest: EdgeManifest, signature: dict[str, Any], metadata: dict[str, Any]
    ):
        import onnxruntime as ort

        self.directory = directory
        self.manifest = manifest
        self.metadata = metadata
        try:
            self.feature_names: list[str] = [str(f["name"]) for f in signature["features"]]
            self.classes: list[Any] = [
                c if isinstance(c, str) else int(c) for c in signature.get("classes", [])
            ]
            self.is_classifier = str(signature.get("task", "binary")) != "regression"
            self._graph = OnnxGraph(signature)
            self._features = Features.of(signature["features"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise EdgeBundleError(f"{directory / SIGNATURE_FILE}: malformed signature ({e})") from e
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        model_path = directory / manifest.model_file
        try:
            self._session = ort.InferenceSession(
                str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # ORT raises its own exception types for a corrupt or unsupported model
            raise EdgeBundleError(f"{model_path}: ONNX Runtime cannot load it ({_first_line(e)})") from e

    @classmethod
    def load(cls, directory: str | Path, *, check: bool = True) -> EdgeModel:
        """Open an edge bundle; with `check` (the default) every file is verified against the manifest."""
        directory = Path(directory)
        if not directory.is_dir():
            raise EdgeBundleError(f"{directory}: not an edge bundle directory")
        manifest = verify(directory) if check else read_manifest(directory)
        signature = read_json(directory / SIGNATURE_FILE)
        metadata = read_json(directory / METADATA_FILE)
        if not isinstance(signature, dict) or not isinstance(metadata, dict):
            raise EdgeBundleError(f"{directory}: signature.json and metadata.json must hold JSON objects")
        return cls(directory, manifest, signature, metadata)

    @property
    def digest(self) -> str:
        return self.manifest.model_digest

    @property
    def n_features(self) -> int:
        return self._features.count

    # prediction ------------------------------------------------------------------------------------
    def predict(self, X: np.ndarray) -> EdgePrediction:
        graph = self._graph
        answer = graph.answer(self._session.run(graph.outputs, graph.feeds(X)))
        return EdgePrediction(np.asarray(answer.labels).reshape(-1), np.asarray(answer.probabilities))

    def predict_rows(self, rows: Any) -> EdgePrediction:
        X = self.validate(rows)
        prediction = self.predict(X)
        check_answer(X, prediction.probabilities)
        return prediction

    def validate(self, rows: Any) -> np.ndarray:
        """Rows in any form the predictor core accepts -> (rows x features), by the same rules."""
        return self._features.validate(rows)

    @property
    def features(self) -> Features:
        return self._features

    # self-test -------------------------------------------------------------------------------------
    def self_test(self) -> SelfTestResult:
        """Predict the golden rows shipped in the bundle and compare with the answers recorded at export."""
        golden = read_json(self.directory / SELFTEST_FILE)
        try:
            X = self._features.validate(golden["rows"]) if golden["rows"] else np.empty((0, self.n_features))
            expected_labels = np.asarray(golden["labels"])
            expected_probs = np.asarray(golden["probabilities"], dtype=np.float64)
            tolerance = float(golden["tolerance"])
        except (KeyError, TypeError, ValueError) as e:  # RequestError too: golden rows the model refuses
            raise EdgeBundleError(f"{self.directory / SELFTEST_FILE}: malformed ({e})") from e
        got = self.predict(X)
        matches = int((got.labels == expected_labels).sum())
        diff = float(np.abs(got.probabilities.astype(np.float64) - expected_probs).max()) if len(X) else 0.0
        passed = len(X) > 0 and matches == len(X) and diff <= tolerance
        return SelfTestResult(passed, len(X), matches, diff, tolerance)


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def read_rows(path: Path, features: Features | None = None) -> list[dict[str, Any]] | list[Any]:
    """Rows from a CSV file (header row of feature names) or a JSON file (a list, or {"instances": [...]}).

    CSV cells are text: each is read by its feature's type when `features` are given (a number, a boolean,
    a category; an empty cell is a missing value), else as a number."""
    if not path.is_file():
        raise EdgeInputError(f"{path}: no such file")
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            return [_csv_record(path, reader.line_num, row, features) for row in reader]
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise EdgeInputError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e
    if isinstance(data, dict) and "instances" in data:
        data = data["instances"]
    if not isinstance(data, list):
        raise EdgeInputError(f'{path}: expected a JSON list of rows or {{"instances": [...]}}')
    return data


def _csv_record(
    path: Path, line: int, row: dict[str | None, Any], features: Features | None = None
) -> dict[str, Any]:
    """CSV cells are text: parse each here, so the validator sees what a JSON client sends."""
    if None in row:
        raise EdgeInputError(f"{path}, line {line}: more cells than the header has columns")
    record: dict[str, Any] = {}
    for name, cell in row.items():
        if features is not None and not features.plain and str(name) in features.index:
            where = f"{path}, line {line}, column {name!r}"
            record[str(name)] = features.from_text(cell or "", features.index[str(name)], where)
            continue
        try:
            record[str(name)] = float(cell)
        except (TypeError, ValueError):
            raise EdgeInputError(
                f"{path}, line {line}, column {name!r}: non-numeric value {cell!r}"
            ) from None
    return record


def golden_rows(directory: Path) -> list[Any]:
    rows: list[Any] = read_json(directory / SELFTEST_FILE)["rows"]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.edge.runtime", description=__doc__)
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--input", type=Path, help="CSV or JSON rows (default: the bundle's golden rows)")
    args = parser.parse_args(argv)
    try:
        model = EdgeModel.load(args.bundle)
        rows = read_rows(args.input, model.features) if args.input else golden_rows(args.bundle)
        result = model.predict_rows(rows)
    except (EdgeBundleError, EdgeInputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for label, probs in zip(result.labels.tolist(), result.probabilities.tolist(), strict=True):
        print(
            json.dumps(
                {"prediction": label, "probabilities": probs}
                if model.is_classifier
                else {"prediction": label}
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
