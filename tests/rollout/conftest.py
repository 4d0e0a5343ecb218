"""Fixtures for the rollout tests: a real Prometheus exporter on 127.0.0.1 emitting the gateway's metric
names (driven by the test) and a real Prometheus scraping it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rollout_exporter import LOCAL, PERIOD, PRODUCTION, STAGING, Exporter, free_port


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
    server, thread = start_http_server(0, addr="127.0.0.1", registry=reg)
    port = server.server_port
    exp = Exporter(
        f"http://127.0.0.1:{port}/metrics", port, reg, hist, feedback, reward, comparisons, disagreements
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


@contextmanager
def running_prometheus(tmp_path: Path, targets: dict[str, int]) -> Iterator[str]:
    """A real Prometheus (Debian's package) scraping each target port every second. The key of each target is
    the `namespace` label Prometheus puts on its series, as a PodMonitor does for a pod's namespace."""
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        pytest.skip("prometheus is not installed (scripts/services.sh installs it)")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    jobs = "".join(
        f"      - targets: ['127.0.0.1:{target}']\n        labels: {{namespace: '{namespace}'}}\n"
        for namespace, target in targets.items()
    )
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"scrape_configs:\n  - job_name: gateway\n    static_configs:\n{jobs}"
    )
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError("prometheus did not become ready")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
