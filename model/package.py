"""The `package` stage: one bundle directory (skops + ONNX + signature + metrics + metadata), registered.

The ONNX graph is checked against scikit-learn on the held-out split before the bundle is written: labels must
match on every row and probabilities within `evaluate.onnx_tolerance`. The bundle is then logged to the
training run and registered in MLflow with the alias `challenger` and its digest as a tag.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from model.bundle import (
    METADATA_FILE,
    METRICS_FILE,
    ONNX_FILE,
    SIGNATURE_FILE,
    SKOPS_FILE,
    Bundle,
    Feature,
    Metadata,
    Signature,
    compute_digest,
)
from model.contract import CLASSES, TARGET
from model.data import data_hash, read_split
from model.layout import Layout
from model.params import Params
from model.registry import CHALLENGER, ModelVersionRef, Registry
from model.serialization import load_skops


class ParityError(RuntimeError):
    """The ONNX graph does not reproduce scikit-learn's predictions."""


@dataclass
class Parity:
    rows: int
    label_matches: int
    max_probability_diff: float


def export_onnx(model: Any, X: np.ndarray) -> bytes:
    from skl2onnx import to_onnx

    classifier = model.steps[-1][1] if hasattr(model, "steps") else model
    onx = to_onnx(model, X[:1].astype(np.float32), options={id(classifier): {"zipmap": False}})
    data: bytes = onx.SerializeToString()
    return data


def check_parity(model: Any, onnx_bytes: bytes, X: pd.DataFrame, tolerance: float) -> Parity:
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    labels, probs = session.run(None, {input_name: X.to_numpy(dtype=np.float32)})
    sk_labels = model.predict(X)
    sk_probs = model.predict_proba(X)
    parity = Parity(
        rows=len(X),
        label_matches=int((np.asarray(labels).ravel() == sk_labels).sum()),
        max_probability_diff=float(np.abs(np.asarray(probs) - sk_probs).max()),
    )
    if parity.label_matches != parity.rows or parity.max_probability_diff > tolerance:
        raise ParityError(
            f"ONNX export disagrees with scikit-learn on the test split: labels match on {parity.label_matches}"
            f"/{parity.rows} rows, largest probability difference {parity.max_probability_diff:.2e}"
            f" (tolerance {tolerance:.0e})"
        )
    return parity


def onnx_io(onnx_bytes: bytes) -> tuple[str, list[str]]:
    import onnx

    graph = onnx.load_from_string(onnx_bytes).graph
    return graph.input[0].name, [o.name for o in graph.output]


def build_bundle(
    layout: Layout, params: Params, out: Path, extra_metadata: dict[str, Any] | None = None
) -> Bundle:
    """Write a verified bundle to `out` (replaced atomically) from the trained model and test split."""
    model = load_skops(layout.trained_model)
    X, _ = read_split(layout.test_csv)
    features = list(X.columns)
    onnx_bytes = export_onnx(model, X.to_numpy(dtype=np.float64))
    parity = check_parity(model, onnx_bytes, X, params.evaluate.onnx_tolerance)
    input_name, outputs = onnx_io(onnx_bytes)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        shutil.copyfile(layout.trained_model, staging / SKOPS_FILE)
        (staging / ONNX_FILE).write_bytes(onnx_bytes)
        signature = Signature(
            features=[Feature(name=f, dtype="float64") for f in features],
            target=TARGET,
            classes=list(CLASSES),
            onnx_input=input_name,
            onnx_outputs=outputs,
        )
        (staging / SIGNATURE_FILE).write_text(signature.model_dump_json(indent=2) + "\n")
        metrics = json.loads(layout.evaluate_metrics.read_text()) if layout.evaluate_metrics.exists() else {}
        metrics["onnx_parity"] = {
            "rows": parity.rows,
            "label_matches": parity.label_matches,
            "max_probability_diff": parity.max_probability_diff,
        }
        (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
        from model.train import git_commit

        metadata = Metadata(
            digest=compute_digest(staging),
            name=params.registry.model_name,
            git_commit=git_commit(layout.root),
            data_hash=data_hash(layout.train_csv, layout.test_csv),
            params=params.model_dump(by_alias=True, mode="json"),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            **(extra_metadata or {}),
        )
        (staging / METADATA_FILE).write_text(metadata.model_dump_json(indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Bundle.open(out)


def package(layout: Layout, params: Params) -> tuple[Bundle, ModelVersionRef]:
    import mlflow

    from model.train import read_run

    run = read_run(layout)
    bundle = build_bundle(layout, params, layout.bundle, {"mlflow_run_id": run["run_id"]})
    registry = Registry(layout.root)
    with mlflow.start_run(run_id=run["run_id"]):
        mlflow.log_artifacts(str(bundle.path), artifact_path="bundle")
        mlflow.set_tag("sluice.bundle_digest", bundle.digest)
    bundle_uri = f"runs:/{run['run_id']}/bundle"
    ref = registry.register(
        params.registry.model_name, run["model_uri"], run["run_id"], bundle.digest, bundle_uri
    )
    registry.set_alias(ref.name, CHALLENGER, ref.version)
    return bundle, ref
