"""The `train` stage: a scikit-learn pipeline chosen by params.yaml, logged to MLflow."""

from __future__ import annotations

import json
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.data import read_split
from model.layout import Layout
from model.params import Params, TrainParams
from model.registry import Registry
from model.serialization import TRUSTED_TYPES, save_skops


@dataclass
class TrainResult:
    run_id: str
    model_uri: str
    metrics: dict[str, float]


def build_estimator(params: TrainParams) -> Any:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if params.model == "logistic_regression":
        lr = params.logistic_regression
        clf: Any = LogisticRegression(C=lr.C, max_iter=lr.max_iter, random_state=params.seed)
    else:
        rf = params.random_forest
        clf = RandomForestClassifier(
            n_estimators=rf.n_estimators,
            max_depth=rf.max_depth,
            min_samples_leaf=rf.min_samples_leaf,
            random_state=params.seed,
            n_jobs=1,
        )
        # No scaler in front of trees: they are scale-invariant, and a float32 scaler in the ONNX graph would move
        # values across split thresholds (scikit-learn's trees compare in float32 on the raw input).
        return Pipeline([("classifier", clf)])
    return Pipeline([("scale", StandardScaler()), ("classifier", clf)])


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
    from sklearn.metrics import accuracy_score, roc_auc_score

    X, y = read_split(layout.train_csv)
    estimator = build_estimator(params.train)
    estimator.fit(X, y)
    proba = estimator.predict_proba(X)[:, 1]
    metrics = {
        "train_accuracy": float(accuracy_score(y, estimator.predict(X))),
        "train_roc_auc": float(roc_auc_score(y, proba)),
        "train_rows": float(len(X)),
    }
    save_skops(estimator, layout.trained_model)

    registry = Registry(layout.root)
    experiment_id = registry.experiment_id()
    with mlflow.start_run(experiment_id=experiment_id) as run, warnings.catch_warnings():
        # MLflow hints that integer outputs cannot carry NaN: class labels never do.
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        mlflow.log_params(flatten(params.model_dump(by_alias=True, mode="json")))
        mlflow.log_metrics(metrics)
        commit = git_commit(layout.root)
        if commit:
            mlflow.set_tag("mlflow.source.git.commit", commit)
        mlflow.set_tag("sluice.stage", "train")
        info = mlflow.sklearn.log_model(
            estimator,
            name="model",
            serialization_format="skops",
            skops_trusted_types=list(TRUSTED_TYPES),
            input_example=X.head(2),
        )
    result = TrainResult(run.info.run_id, info.model_uri, metrics)
    layout.train_run.parent.mkdir(parents=True, exist_ok=True)
    layout.train_run.write_text(
        json.dumps(
            {"run_id": result.run_id, "model_uri": result.model_uri, "experiment_id": experiment_id}, indent=2
        )
        + "\n"
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
