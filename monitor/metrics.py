"""`sluice monitor`'s Prometheus metrics: the drift score per feature under the name the alert rules and the
Grafana dashboard read (`sluice_drift_score{namespace, deployment_name, predictor_name, feature}`), the
predictions' drift, live accuracy or error, and how much was read. Served on a port or written to a textfile
(node_exporter's textfile collector), from one registry rebuilt at each run."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from deployment import metric_names as n
from monitor.assess import Assessment
from monitor.records import LabelCounts

LABELS = [n.NAMESPACE, n.DEPLOYMENT, n.PREDICTOR]


def registry_of(
    assessments: Sequence[Assessment], labels: LabelCounts, now: float | None = None
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    score = Gauge(
        n.DRIFT_SCORE,
        "Population stability index of a feature's live values against the contract's reference (0: no drift)",
        [*LABELS, n.FEATURE],
        registry=registry,
    )
    prediction = Gauge(
        n.PREDICTION_DRIFT,
        "Population stability index of the predictions against the target's reference",
        LABELS,
        registry=registry,
    )
    accuracy = Gauge(
        n.LIVE_ACCURACY, "Accuracy on labels joined within the label window", LABELS, registry=registry
    )
    error = Gauge(
        n.LIVE_ERROR,
        "Mean absolute error on labels joined within the label window",
        LABELS,
        registry=registry,
    )
    records = Gauge(n.MONITOR_RECORDS, "Prediction rows read in the window", LABELS, registry=registry)
    label_states = Gauge(
        n.MONITOR_LABELS, "Feedback labels by state (joined, late, unmatched)", ["state"], registry=registry
    )
    last = Gauge(n.MONITOR_LAST_RUN, "When the monitor last computed these figures", registry=registry)
    for a in assessments:
        key = (a.namespace, a.deployment, a.predictor)
        records.labels(*key).set(a.n)
        for x in a.drifts:
            score.labels(*key, x.feature).set(x.score)
        if a.prediction is not None:
            prediction.labels(*key).set(a.prediction.score)
        if a.accuracy is not None:
            accuracy.labels(*key).set(a.accuracy)
        if a.error is not None:
            error.labels(*key).set(a.error)
    for state in ("joined", "late", "unmatched"):
        label_states.labels(state).set(getattr(labels, state))
    last.set(time.time() if now is None else now)
    return registry


def write_textfile(registry: CollectorRegistry, path: str | Path) -> Path:
    """Write atomically (node_exporter must never read half a file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(generate_latest(registry))
    tmp.replace(path)
    return path
