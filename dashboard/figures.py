"""Live figures per predictor (requests/s, error ratio, latency quantiles, feedback accuracy, a shadow's
disagreement), from a router's /metrics or from Prometheus, with a few minutes of history for sparklines.

A scrape source keeps the scrapes of the last few minutes in memory to take differences between them (a cache
of what the router exposes: losing it loses only the sparklines' past); Prometheus keeps its own history and
is asked with the queries of dashboard/promql.py, the same as the Grafana panels'.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import httpx

from dashboard import promql
from rollout.metrics import MetricsError
from rollout.observations import PredictorStats, histogram_quantile

FIGURES = (
    "requests_per_second",
    "error_ratio",
    "p50",
    "p95",
    "p99",
    "feedback_per_second",
    "accuracy",
    "disagreement",
)


@dataclass(frozen=True)
class Figure:
    """One predictor's figures over a window; None where there is nothing to compute them from."""

    requests_per_second: float | None = None
    error_ratio: float | None = None
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    feedback_per_second: float | None = None
    accuracy: float | None = None
    disagreement: float | None = None


@dataclass(frozen=True)
class Reading:
    at: float
    window: float
    source: str
    predictors: dict[str, Figure] = field(default_factory=dict)
    history: dict[str, list[tuple[float, Figure]]] = field(default_factory=dict)
    problem: str | None = None


class FigureSource(Protocol):
    def read(self, deployment: str, namespace: str | None, predictors: Sequence[str]) -> Reading:
        """Figures for these predictors of the deployment, now and over the last few minutes."""
        ...


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def figure(delta: PredictorStats, seconds: float) -> Figure:
    """Figures from the counts a predictor gained over `seconds`."""
    if seconds <= 0:
        return Figure()
    return Figure(
        requests_per_second=delta.requests / seconds,
        error_ratio=_ratio(delta.errors, delta.requests),
        p50=histogram_quantile(0.5, delta.buckets),
        p95=histogram_quantile(0.95, delta.buckets),
        p99=histogram_quantile(0.99, delta.buckets),
        feedback_per_second=delta.feedback / seconds,
        accuracy=_ratio(delta.reward, delta.feedback),
        disagreement=_ratio(delta.disagreements, delta.comparisons),
    )


_PREDICTOR = re.compile(r'predictor_name="((?:[^"\\]|\\.)*)"')


class ScrapeFigures:
    """Figures from a router's /metrics (`sluice up`), differences between scrapes kept for `keep` seconds."""

    def __init__(
        self,
        url: str,
        window: float = 30.0,
        keep: float = 300.0,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.url = url
        self.window = window
        self.keep = keep
        self.client = client or httpx.Client(timeout=5.0)
        self.clock = clock
        self._scrapes: deque[tuple[float, dict[str, PredictorStats]]] = deque()
        self._lock = threading.Lock()

    def _scrape(self, deployment: str, predictors: Sequence[str]) -> dict[str, PredictorStats]:
        from rollout.metrics.scrape import ScrapeProvider, parse_exposition

        text = ScrapeProvider(self.url, client=self.client).scrape()
        names = set(predictors) | {m[1] for m in _PREDICTOR.finditer(text)}
        return parse_exposition(text, deployment, sorted(names))

    def read(self, deployment: str, namespace: str | None, predictors: Sequence[str]) -> Reading:
        now = self.clock()
        source = f"scrape {self.url}"
        try:
            stats = self._scrape(deployment, predictors)
        except MetricsError as e:
            return Reading(now, self.window, source, problem=str(e))
        with self._lock:
            self._scrapes.append((now, stats))
            while len(self._scrapes) > 2 and self._scrapes[1][0] < now - self.keep - self.window:
                self._scrapes.popleft()
            scrapes = list(self._scrapes)
        history = {p: self._series(scrapes, p) for p in predictors}
        current = {p: (h[-1][1] if h else Figure()) for p, h in history.items()}
        return Reading(now, self.window, source, current, history)

    def _series(
        self, scrapes: list[tuple[float, dict[str, PredictorStats]]], p: str
    ) -> list[tuple[float, Figure]]:
        from rollout.metrics.scrape import delta

        out: list[tuple[float, Figure]] = []
        j = 0
        for i in range(1, len(scrapes)):
            t, after = scrapes[i]
            # the latest earlier scrape at least one window back (or the oldest there is)
            while j + 1 < i and scrapes[j + 1][0] <= t - self.window:
                j += 1
            t0, before = scrapes[j]
            zero = PredictorStats()
            out.append((t, figure(delta(before.get(p, zero), after.get(p, zero)), t - t0)))
        return out


class PrometheusFigures:
    """Figures from Prometheus' HTTP API, with the same PromQL as the Grafana dashboard's panels."""

    def __init__(
        self,
        url: str,
        window: float = 60.0,
        keep: float = 900.0,
        points: int = 60,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.url = url.rstrip("/")
        self.window = window
        self.keep = keep
        self.points = points
        self.client = client or httpx.Client(timeout=5.0)
        self.clock = clock

    def queries(self, deployment: str, namespace: str) -> dict[str, str]:
        s = promql.Scope(namespace, deployment)
        w = f"{max(1, math.ceil(self.window))}s"
        return {
            "requests_per_second": promql.requests_per_second(s, w),
            "error_ratio": promql.error_ratio(s, w),
            "p50": promql.latency_quantile(s, 0.5, w),
            "p95": promql.latency_quantile(s, 0.95, w),
            "p99": promql.latency_quantile(s, 0.99, w),
            "feedback_per_second": promql.feedback_per_second(s, w),
            "accuracy": promql.accuracy(s, w),
            "disagreement": promql.disagreement(s, w),
        }

    def _get(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        return prometheus_result(self.client, self.url, path, params)

    def read(self, deployment: str, namespace: str | None, predictors: Sequence[str]) -> Reading:
        now = self.clock()
        source = f"prometheus {self.url}"
        if not namespace:
            return Reading(now, self.window, source, problem="the manifest names no namespace to select")
        start = now - self.keep
        step = max(1.0, self.keep / self.points)
        values: dict[str, dict[str, float]] = {p: {} for p in predictors}
        series: dict[str, dict[float, dict[str, float]]] = {p: {} for p in predictors}
        try:
            for name, q in self.queries(deployment, namespace).items():
                for s in self._get("/api/v1/query", {"query": q, "time": now}):
                    p = s["metric"].get("predictor_name", "")
                    if p in values:
                        values[p][name] = float(s["value"][1])
                for s in self._get(
                    "/api/v1/query_range", {"query": q, "start": start, "end": now, "step": step}
                ):
                    p = s["metric"].get("predictor_name", "")
                    if p in series:
                        for t, v in s["values"]:
                            series[p].setdefault(float(t), {})[name] = float(v)
        except MetricsError as e:
            return Reading(now, self.window, source, problem=str(e))
        return Reading(
            now,
            self.window,
            source,
            {p: _figure(v) for p, v in values.items()},
            {p: [(t, _figure(v)) for t, v in sorted(by_t.items())] for p, by_t in series.items()},
        )


def prometheus_result(
    client: httpx.Client, url: str, path: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """The `result` of a Prometheus HTTP API query; MetricsError naming the server when there is none."""
    try:
        r = client.get(f"{url}{path}", params=params)
        body = r.json()
    except (httpx.HTTPError, ValueError) as e:
        raise MetricsError(f"prometheus {url}: {e}") from e
    if r.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error", r.status_code) if isinstance(body, dict) else r.status_code
        raise MetricsError(f"prometheus {url}: {error}")
    return list((body.get("data") or {}).get("result") or [])


def _figure(values: dict[str, float]) -> Figure:
    kept = {k: (None if math.isnan(v) or math.isinf(v) else v) for k, v in values.items()}
    return Figure(**{f.name: kept.get(f.name) for f in fields(Figure)})
