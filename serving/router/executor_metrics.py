"""The router's Prometheus metrics: Seldon executor names and labels, plus shadow and retry counters.

This is the contract the gates read: on one machine by scraping the router's admin port (`GET /metrics`),
in a cluster through Prometheus scraping the router's pods (and Seldon's executors) with the same queries.
Every series carries `namespace` and `deployment_name`, so staging and production never mix; names and
label names come from `deployment.metric_names`.

Seldon Core v1 executor (same names, same label names; `model_name` is added on the server histogram so one
gate can select by model in both places):

    seldon_api_executor_server_requests_seconds_{bucket,count,sum}
        labels: namespace, deployment_name, predictor_name, predictor_version, service, method, code,
                model_name
        one observation per request a predictor handled, labelled with that predictor: a request that
        failed on one predictor and was retried on another counts once for each (the failure under the
        failed one, so a retry never hides a failing candidate from an error-rate gate); the shadow's
        mirrored requests are observed under the shadow's name.
        service = "predictions" (Seldon v1 and Open Inference Protocol v2 alike) or "feedback", as Seldon's
        executor labels them: serving figures select service="predictions" and never count feedback.
        code = the HTTP status as a string ("200", "503"; "502" when the predictor could not be reached,
        "504" when it timed out).
    seldon_api_executor_client_requests_seconds_{bucket,count,sum}
        labels: namespace, deployment_name, predictor_name, predictor_version, service, model_name,
                model_image, model_version, method, code
        one observation per call from the router to a predictor (a retried request counts twice).
    seldon_api_model_feedback_total             labels: namespace, deployment_name, predictor_name,
    seldon_api_model_feedback_reward_total              predictor_version, model_name, model_image,
                                                        model_version
        per feedback accepted by the predictor that served the original request; the reward sum.

Sluice additions (namespace, deployment_name, predictor_name):

    sluice_shadow_comparisons_total       live/shadow answer pairs compared
    sluice_shadow_disagreements_total     ... whose predicted classes differ
    sluice_shadow_dropped_total           mirror copies dropped (the queue's byte budget was full)
    sluice_gateway_retries_total{..., retried_on}   failed on one predictor, retried on another

Disagreement rate of a shadow = disagreements_total / comparisons_total over a window (both by predictor_name).
Latency buckets extend Seldon's defaults down to 0.5 ms, since a local predictor answers in about 1 ms.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from deployment import metric_names as n
from deployment.kinds import Predictor

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BOUNDS = [*map(str, BUCKETS), "+Inf"]
SERVER_LABELS = [
    n.NAMESPACE,
    n.DEPLOYMENT,
    n.PREDICTOR,
    n.PREDICTOR_VERSION,
    n.SERVICE,
    n.METHOD,
    n.CODE,
    n.MODEL,
]
CLIENT_LABELS = [
    n.NAMESPACE,
    n.DEPLOYMENT,
    n.PREDICTOR,
    n.PREDICTOR_VERSION,
    n.SERVICE,
    n.MODEL,
    n.MODEL_IMAGE,
    n.MODEL_VERSION,
    n.METHOD,
    n.CODE,
]
FEEDBACK_LABELS = [
    n.NAMESPACE,
    n.DEPLOYMENT,
    n.PREDICTOR,
    n.PREDICTOR_VERSION,
    n.MODEL,
    n.MODEL_IMAGE,
    n.MODEL_VERSION,
]
PREDICTOR_LABELS = [n.NAMESPACE, n.DEPLOYMENT, n.PREDICTOR]
CONTENT_TYPE = CONTENT_TYPE_LATEST
DEFAULT_NAMESPACE = "default"  # what Kubernetes calls a manifest without metadata.namespace


@dataclass(frozen=True)
class PredictorLabels:
    """What the metric labels say about one predictor (from the manifest)."""

    namespace: str
    deployment_name: str
    predictor_name: str
    predictor_version: str = ""
    model_name: str = ""
    model_image: str = ""
    model_version: str = ""

    @classmethod
    def of(cls, namespace: str | None, deployment_name: str, p: Predictor) -> PredictorLabels:
        return cls(
            namespace or DEFAULT_NAMESPACE,
            deployment_name,
            p.name,
            p.version,
            p.model_name,
            p.image_name,
            p.image_tag,
        )


@dataclass
class _Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))  # last one: +Inf
    count: int = 0
    total: float = 0.0


class RouterMetrics:
    """The router's series, kept as plain numbers on the hot path and turned into metric families when
    scraped (prometheus_client's locked children cost several µs per observation; the router makes two
    per request)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._server: dict[tuple[str, ...], _Histogram] = {}
        self._client: dict[tuple[str, ...], _Histogram] = {}
        self._feedback: dict[tuple[str, ...], list[float]] = {}  # labels -> [count, reward sum]
        self._comparisons: dict[tuple[str, ...], list[int]] = {}  # labels -> [compared, disagreed]
        self._dropped: dict[tuple[str, ...], int] = {}
        self._retries: dict[tuple[str, ...], int] = {}
        self.registry.register(self)  # a collector: anything with collect()

    # hot path ------------------------------------------------------------------------------------------
    def observe_server(
        self, p: PredictorLabels, service: str, method: str, code: int, seconds: float
    ) -> None:
        key = (
            p.namespace,
            p.deployment_name,
            p.predictor_name,
            p.predictor_version,
            service,
            method,
            str(code),
            p.model_name,
        )
        _observe(self._server, key, seconds)

    def observe_client(
        self, p: PredictorLabels, service: str, method: str, code: int, seconds: float
    ) -> None:
        key = (
            p.namespace,
            p.deployment_name,
            p.predictor_name,
            p.predictor_version,
            service,
            p.model_name,
            p.model_image,
            p.model_version,
            method,
            str(code),
        )
        _observe(self._client, key, seconds)

    def count_feedback(self, p: PredictorLabels, reward: float) -> None:
        key = (
            p.namespace,
            p.deployment_name,
            p.predictor_name,
            p.predictor_version,
            p.model_name,
            p.model_image,
            p.model_version,
        )
        series = self._feedback.setdefault(key, [0.0, 0.0])
        series[0] += 1
        series[1] += reward

    def count_comparison(self, p: PredictorLabels, disagree: bool) -> None:
        series = self._comparisons.setdefault((p.namespace, p.deployment_name, p.predictor_name), [0, 0])
        series[0] += 1
        series[1] += disagree

    def count_dropped(self, p: PredictorLabels) -> None:
        key = (p.namespace, p.deployment_name, p.predictor_name)
        self._dropped[key] = self._dropped.get(key, 0) + 1

    def count_retry(self, failed: PredictorLabels, retried_on: str) -> None:
        key = (failed.namespace, failed.deployment_name, failed.predictor_name, retried_on)
        self._retries[key] = self._retries.get(key, 0) + 1

    # what another process observed (the mirror worker) -----------------------------------------------------
    def take(self) -> dict[str, list[list[Any]]]:
        """Every series observed since the last `take`, as plain JSON-able lists, and start again from zero.

        The mirror worker reports this way: one document per report holds the sum of every copy it sent
        (per label set: histogram buckets, count and sum; counters), however many copies that was, so the
        router's cost of a report does not grow with the traffic mirrored."""
        out = {
            "server": [[list(k), h.buckets, h.count, h.total] for k, h in self._server.items()],
            "client": [[list(k), h.buckets, h.count, h.total] for k, h in self._client.items()],
            "feedback": [[list(k), *v] for k, v in self._feedback.items()],
            "comparisons": [[list(k), *v] for k, v in self._comparisons.items()],
            "dropped": [[list(k), v] for k, v in self._dropped.items()],
            "retries": [[list(k), v] for k, v in self._retries.items()],
        }
        self._server, self._client, self._feedback = {}, {}, {}
        self._comparisons, self._dropped, self._retries = {}, {}, {}
        return {name: rows for name, rows in out.items() if rows}

    def merge(self, delta: dict[str, list[list[Any]]]) -> None:
        """Add what `take` returned (in another process) to these series."""
        for name, series in (("server", self._server), ("client", self._client)):
            for key, buckets, count, total in delta.get(name, ()):
                h = series.get(k := tuple(key))
                if h is None:
                    h = series[k] = _Histogram()
                if len(buckets) != len(h.buckets):
                    raise ValueError(
                        f"{name} histogram {k}: {len(buckets)} buckets, expected {len(h.buckets)}"
                    )
                h.buckets = [a + b for a, b in zip(h.buckets, buckets, strict=True)]
                h.count += count
                h.total += total
        for key, count, reward in delta.get("feedback", ()):
            f = self._feedback.setdefault(tuple(key), [0.0, 0.0])
            f[0] += count
            f[1] += reward
        for key, compared, disagreed in delta.get("comparisons", ()):
            c = self._comparisons.setdefault(tuple(key), [0, 0])
            c[0] += compared
            c[1] += disagreed
        for name, counters in (("dropped", self._dropped), ("retries", self._retries)):
            for key, count in delta.get(name, ()):
                counters[k] = counters.get(k := tuple(key), 0) + count

    # scrape --------------------------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        server = HistogramMetricFamily(
            n.SERVER_REQUESTS, "A histogram of latencies for executor server", labels=SERVER_LABELS
        )
        for key, h in sorted(self._server.items()):
            server.add_metric(list(key), _cumulative(h), h.total)
        client = HistogramMetricFamily(
            n.CLIENT_REQUESTS, "A histogram of latencies for client calls from executor", labels=CLIENT_LABELS
        )
        for key, h in sorted(self._client.items()):
            client.add_metric(list(key), _cumulative(h), h.total)
        feedback = CounterMetricFamily(n.FEEDBACK, "Feedback received", labels=FEEDBACK_LABELS)
        reward = CounterMetricFamily(n.FEEDBACK_REWARD, "Sum of feedback rewards", labels=FEEDBACK_LABELS)
        for key, (count, total) in sorted(self._feedback.items()):
            feedback.add_metric(list(key), count)
            reward.add_metric(list(key), total)
        comparisons = CounterMetricFamily(
            n.SHADOW_COMPARISONS,
            "Mirrored requests whose shadow answer was compared with the live answer",
            labels=PREDICTOR_LABELS,
        )
        disagreements = CounterMetricFamily(
            n.SHADOW_DISAGREEMENTS,
            "Mirrored requests whose shadow answer predicted another class than the live answer",
            labels=PREDICTOR_LABELS,
        )
        for key, (compared, disagreed) in sorted(self._comparisons.items()):
            comparisons.add_metric(list(key), compared)
            disagreements.add_metric(list(key), disagreed)
        dropped = CounterMetricFamily(
            n.SHADOW_DROPPED,
            "Mirror copies dropped because the shadow queue's byte budget was full",
            labels=PREDICTOR_LABELS,
        )
        for key, count in sorted(self._dropped.items()):
            dropped.add_metric(list(key), count)
        retries = CounterMetricFamily(
            n.RETRIES,
            "Requests that failed on one predictor and were retried on another",
            labels=[*PREDICTOR_LABELS, "retried_on"],
        )
        for key, count in sorted(self._retries.items()):
            retries.add_metric(list(key), count)
        yield from (server, client, feedback, reward, comparisons, disagreements, dropped, retries)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def dropped_in(delta: dict[str, list[list[Any]]]) -> int:
    """How many dropped copies a `RouterMetrics.take` document counts."""
    return sum(int(count) for _, count in delta.get("dropped", ()))


def _observe(series: dict[tuple[str, ...], _Histogram], key: tuple[str, ...], seconds: float) -> None:
    h = series.get(key)
    if h is None:
        h = series[key] = _Histogram()
    h.buckets[bisect_left(BUCKETS, seconds)] += 1
    h.count += 1
    h.total += seconds


def _cumulative(h: _Histogram) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip(BOUNDS, h.buckets, strict=True):
        running += count
        out.append((bound, running))
    return out
