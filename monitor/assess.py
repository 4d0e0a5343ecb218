"""What `sluice monitor` concludes from the log: per predictor, each feature's drift, the predictions' drift,
and live accuracy (a regression: mean absolute error) on the labels that joined in time."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from model.contract import Contract
from monitor import drift as d
from monitor.records import LabelCounts, Log, Rows


@dataclass(frozen=True)
class Thresholds:
    drift: float = 0.2
    alpha: float = 0.01
    min_records: int = 200
    min_labels: int = 50
    accuracy: float | None = None  # live accuracy under this starts a retrain
    error: float | None = None  # a regression's mean absolute error over this does


@dataclass
class Assessment:
    """One predictor's state over the window read."""

    namespace: str
    deployment: str
    predictor: str
    digest: str | None
    n: int
    first: float | None
    last: float | None
    drifts: list[d.Drift] = field(default_factory=list)
    prediction: d.Drift | None = None
    labelled: int = 0
    accuracy: float | None = None
    error: float | None = None
    enough: bool = False  # at least min_records rows: drift is judged

    @property
    def drifted(self) -> list[str]:
        return [x.feature for x in self.drifts if x.drifted]

    def reasons(self, t: Thresholds) -> list[str]:
        """Why this predictor's model should be retrained (empty: it should not)."""
        out = [
            f"feature {x.feature} drifted (PSI {x.score:.3f} > {t.drift:g})" for x in self.drifts if x.drifted
        ]
        if self.labelled >= t.min_labels:
            if t.accuracy is not None and self.accuracy is not None and self.accuracy < t.accuracy:
                out.append(f"live accuracy {self.accuracy:.3f} < {t.accuracy:g} on {self.labelled} labels")
            if t.error is not None and self.error is not None and self.error > t.error:
                out.append(
                    f"live mean absolute error {self.error:.4g} > {t.error:g} on {self.labelled} labels"
                )
        return out


def assess(
    log: Log, contract: Contract, thresholds: Thresholds, namespace: str = "", deployment: str = ""
) -> list[Assessment]:
    """One `Assessment` per predictor found in the log."""
    rows = log.rows
    out = []
    for name in sorted(set(rows.predictor)):
        mine = rows.select(np.array([p == name for p in rows.predictor], dtype=bool))
        out.append(_one(mine, name, contract, thresholds, namespace, deployment))
    return out


def _one(
    rows: Rows, name: str, contract: Contract, t: Thresholds, namespace: str, deployment: str
) -> Assessment:
    digests = [x for x in rows.digest if x]
    a = Assessment(
        namespace,
        deployment,
        name,
        digests[-1] if digests else None,
        len(rows),
        float(rows.time.min()) if len(rows) else None,
        float(rows.time.max()) if len(rows) else None,
    )
    a.enough = len(rows) >= t.min_records
    drifts = []
    for j, f in enumerate(contract.features):
        ref = f.reference
        column = rows.X[:, j] if len(rows) else np.empty(0)
        if ref is None:
            continue
        if f.type == "numeric" and ref.quantiles:
            drifts.append(d.numeric(f.name, column.astype(float), ref.quantiles))
        elif ref.frequencies:
            drifts.append(d.categorical(f.name, list(column), ref.frequencies))
    a.drifts = d.flag(drifts, t.drift, t.alpha) if a.enough else drifts
    target = contract.target.reference
    if target is not None and len(rows):
        if contract.is_classifier and target.frequencies:
            a.prediction = d.categorical("prediction", rows.predicted, target.frequencies)
        elif target.quantiles:
            a.prediction = d.numeric("prediction", np.asarray(rows.predicted, dtype=float), target.quantiles)
        if a.prediction is not None and a.enough:
            a.prediction = d.flag([a.prediction], t.drift, t.alpha)[0]
    labelled = rows.labelled
    a.labelled = int(labelled.sum())
    if a.labelled:
        pairs = [(p, y) for p, y, ok in zip(rows.predicted, rows.truth, labelled, strict=True) if ok]
        if contract.is_classifier:
            a.accuracy = float(np.mean([d.category_key(p) == d.category_key(y) for p, y in pairs]))
        else:
            a.error = float(np.mean([abs(float(p) - float(y)) for p, y in pairs]))
    return a


__all__ = ["Assessment", "LabelCounts", "Thresholds", "assess"]
