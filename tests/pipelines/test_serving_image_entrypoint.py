"""The serving images' commands, run here without Docker: each serving stage's CMD and its default
PREDICTIVE_UNIT_PARAMETERS (the baked-in bundle, pinned to BUNDLE_DIGEST) start the project's server (default
target) or Seldon's real wrapper (serving-seldon), which serve predictions and metrics, and refuse to start on a
bundle whose digest differs from the pinned one."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from testkit.services import free_port

from model.bundle import Bundle

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "serving" / "Dockerfile"
BAKED = "file:///opt/sluice/bundle"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def image_command(target: str) -> tuple[list[str], str]:
    """A serving stage's CMD and its PREDICTIVE_UNIT_PARAMETERS default, as Docker would see them."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stage = re.split(r"^FROM \S+ AS ", text, flags=re.M)
    serving = next(s for s in stage if s.startswith(f"{target}\n"))
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", serving, re.M).group(1))  # type: ignore[union-attr]
    raw = re.search(r'PREDICTIVE_UNIT_PARAMETERS="(.*?)"(?:\s|$)', serving).group(1)  # type: ignore[union-attr]
    return cmd, raw.replace('\\"', '"')


def start(target: str, parameters: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    cmd, _ = image_command(target)
    http, grpc, metrics = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "PREDICTIVE_UNIT_PARAMETERS": parameters,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    if target == "serving-seldon":  # Seldon's wrapper takes its ports as arguments
        args = [*cmd, "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
        args += ["--workers", "1"]
    else:  # the project's server reads them where the operator puts them
        args = [sys.executable if cmd[0] == "python" else cmd[0], *cmd[1:]]
        env |= {
            "PREDICTIVE_UNIT_HTTP_SERVICE_PORT": str(http),
            "PREDICTIVE_UNIT_METRICS_SERVICE_PORT": str(metrics),
        }
    log = (tmp_path / "server.log").open("wb")
    # its own session: the gunicorn master and workers are stopped together, by this group's id
    process = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    return process, http, metrics


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGQUIT)  # gunicorn: quick shutdown
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


def parameters_for(target: str, bundle_dir: Path, digest: str) -> str:
    _, default = image_command(target)
    # Docker substitutes the build arg; the baked bundle's path is where COPY puts it, here the fixture's.
    return default.replace("${BUNDLE_DIGEST}", digest).replace(BAKED, bundle_dir.as_uri())


TARGETS = ["serving", "serving-seldon"]


@pytest.mark.parametrize("target", TARGETS)
def test_the_image_command_serves_the_pinned_bundle(
    bundle_dir: Path, tmp_path: Path, processes: list[subprocess.Popen[bytes]], target: str
) -> None:
    bundle = Bundle.open(bundle_dir)
    process, port, metrics = start(target, parameters_for(target, bundle_dir, bundle.digest), tmp_path)
    processes.append(process)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
        try:
            if httpx.get(f"{base}/health/ping", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        pytest.fail("the server did not answer /health/ping within 60 s")
    names = bundle.signature.feature_names
    body = {"data": {"names": names, "ndarray": [[0.1] * len(names)]}}
    answer = httpx.post(f"{base}/api/v1.0/predictions", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    probabilities = answer.json()["data"]["ndarray"][0]
    assert len(probabilities) == len(bundle.signature.classes) and abs(sum(probabilities) - 1) < 1e-5
    # Seldon's wrapper serves /metrics unless the operator tells it /prometheus; the project's server serves both.
    path = "/prometheus" if target == "serving" else "/metrics"
    scraped = httpx.get(f"http://127.0.0.1:{metrics}{path}", timeout=10)
    assert scraped.status_code == 200 and "# TYPE" in scraped.text


@pytest.mark.parametrize("target", TARGETS)
def test_the_image_command_refuses_a_bundle_with_another_digest(
    bundle_dir: Path, tmp_path: Path, processes: list[subprocess.Popen[bytes]], target: str
) -> None:
    process, _, _ = start(target, parameters_for(target, bundle_dir, "sha256:" + "a" * 64), tmp_path)
    processes.append(process)
    assert process.wait(timeout=60) != 0
    assert "does not match the pinned model_digest" in (tmp_path / "server.log").read_text()


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ("not json", "PREDICTIVE_UNIT_PARAMETERS: not JSON"),
        ('{"model_uri": "x"}', "expected a list of {name, type, value} objects"),
        ('[{"name": "model_digest", "value": "sha256:00"}]', "parameter 'model_uri' is missing"),
        ('[{"name": "model_uri", "value": 7}]', "parameter 'model_uri' is missing or not a string"),
    ],
)
def test_a_broken_operator_environment_is_named_not_a_traceback(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]], parameters: str, message: str
) -> None:
    process, _, _ = start("serving", parameters, tmp_path)
    processes.append(process)
    assert process.wait(timeout=60) == 2
    log = (tmp_path / "server.log").read_text()
    assert message in log and "Traceback" not in log
