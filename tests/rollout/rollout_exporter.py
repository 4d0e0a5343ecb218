"""A real Prometheus exporter on 127.0.0.1 emitting the local gateway's metric names, driven by the test."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

DEPLOYMENT = "sluice-classifier"
PERIOD = 0.02  # seconds between two traffic ticks of the exporter fixture
LOCAL = "sluice"  # the namespace of initial_manifest()'s environments
STAGING, PRODUCTION = "sluice-staging", "sluice-production"  # two environments' namespaces


@dataclass
class Profile:
    """What one predictor's simulated traffic looks like, per traffic tick."""

    requests: int = 0
    error_ratio: float = 0.0
    latency: float = 0.005
    feedback: int = 0
    reward_ratio: float = 1.0
    comparisons: int = 0
    disagreement_ratio: float = 0.0


@dataclass
class Exporter:
    """prometheus_client registry served over HTTP, with the gateway's names and labels."""

    url: str
    port: int
    registry: object
    hist: object
    feedback: object
    reward: object
    comparisons: object
    disagreements: object
    profiles: dict[str, Profile] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, predictor: str, p: Profile) -> None:
        errors = round(p.requests * p.error_ratio)
        labels = {"deployment_name": DEPLOYMENT, "predictor_name": predictor, "model_name": "classifier"}
        for i in range(p.requests):
            code = "500" if i < errors else "200"
            self.hist.labels(**labels, service="predictions", code=code).observe(p.latency)  # type: ignore[attr-defined]
        if p.feedback:
            # Feedback POSTs are server requests too, as the gateway and Seldon's executor count them
            feedback_requests = self.hist.labels(**labels, service="feedback", code="200")  # type: ignore[attr-defined]
            for _ in range(p.feedback):
                feedback_requests.observe(0.001)
            self.feedback.labels(**labels).inc(p.feedback)  # type: ignore[attr-defined]
            self.reward.labels(**labels).inc(p.feedback * p.reward_ratio)  # type: ignore[attr-defined]
        if p.comparisons:
            self.comparisons.labels(predictor_name=predictor).inc(p.comparisons)  # type: ignore[attr-defined]
            self.disagreements.labels(predictor_name=predictor).inc(  # type: ignore[attr-defined]
                round(p.comparisons * p.disagreement_ratio)
            )

    def set(self, predictor: str, **kw: float) -> None:
        with self.lock:
            self.profiles[predictor] = Profile(**kw)  # type: ignore[arg-type]

    def tick(self) -> None:
        with self.lock:  # a scrape sees whole ticks: never a feedback count without its reward
            for name, p in self.profiles.items():
                self.record(name, p)


class Atomic:
    """The registry as the HTTP thread renders it: collected under the exporter's lock, so that a scrape never
    falls between two counters of one traffic tick (as the router's single event loop guarantees)."""

    def __init__(self, registry: Any, lock: threading.Lock):
        self.registry = registry
        self.lock = lock

    def collect(self) -> Iterator[Any]:
        with self.lock:
            families = list(self.registry.collect())
        return iter(families)
