"""The `evaluate` stage: held-out metrics, plots, and a gate against the champion pinned in params.yaml.

The candidate may not be worse than the champion by more than `evaluate.tolerance` on `evaluate.gate_metric`
(lower is better for log_loss, rmse and mae). Both are scored on the same held-out split. The champion is
`evaluate.champion` (version and digest, written by `sluice model champion --pin`), not whatever the
registry's alias points at today, so the stage's result depends only on its declared inputs; when the alias
has moved on, the report says so. The verdict and its numbers go into the metrics file whatever it is, so
`dvc metrics show` tells why a pipeline stopped.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from model.contract import Contract
from model.data import contract_for, read_split
from model.layout import Layout
from model.metrics import LOWER_IS_BETTER, Predictions, predict, score
from model.params import ChampionPin, EvaluateParams, Params, check_task
from model.registry import CHAMPION, Registry


class GateFailed(RuntimeError):
    """The candidate is worse than the champion by more than the tolerance."""


class ChampionError(RuntimeError):
    """The pinned champion cannot be found, or cannot be scored on this data (another contract)."""


@dataclass
class Gate:
    metric: str
    candidate: float
    champion: float | None
    champion_version: str | None
    tolerance: float
    passed: bool
    note: str = ""

    def explain(self) -> str:
        note = f" ({self.note})" if self.note else ""
        if self.champion is None:
            return (
                f"no champion pinned (evaluate.champion): {self.metric}={self.candidate:.4f} accepted{note}"
            )
        lower = self.metric in LOWER_IS_BETTER
        bound = self.champion + self.tolerance if lower else self.champion - self.tolerance
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"evaluate gate {verdict}: candidate {self.metric}={self.candidate:.4f}, champion (version "
            f"{self.champion_version}) {self.champion:.4f}; must be {'at most' if lower else 'at least'} "
            f"{bound:.4f} (tolerance {self.tolerance}){note}"
        )


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


PLOT_KINDS = ("roc", "confusion", "predicted")


def write_plots(layout: Layout, contract: Contract, y: pd.Series, predictions: Predictions) -> None:
    """ROC curve (binary), confusion pairs (classifiers), predicted against actual (regression).

    Each kind has its folder in reports/plots (dvc.yaml's top-level `plots` give each its template); the
    folders a task has no plot for stay empty, which `dvc plots show` passes over without an error.
    """
    from sklearn.metrics import roc_curve

    folders = {kind: layout.plots / kind for kind in PLOT_KINDS}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.csv"):
            stale.unlink()
    pairs = pd.DataFrame({"actual": y.to_numpy(), "predicted": predictions.values})
    if contract.task == "regression":
        pairs.to_csv(folders["predicted"] / "predicted.csv", index=False)
        return
    assert predictions.probabilities is not None
    if contract.task == "binary":
        fpr, tpr, _ = roc_curve(y == predictions.classes[1], predictions.probabilities[:, 1])
        pd.DataFrame({"fpr": fpr, "tpr": tpr}).to_csv(folders["roc"] / "roc.csv", index=False)
    pairs.to_csv(folders["confusion"] / "confusion.csv", index=False)


def champion_metrics(
    registry: Registry, name: str, pin: ChampionPin, contract: Contract, X: pd.DataFrame, y: pd.Series
) -> dict[str, float]:
    """The pinned champion's metrics on this split; refuses a champion of another contract."""
    from model.bundle import Bundle
    from model.registry import RegistryError

    try:
        ref = registry.by_digest(name, pin.digest)
        bundle = Bundle.open(registry.resolve(f"models:/{name}/{ref.version}"))
    except RegistryError as e:
        raise ChampionError(
            f"evaluate.champion (version {pin.version}, {pin.digest}): {e}; pin the current one with "
            "`sluice model champion --pin`, or clear it with `sluice model champion --unpin`"
        ) from None
    signature = bundle.signature
    if signature.feature_names != contract.feature_names or signature.task != contract.task:
        raise ChampionError(
            f"evaluate.champion (version {pin.version}) was trained on another contract (task "
            f"{signature.task}, {len(signature.features)} features; {contract.path} says task {contract.task}, "
            f"{len(contract.features)} features): it cannot be scored on this data. Start a new line with "
            "`sluice model champion --unpin`"
        )
    model = bundle.load_sklearn()
    return score(contract.task, y, predict(model, X, contract.task))


def evaluate(layout: Layout, params: Params) -> tuple[dict[str, Any], Gate]:
    import mlflow

    from model.serialization import load_skops
    from model.train import read_run

    contract = contract_for(layout, params.data)
    check_task(params, contract, layout.params, contract.path)
    X, y = read_split(layout.test_csv, contract)
    model = load_skops(layout.trained_model)
    predictions = predict(model, X, contract.task)
    metrics = score(contract.task, y, predictions)
    write_plots(layout, contract, y, predictions)

    registry = Registry(layout.registry_root)
    name = params.registry.model_name
    pin = params.evaluate.champion
    champ = champion_metrics(registry, name, pin, contract, X, y) if pin else None
    verdict = gate(params.evaluate.gate_metric, metrics, champ, pin.version if pin else None, params.evaluate)
    current = registry.alias(name, CHAMPION)
    if current is not None and (pin is None or current.digest != pin.digest):
        verdict.note = (
            f"the registry's @{CHAMPION} is now version {current.version}; "
            "`sluice model champion --pin` compares against it"
        )
    report: dict[str, Any] = {**metrics, "task": contract.task, "test_rows": len(X)}
    layout.evaluate_metrics.parent.mkdir(parents=True, exist_ok=True)
    layout.evaluate_metrics.write_text(json.dumps(report, indent=2, default=_plain) + "\n")
    # Apart from the scores: pinning another champion re-runs the gate, and must not re-package the model.
    layout.gate_report.write_text(json.dumps(asdict(verdict), indent=2, default=_plain) + "\n")

    run = read_run(layout)
    with registry.fluent(), mlflow.start_run(run_id=run["run_id"]):
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        mlflow.log_metric("gate_passed", float(verdict.passed))
    if not verdict.passed:
        raise GateFailed(verdict.explain())
    return report, verdict


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
