"""`sluice serve` and `python -m serving.http.server` as real processes: they serve, and refuse a bad bundle."""

from __future__ import annotations

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
SLUICE = Path(sys.executable).parent / "sluice"


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}: {process.stderr.read()!r}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"{url}/health/ping", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"{url} not ready after {timeout} s")


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for p in processes:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("how", ["sluice", "module"])
def test_serves_as_a_process(how: str, bundle_dir: Path, spawn: list[subprocess.Popen[bytes]]) -> None:
    port = free_port()
    digest = Bundle.open(bundle_dir).digest
    args = [
        "--model",
        bundle_dir.resolve().as_uri(),
        "--port",
        str(port),
        "--name",
        "m-test",
        "--digest",
        digest,
    ]
    command = (
        [str(SLUICE), "serve", *args]
        if how == "sluice"
        else [sys.executable, "-m", "serving.http.server", *args]
    )
    spawn.append(subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url, spawn[0])
    r = httpx.post(f"{url}/api/v1.0/predictions", json={"data": {"ndarray": [[14.0] * 30]}})
    assert r.status_code == 200, r.text
    assert r.json()["meta"]["requestPath"]["m-test"] == digest
    assert httpx.get(f"{url}/v2/models/m-test/ready").json()["ready"] is True
    spawn[0].terminate()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it: the exit status says "terminated".
    assert spawn[0].wait(10) in (0, -15)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_refuses_a_digest_mismatch(bundle_dir: Path, rf_bundle_dir: Path) -> None:
    other = Bundle.open(rf_bundle_dir).digest
    command = [
        sys.executable,
        "-m",
        "serving.http.server",
        "--model",
        str(bundle_dir),
        "--port",
        str(free_port()),
    ]
    done = subprocess.run([*command, "--digest", other], cwd=REPO, capture_output=True, text=True, timeout=50)
    assert done.returncode == 2
    assert "does not match the pinned model_digest" in done.stderr and other in done.stderr


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_sluice_serve_names_a_missing_bundle(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    done = subprocess.run(
        [str(SLUICE), "serve", "--model", str(missing), "--port", str(free_port())],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == 1
    assert "not a bundle directory" in done.stderr and str(missing) in done.stderr
