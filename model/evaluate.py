"""The `evaluate` stage: held-out metrics, plots, and a gate against the production model (`champion`).

The candidate may not be worse than the champion by more than `evaluate.tolerance` on `evaluate.gate_metric`.
Both are scored on the same held-out split. The verdict and its numbers go into the metrics file whatever it
is, so `dvc metrics show` tells why a pipeline stopped.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from model.data import read_split
from model.layout import Layout
from model.params import EvaluateParams, Params
from model.registry import CHAMPION, Registry

LOWER_IS_BETTER = frozenset({"log_loss"})


class GateFailed(RuntimeError):
    """The candidate is worse than the champion by more than the tolerance."""


@dataclass
class Gate:
    metric: str
    candidate: float
    champion: float | None
    champion_version: str | None
    tolerance: float
    passed: bool

    def explain(self) -> str:
        if self.champion is None:
            return f"no champion in the registry yet: {self.metric}={self.candidate:.4f} accepted"
        direction = "at most" if self.metric in LOWER_IS_BETTER else "at least"
        bound = (
            self.champion + self.tolerance
            if self.metric in LOWER_IS_BETTER
            else self.champion - self.tolerance
        )
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"evaluate gate {verdict}: candidate {self.metric}={self.candidate:.4f}, champion (version "
            f"{self.champion_version}) {self.champion:.4f}; must be {direction} {bound:.4f} (tolerance {self.tolerance})"
        )


def score(proba: np.ndarray, y: pd.Series) -> dict[str, float]:
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        log_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    pred = (proba >= 0.5).astype(int)
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "roc_auc": float(roc_auc_score(y, proba)),
        "f1": float(f1_score(y, pred)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred)),
        "log_loss": float(log_loss(y, np.clip(proba, 1e-15, 1 - 1e-15), labels=[0, 1])),
    }


def gate(
    metric: str,
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    version: str | None,
    params: EvaluateParams,
) -> Gate:
    value = candidate[metric]
    if champion is None:
        return Gate(metric, value, None, None, params.tolerance, True)
    base = champion[metric]
    ok = value <= base + params.tolerance if metric in LOWER_IS_BETTER else value >= base - params.tolerance
    return Gate(metric, value, base, version, params.tolerance, bool(ok))


def write_plots(layout: Layout, proba: np.ndarray, y: pd.Series) -> None:
    from sklearn.metrics import roc_curve

    layout.plots.mkdir(parents=True, exist_ok=True)
    fpr, tpr, _ = roc_curve(y, proba)
    pd.DataFrame({"fpr": fpr, "tpr": tpr}).to_csv(layout.plots / "roc.csv", index=False)
    pred = (proba >= 0.5).astype(int)
    pd.DataFrame({"actual": y.to_numpy(), "predicted": pred}).to_csv(
        layout.plots / "confusion.csv", index=False
    )


def champion_metrics(
    registry: Registry, name: str, X: pd.DataFrame, y: pd.Series
) -> tuple[dict[str, float], str] | None:
    ref = registry.alias(name, CHAMPION)
    if ref is None:
        return None
    from model.bundle import Bundle

    bundle = Bundle.open(registry.resolve(f"models:/{name}@{CHAMPION}"))
    model = bundle.load_sklearn()
    return score(model.predict_proba(X[bundle.signature.feature_names])[:, 1], y), ref.version


def evaluate(layout: Layout, params: Params) -> tuple[dict[str, Any], Gate]:
    import mlflow

    from model.serialization import load_skops
    from model.train import read_run

    X, y = read_split(layout.test_csv)
    model = load_skops(layout.trained_model)
    proba = model.predict_proba(X)[:, 1]
    metrics = score(proba, y)
    write_plots(layout, proba, y)

    registry = Registry(layout.root)
    champ = champion_metrics(registry, params.registry.model_name, X, y)
    verdict = gate(
        params.evaluate.gate_metric,
        metrics,
        champ[0] if champ else None,
        champ[1] if champ else None,
        params.evaluate,
    )
    report: dict[str, Any] = {**metrics, "test_rows": len(X), "gate": asdict(verdict)}
    layout.evaluate_metrics.parent.mkdir(parents=True, exist_ok=True)
    layout.evaluate_metrics.write_text(json.dumps(report, indent=2) + "\n")

    run = read_run(layout)
    with mlflow.start_run(run_id=run["run_id"]):
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        mlflow.log_metric("gate_passed", float(verdict.passed))
    if not verdict.passed:
        raise GateFailed(verdict.explain())
    return report, verdict
