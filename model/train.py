"""The `train` stage: a scikit-learn pipeline built from the contract and params.yaml, logged to MLflow.

The preprocessing lives inside the pipeline, so the ONNX graph and every serving mode get it too:
- all features numeric or boolean: one float matrix; missing values imputed (median, or most frequent for
  booleans) when a feature is nullable; standardised for the linear models;
- any categorical feature: one input per feature; categories one-hot encoded with the contract's categories
  (a missing value is a category of its own for a nullable feature; a value the contract does not list
  encodes as all zeros, though serving refuses it first).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.contract import MISSING_CATEGORY, Contract
from model.data import contract_for, read_split
from model.layout import Layout
from model.metrics import predict, score
from model.params import Params, TrainParams, check_task
from model.registry import Registry
from model.serialization import save_skops


@dataclass
class TrainResult:
    run_id: str
    metrics: dict[str, float]


def _estimator(params: TrainParams, classifier: bool) -> Any:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression, Ridge

    if params.model == "logistic_regression":
        lr = params.logistic_regression
        return LogisticRegression(C=lr.C, max_iter=lr.max_iter, random_state=params.seed)
    if params.model == "ridge":
        return Ridge(alpha=params.ridge.alpha)
    rf = params.random_forest
    forest = RandomForestClassifier if classifier else RandomForestRegressor
    return forest(
        n_estimators=rf.n_estimators,
        max_depth=rf.max_depth,
        min_samples_leaf=rf.min_samples_leaf,
        random_state=params.seed,
        n_jobs=1,
    )


def build_estimator(params: TrainParams, contract: Contract) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    estimator = _estimator(params, contract.is_classifier)
    head = "classifier" if contract.is_classifier else "regressor"
    # No scaler in front of trees: they are scale-invariant, and a float32 scaler in the ONNX graph would move
    # values across split thresholds (scikit-learn's trees compare in float32 on the raw input).
    scale = params.model != "random_forest"
    numeric = [f for f in contract.features if f.type == "numeric"]
    boolean = [f for f in contract.features if f.type == "boolean"]
    if contract.layout == "matrix":
        steps: list[tuple[str, Any]] = []
        if any(f.nullable for f in contract.features):
            # Positions, not names: the ONNX graph takes one unnamed matrix.
            position = {name: i for i, name in enumerate(contract.feature_names)}
            impute = [
                ("numeric", SimpleImputer(strategy="median"), [position[f.name] for f in numeric]),
                ("boolean", SimpleImputer(strategy="most_frequent"), [position[f.name] for f in boolean]),
            ]
            steps.append(("impute", ColumnTransformer([t for t in impute if t[2]])))
        if scale:
            steps.append(("scale", StandardScaler()))
        return Pipeline([*steps, (head, estimator)])
    parts: list[tuple[str, Any, list[str]]] = []
    if numeric:
        numeric_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
        if scale:
            numeric_steps.append(("scale", StandardScaler()))
        parts.append(("numeric", Pipeline(numeric_steps), [f.name for f in numeric]))
    if boolean:
        parts.append(("boolean", SimpleImputer(strategy="most_frequent"), [f.name for f in boolean]))
    categorical = [f for f in contract.features if f.type == "categorical"]
    encoder = OneHotEncoder(
        categories=[
            [*([MISSING_CATEGORY] if f.nullable else []), *(f.categories or [])] for f in categorical
        ],
        handle_unknown="ignore",
        sparse_output=False,
    )
    parts.append(("categorical", encoder, [f.name for f in categorical]))
    return Pipeline([("features", ColumnTransformer(parts)), (head, estimator)])


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def train(layout: Layout, params: Params) -> TrainResult:
    import mlflow

    contract = contract_for(layout, params.data)
    check_task(params, contract, layout.params, contract.path)
    X, y = read_split(layout.train_csv, contract)
    estimator = build_estimator(params.train, contract).fit(X, y)
    fitted = score(contract.task, y, predict(estimator, X, contract.task))
    metrics = {f"train_{k}": v for k, v in fitted.items()} | {"train_rows": float(len(X))}
    save_skops(estimator, layout.trained_model)

    registry = Registry(layout.registry_root)
    experiment_id = registry.experiment_id()
    with registry.fluent(), mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params(flatten(params.model_dump(by_alias=True, mode="json")))
        mlflow.log_params({"contract.task": contract.task, "contract.features": len(contract.features)})
        mlflow.log_metrics(metrics)
        commit = git_commit(layout.root)
        if commit:
            mlflow.set_tag("mlflow.source.git.commit", commit)
        mlflow.set_tag("sluice.stage", "train")
    result = TrainResult(run.info.run_id, metrics)
    layout.train_run.parent.mkdir(parents=True, exist_ok=True)
    layout.train_run.write_text(
        json.dumps({"run_id": result.run_id, "experiment_id": experiment_id}, indent=2) + "\n"
    )
    layout.train_metrics.parent.mkdir(parents=True, exist_ok=True)
    layout.train_metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    return result


def read_run(layout: Layout) -> dict[str, str]:
    path: Path = layout.train_run
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run the train stage first (dvc repro train)")
    data: dict[str, str] = json.loads(path.read_text())
    return data
