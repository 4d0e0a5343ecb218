"""Prometheus metrics of one predictor process, in a registry of its own (several apps may share a process).

Requests: `sluice_model_requests_total` and `sluice_model_request_seconds` by endpoint and status code.
Feedback: Seldon's names, `seldon_api_model_feedback_total` and `seldon_api_model_feedback_reward_total`.
Labels `deployment_name` and `predictor_name` come from Seldon's environment variables (`SELDON_DEPLOYMENT_ID`,
`PREDICTOR_ID`) as under the real wrapper, so a gate reads the same series from either runtime.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Sub-millisecond buckets: a predictor answers in ~0.1-1 ms; a gate compares p50/p99 across versions.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass
class ServingMetrics:
    model_name: str
    model_digest: str
    deployment_name: str = field(default_factory=lambda: os.environ.get("SELDON_DEPLOYMENT_ID", ""))
    predictor_name: str = field(default_factory=lambda: os.environ.get("PREDICTOR_ID", ""))
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))

    def __post_init__(self) -> None:
        labels = ["deployment_name", "predictor_name", "model_name", "model_digest"]
        self._base = (self.deployment_name, self.predictor_name, self.model_name, self.model_digest)
        self.requests = Counter(
            "sluice_model_requests",
            "Requests answered by this predictor, by endpoint and status code.",
            [*labels, "endpoint", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sluice_model_request_seconds",
            "Time to answer a request inside the predictor (body read to response written).",
            [*labels, "endpoint", "code"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.rows = Counter("sluice_model_rows", "Rows predicted.", labels, registry=self.registry).labels(
            *self._base
        )
        feedback_labels = ["deployment_name", "predictor_name", "model_name"]
        base = self._base[:3]
        self.feedback = Counter(
            "seldon_api_model_feedback",
            "Feedback messages received.",
            feedback_labels,
            registry=self.registry,
        ).labels(*base)
        self.feedback_reward = Counter(
            "seldon_api_model_feedback_reward",
            "Sum of the rewards of feedback messages.",
            feedback_labels,
            registry=self.registry,
        ).labels(*base)
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe(self, endpoint: str, code: int, seconds: float) -> None:
        key = (endpoint, code)
        children = self._children.get(key)
        if children is None:
            labels = (*self._base, endpoint, str(code))
            children = (self.requests.labels(*labels), self.latency.labels(*labels))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def record_feedback(self, reward: float) -> None:
        self.feedback.inc()
        self.feedback_reward.inc(reward)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
