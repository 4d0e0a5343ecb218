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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from deployment import metric_names as n
from deployment.seldon import Predictor

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SERVER_LABELS = (
    n.NAMESPACE,
    n.DEPLOYMENT,
    n.PREDICTOR,
    n.PREDICTOR_VERSION,
    n.SERVICE,
    n.METHOD,
    n.CODE,
    n.MODEL,
)
CLIENT_LABELS = (
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
)
FEEDBACK_LABELS = (
    n.NAMESPACE,
    n.DEPLOYMENT,
    n.PREDICTOR,
    n.PREDICTOR_VERSION,
    n.MODEL,
    n.MODEL_IMAGE,
    n.MODEL_VERSION,
)
PREDICTOR_LABELS = (n.NAMESPACE, n.DEPLOYMENT, n.PREDICTOR)
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
            p.graph_name,
            p.image_name,
            p.image_tag,
        )


class RouterMetrics:
    """Metric families in a private registry, with the labelled children cached for the hot path."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.server = Histogram(
            n.SERVER_REQUESTS,
            "A histogram of latencies for executor server",
            SERVER_LABELS,
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.client = Histogram(
            n.CLIENT_REQUESTS,
            "A histogram of latencies for client calls from executor",
            CLIENT_LABELS,
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.feedback = Counter(n.FEEDBACK, "Feedback received", FEEDBACK_LABELS, registry=self.registry)
        self.feedback_reward = Counter(
            n.FEEDBACK_REWARD, "Sum of feedback rewards", FEEDBACK_LABELS, registry=self.registry
        )
        self.comparisons = Counter(
            n.SHADOW_COMPARISONS,
            "Mirrored requests whose shadow answer was compared with the live answer",
            PREDICTOR_LABELS,
            registry=self.registry,
        )
        self.disagreements = Counter(
            n.SHADOW_DISAGREEMENTS,
            "Mirrored requests whose shadow answer predicted another class than the live answer",
            PREDICTOR_LABELS,
            registry=self.registry,
        )
        self.dropped = Counter(
            n.SHADOW_DROPPED,
            "Mirror copies dropped because the shadow queue's byte budget was full",
            PREDICTOR_LABELS,
            registry=self.registry,
        )
        self.retries = Counter(
            n.RETRIES,
            "Requests that failed on one predictor and were retried on another",
            (*PREDICTOR_LABELS, "retried_on"),
            registry=self.registry,
        )
        self._cache: dict[tuple[Any, ...], Callable[..., None]] = {}

    def observe_server(
        self, p: PredictorLabels, service: str, method: str, code: int, seconds: float
    ) -> None:
        key = ("s", p, service, method, code)
        observe = self._cache.get(key)
        if observe is None:
            child = self.server.labels(
                p.namespace,
                p.deployment_name,
                p.predictor_name,
                p.predictor_version,
                service,
                method,
                str(code),
                p.model_name,
            )
            observe = self._cache[key] = child.observe
        observe(seconds)

    def observe_client(
        self, p: PredictorLabels, service: str, method: str, code: int, seconds: float
    ) -> None:
        key = ("c", p, service, method, code)
        observe = self._cache.get(key)
        if observe is None:
            child = self.client.labels(
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
            observe = self._cache[key] = child.observe
        observe(seconds)

    def count_feedback(self, p: PredictorLabels, reward: float) -> None:
        values = (
            p.namespace,
            p.deployment_name,
            p.predictor_name,
            p.predictor_version,
            p.model_name,
            p.model_image,
            p.model_version,
        )
        self.feedback.labels(*values).inc()
        if reward:
            self.feedback_reward.labels(*values).inc(reward)
        else:
            self.feedback_reward.labels(*values)  # the series exists from the first feedback on

    def count_comparison(self, p: PredictorLabels, disagree: bool) -> None:
        self.comparisons.labels(p.namespace, p.deployment_name, p.predictor_name).inc()
        child = self.disagreements.labels(p.namespace, p.deployment_name, p.predictor_name)
        if disagree:
            child.inc()

    def count_dropped(self, p: PredictorLabels) -> None:
        self.dropped.labels(p.namespace, p.deployment_name, p.predictor_name).inc()

    def count_retry(self, failed: PredictorLabels, retried_on: str) -> None:
        self.retries.labels(failed.namespace, failed.deployment_name, failed.predictor_name, retried_on).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
