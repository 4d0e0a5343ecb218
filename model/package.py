"""The `package` stage: one bundle directory (skops + ONNX + signature + metrics + metadata), registered.

The ONNX graph is checked against scikit-learn on the held-out split before the bundle is written: labels must
match on every row and probabilities be within `evaluate.onnx_tolerance` (for a regression, predictions within
it relative to max(1, |value|)). The bundle is then logged to the training run as an MLflow model whose
pyfunc answers what Sluice serves (model/mlflow_model.py) and registered with the alias `challenger` and its
digest as a tag. Under `dvc exp run` nothing is registered unless `registry.register_experiments` is true:
experiments are for comparing, and `sluice model register` registers the one you keep.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
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
    onnx_feeds,
)
from model.contract import Contract
from model.data import contract_for, data_hash, read_split
from model.layout import Layout
from model.params import Params
from model.registry import CHALLENGER, TAG_DIGEST, ModelVersionRef, Registry
from model.serialization import load_skops

# Set by DVC in the environment of every stage that `dvc exp run` runs.
EXPERIMENT_ENV = "DVC_EXP_NAME"


class ParityError(RuntimeError):
    """The ONNX graph does not reproduce scikit-learn's predictions."""


@dataclass
class Parity:
    rows: int
    label_matches: int  # rows (a regression has no labels: every row counts)
    max_probability_diff: float  # classifiers: largest |ONNX - scikit-learn| probability
    max_prediction_diff: float = 0.0  # regression: largest |ONNX - scikit-learn| / max(1, |scikit-learn|)


def export_onnx(model: Any, contract: Contract, X: pd.DataFrame) -> bytes:
    from skl2onnx import convert_sklearn, to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    head = model.steps[-1][1] if hasattr(model, "steps") else model
    options = {id(head): {"zipmap": False}} if contract.is_classifier else None
    if contract.layout == "matrix":
        onx = to_onnx(model, X.to_numpy(dtype=np.float32)[:1], options=options)
    else:
        types = [
            (f.name, StringTensorType([None, 1]) if f.type == "categorical" else FloatTensorType([None, 1]))
            for f in contract.features
        ]
        onx = convert_sklearn(model, initial_types=types, options=options)
    data: bytes = onx.SerializeToString()
    return data


def signature_for(model: Any, contract: Contract, onnx_bytes: bytes) -> Signature:
    import onnx

    graph = onnx.load_from_string(onnx_bytes).graph
    inputs = [i.name for i in graph.input]
    features = [
        Feature(
            name=f.name,
            dtype="string" if f.type == "categorical" else "float64",
            type=f.type,
            nullable=f.nullable,
            categories=f.categories,
        )
        for f in contract.features
    ]
    classes = [c.item() if isinstance(c, np.generic) else c for c in getattr(model, "classes_", [])]
    return Signature(
        features=features,
        target=contract.target.name,
        task=contract.task,
        classes=classes if contract.is_classifier else [],
        target_bounds=None if contract.is_classifier else contract.target.bounds,
        layout=contract.layout,
        onnx_input=inputs[0] if contract.layout == "matrix" else "input",
        onnx_inputs=inputs if contract.layout == "columns" else None,
        onnx_outputs=[o.name for o in graph.output],
    )


def check_parity(
    model: Any, onnx_bytes: bytes, signature: Signature, X: pd.DataFrame, tolerance: float
) -> Parity:
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    outputs = session.run(signature.onnx_outputs, onnx_feeds(signature, X))
    if not signature.is_classifier:
        onnx_values = np.asarray(outputs[0], dtype=np.float64).reshape(-1)
        sk_values = np.asarray(model.predict(X), dtype=np.float64).reshape(-1)
        relative = np.abs(onnx_values - sk_values) / np.maximum(1.0, np.abs(sk_values))
        parity = Parity(len(X), len(X), 0.0, float(relative.max()))
        if parity.max_prediction_diff > tolerance:
            raise ParityError(
                f"ONNX export disagrees with scikit-learn on the test split: largest relative difference "
                f"{parity.max_prediction_diff:.2e} (tolerance {tolerance:.0e})"
            )
        return parity
    labels, probs = outputs[0], outputs[1]
    sk_labels = model.predict(X)
    sk_probs = model.predict_proba(X)
    parity = Parity(
        rows=len(X),
        label_matches=int((np.asarray(labels).reshape(-1) == sk_labels).sum()),
        max_probability_diff=float(np.abs(np.asarray(probs) - sk_probs).max()),
    )
    if parity.label_matches != parity.rows or parity.max_probability_diff > tolerance:
        raise ParityError(
            f"ONNX export disagrees with scikit-learn on the test split: labels match on {parity.label_matches}"
            f"/{parity.rows} rows, largest probability difference {parity.max_probability_diff:.2e}"
            f" (tolerance {tolerance:.0e})"
        )
    return parity


def build_bundle(
    layout: Layout, params: Params, out: Path, extra_metadata: dict[str, Any] | None = None
) -> Bundle:
    """Write a verified bundle to `out` (replaced atomically) from the trained model and test split."""
    contract = contract_for(layout, params.data)
    model = load_skops(layout.trained_model)
    X, _ = read_split(layout.test_csv, contract)
    onnx_bytes = export_onnx(model, contract, X)
    signature = signature_for(model, contract, onnx_bytes)
    parity = check_parity(model, onnx_bytes, signature, X, params.evaluate.onnx_tolerance)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        shutil.copyfile(layout.trained_model, staging / SKOPS_FILE)
        (staging / ONNX_FILE).write_bytes(onnx_bytes)
        (staging / SIGNATURE_FILE).write_text(signature.model_dump_json(indent=2, exclude_none=True) + "\n")
        metrics = json.loads(layout.evaluate_metrics.read_text()) if layout.evaluate_metrics.exists() else {}
        metrics["onnx_parity"] = {k: v for k, v in asdict(parity).items() if v or k != "max_prediction_diff"}
        (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
        from model.train import git_commit

        metadata = Metadata(
            digest=compute_digest(staging),
            name=params.registry.model_name,
            git_commit=git_commit(layout.root),
            data_hash=data_hash(layout.train_csv, layout.test_csv),
            # What shaped the model (other params only decide whether and how it is checked).
            params=params.model_dump(by_alias=True, mode="json", include={"data", "train"}),
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


def log_model(bundle: Bundle, X: pd.DataFrame) -> str:
    """Log `bundle` to the active MLflow run as a pyfunc model (and as plain files); returns the model URI."""
    import warnings

    import mlflow
    from mlflow.models import infer_signature

    from model import mlflow_model

    example = X.head(3)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)  # MLflow's hints on integer/missing columns
        answers = mlflow_model.BundleModel().open(bundle).predict(None, example)
        signature = infer_signature(example, answers)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=mlflow_model.__file__,
            artifacts={mlflow_model.BUNDLE_ARTIFACT: str(bundle.path)},
            signature=signature,
            input_example=example,
            pip_requirements=["onnxruntime", "pandas", "pydantic", "PyYAML"],
        )
    mlflow.log_artifacts(str(bundle.path), artifact_path="bundle")
    mlflow.set_tag(TAG_DIGEST, bundle.digest)
    return str(info.model_uri)


def registration_skipped(params: Params) -> str:
    """Why this run registers nothing ("" when it registers)."""
    experiment = os.environ.get(EXPERIMENT_ENV)
    if experiment and not params.registry.register_experiments:
        return (
            f"`dvc exp run` ({experiment}): not registered (registry.register_experiments is false; "
            "`sluice model register` registers the bundle you keep)"
        )
    return ""


def register(
    registry: Registry, params: Params, bundle: Bundle, run_id: str, model_uri: str
) -> ModelVersionRef:
    ref = registry.register(
        params.registry.model_name, model_uri, run_id, bundle.digest, f"runs:/{run_id}/bundle"
    )
    registry.set_alias(ref.name, CHALLENGER, ref.version)
    return ref


def package(layout: Layout, params: Params) -> tuple[Bundle, ModelVersionRef | None, str]:
    """Build, log and (unless skipped) register the bundle; returns it, its version, and why it was not."""
    import mlflow

    from model.train import read_run

    run = read_run(layout)
    bundle = build_bundle(layout, params, layout.bundle, {"mlflow_run_id": run["run_id"]})
    registry = Registry(layout.registry_root)
    X, _ = read_split(layout.test_csv, contract_for(layout, params.data))
    with registry.fluent(), mlflow.start_run(run_id=run["run_id"]):
        model_uri = log_model(bundle, X)
    skipped = registration_skipped(params)
    if skipped:
        return bundle, None, skipped
    return bundle, register(registry, params, bundle, run["run_id"], model_uri), ""


def register_bundle(root: Path) -> ModelVersionRef:
    """Register the bundle in artifacts/model (logged by its package run) as a new version, alias challenger."""
    import mlflow

    from model.params import load_params
    from model.registry import RegistryError

    layout = Layout.at(root)
    params = load_params(layout.params)
    bundle = Bundle.open(layout.bundle)
    run_id = bundle.metadata.mlflow_run_id
    if not run_id:
        raise RegistryError(
            f"{layout.bundle}: metadata.json names no MLflow run (package it with `dvc repro`)"
        )
    registry = Registry(layout.registry_root)
    name = params.registry.model_name
    for version in registry.client.search_model_versions(f"name = '{name}'"):
        if version.tags.get(TAG_DIGEST) == bundle.digest:
            raise RegistryError(f"{name} version {version.version} already is this bundle ({bundle.digest})")
    experiment_id = registry.experiment_id()
    with registry.fluent():
        models = mlflow.search_logged_models(
            filter_string=f"source_run_id = '{run_id}'", output_format="list", experiment_ids=[experiment_id]
        )
    if not models:
        raise RegistryError(f"MLflow run {run_id} logged no model for {layout.bundle} (package it again)")
    return register(registry, params, bundle, run_id, models[0].model_uri)
