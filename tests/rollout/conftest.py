"""Fixtures for the rollout tests: a real Prometheus exporter on 127.0.0.1 emitting the gateway's metric
names (driven by the test) and a real Prometheus scraping it."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from testkit.services import running_prometheus

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rollout_exporter import LOCAL, PERIOD, PRODUCTION, STAGING, Atomic, Exporter


@contextmanager
def running_exporter() -> Iterator[Exporter]:
    """A real exporter; a background thread adds each predictor's profile every `PERIOD` seconds until the block
    ends (5 requests per period is 250 requests/s: enough for the gates to decide within a tick or two)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

    reg = CollectorRegistry()
    labels = ["deployment_name", "predictor_name", "model_name", "service", "code"]
    hist = Histogram("seldon_api_executor_server_requests_seconds", "requests", labels, registry=reg)
    fb_labels = ["deployment_name", "predictor_name", "model_name"]
    feedback = Counter("seldon_api_model_feedback", "feedback", fb_labels, registry=reg)
    reward = Counter("seldon_api_model_feedback_reward", "reward", fb_labels, registry=reg)
    comparisons = Counter("sluice_shadow_comparisons", "compared", ["predictor_name"], registry=reg)
    disagreements = Counter("sluice_shadow_disagreements", "differed", ["predictor_name"], registry=reg)
    lock = threading.Lock()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=Atomic(reg, lock))  # type: ignore[arg-type]
    port = server.server_port
    exp = Exporter(
        f"http://127.0.0.1:{port}/metrics",
        port,
        reg,
        hist,
        feedback,
        reward,
        comparisons,
        disagreements,
        lock=lock,
    )
    stop = threading.Event()

    def drive() -> None:
        while not stop.wait(PERIOD):
            exp.tick()

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    try:
        yield exp
    finally:
        stop.set()
        driver.join(timeout=2)
        server.shutdown()
        server.server_close()
        thread.join(timeout=2)


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    with running_exporter() as exp:
        yield exp


@pytest.fixture
def prometheus(exporter: Exporter, tmp_path: Path) -> Iterator[str]:
    """A real Prometheus scraping the exporter, whose series it labels with the local environment's namespace."""
    with running_prometheus(tmp_path, {LOCAL: exporter.port}) as url:
        yield url


@pytest.fixture
def two_namespaces(tmp_path: Path) -> Iterator[tuple[str, Exporter, Exporter]]:
    """One real Prometheus scraping two exporters with identical series, one per namespace: staging's and
    production's gateways, which run the same deployment and predictor names."""
    with (
        running_exporter() as staging,
        running_exporter() as production,
        running_prometheus(tmp_path, {STAGING: staging.port, PRODUCTION: production.port}) as url,
    ):
        yield url, staging, production
