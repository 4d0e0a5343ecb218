"""Model monitoring's figures per predictor: each feature's drift score, the predictions' drift, and live
accuracy (a regression: mean absolute error), as `sluice monitor` exports them, read either from its own
/metrics (`sluice monitor --watch --metrics-port`) or from Prometheus with the queries of dashboard/promql.py.

Nothing is kept between reads: each read is the monitor's latest run, as the exporter or Prometheus has it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from dashboard import promql
from dashboard.figures import prometheus_result
from deployment import metric_names as n
from rollout.metrics import MetricsError


@dataclass
class PredictorDrift:
    """One predictor's monitoring figures; None where the monitor exported nothing (too few rows, no labels)."""

    features: dict[str, float] = field(default_factory=dict)
    prediction: float | None = None
    accuracy: float | None = None
    error: float | None = None


@dataclass(frozen=True)
class DriftReading:
    at: float
    source: str
    predictors: dict[str, PredictorDrift] = field(default_factory=dict)
    computed_at: float | None = None  # when the monitor last ran (its own /metrics says)
    problem: str | None = None


class DriftSource(Protocol):
    threshold: float | None  # None: the environment policy's monitoring.drift_threshold

    def read(self, deployment: str, namespace: str | None) -> DriftReading:
        """The monitor's latest figures for the predictors of this deployment."""
        ...


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _put(out: dict[str, PredictorDrift], metric: str, labels: dict[str, str], value: float) -> None:
    v = _finite(value)
    if v is None:
        return
    p = out.setdefault(labels.get(n.PREDICTOR, ""), PredictorDrift())
    if metric == n.DRIFT_SCORE:
        p.features[labels.get(n.FEATURE, "")] = v
    elif metric == n.PREDICTION_DRIFT:
        p.prediction = v
    elif metric == n.LIVE_ACCURACY:
        p.accuracy = v
    elif metric == n.LIVE_ERROR:
        p.error = v


PER_PREDICTOR = (n.DRIFT_SCORE, n.PREDICTION_DRIFT, n.LIVE_ACCURACY, n.LIVE_ERROR)


class _Reader:
    """Where the monitor's figures are read, and the threshold they are judged against (None: the
    environment policy's `monitoring.drift_threshold`, the one `sluice monitor` and `sluice loop` act on)."""

    def __init__(
        self,
        url: str,
        threshold: float | None = None,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.url = url
        self.threshold = threshold
        self.client = client or httpx.Client(timeout=5.0)
        self.clock = clock


class ScrapeDrift(_Reader):
    """The figures of a `sluice monitor --watch --metrics-port` endpoint, read at each look."""

    def read(self, deployment: str, namespace: str | None) -> DriftReading:
        from prometheus_client.parser import text_string_to_metric_families

        now = self.clock()
        source = f"scrape {self.url}"
        try:
            r = self.client.get(self.url)
        except httpx.HTTPError as e:
            return DriftReading(now, source, problem=f"{source}: {e or type(e).__name__}")
        if r.status_code != 200:
            return DriftReading(now, source, problem=f"{source}: HTTP {r.status_code}")
        out: dict[str, PredictorDrift] = {}
        computed_at = None
        try:
            for family in text_string_to_metric_families(r.text):
                for s in family.samples:
                    if s.name == n.MONITOR_LAST_RUN:
                        computed_at = _finite(s.value)
                    if s.name not in PER_PREDICTOR or s.labels.get(n.DEPLOYMENT) != deployment:
                        continue
                    if namespace and s.labels.get(n.NAMESPACE) != namespace:
                        continue
                    _put(out, s.name, s.labels, s.value)
        except ValueError as e:
            return DriftReading(now, source, problem=f"{source}: not Prometheus text ({e})")
        return DriftReading(now, source, out, computed_at)


class PrometheusDrift(_Reader):
    """The same figures from Prometheus, with the query the Grafana drift panel and the drift alert use."""

    def queries(self, deployment: str, namespace: str) -> dict[str, str]:
        s = promql.Scope(namespace, deployment)
        return {
            n.DRIFT_SCORE: promql.drift(s),
            n.PREDICTION_DRIFT: promql.prediction_drift(s),
            n.LIVE_ACCURACY: promql.live_accuracy(s),
            n.LIVE_ERROR: promql.live_error(s),
        }

    def read(self, deployment: str, namespace: str | None) -> DriftReading:
        now = self.clock()
        base = self.url.rstrip("/")
        source = f"prometheus {base}"
        if not namespace:
            return DriftReading(now, source, problem="the manifest names no namespace to select")
        out: dict[str, PredictorDrift] = {}
        try:
            for metric, q in self.queries(deployment, namespace).items():
                for s in prometheus_result(self.client, base, "/api/v1/query", {"query": q, "time": now}):
                    try:
                        value = float(s["value"][1])
                    except (KeyError, IndexError, TypeError, ValueError):
                        continue
                    _put(out, metric, {k: str(v) for k, v in s.get("metric", {}).items()}, value)
        except MetricsError as e:
            return DriftReading(now, source, problem=str(e))
        return DriftReading(now, source, out)
