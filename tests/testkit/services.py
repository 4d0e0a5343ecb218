"""Free loopback ports and the real services the tests start.

A service the suite needs is found by `need()`. `make test` installs them all (scripts/services.sh) and
sets SLUICE_REQUIRE_SERVICES=1, so there a missing one fails its tests, naming what to run: a CI job that
forgot an install step cannot pass by skipping. Run by hand (`pytest tests/...`), a missing service skips
its tests with the same message.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

INSTALLED_BY = "scripts/services.sh installs it (make test runs it)"


def free_port() -> int:
    """A port free on 127.0.0.1 now (bind port 0 where the server can report its own port instead)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports (all held open while choosing, so none is picked twice)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def missing(name: str) -> str | None:
    """The path of a program on PATH (or Debian's /usr/bin), or None."""
    found = shutil.which(name)
    if found:
        return found
    debian = Path("/usr/bin") / name
    return str(debian) if debian.exists() else None


def need(name: str, why: str = "") -> str:
    """The path of program `name`; its absence fails the test under `make test`, skips it elsewhere."""
    found = missing(name)
    if found is not None:
        return found
    message = f"{name} is not installed{f' ({why})' if why else ''}: {INSTALLED_BY}"
    if os.environ.get("SLUICE_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


def wait_until(ready: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    """Poll `ready()` until it is true; RuntimeError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(step)
    raise RuntimeError(f"{what} did not happen within {timeout} s")


def stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_redis(workdir: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """A real redis-server on a free loopback port, no persistence (with `extra` arguments); returns the
    process and its URL (without credentials). The caller stops it."""
    import redis

    binary = need("redis-server")
    for _ in range(5):
        port = free_port()
        proc = subprocess.Popen(
            [
                binary,
                *("--port", str(port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "no"),
                *("--dir", str(workdir)),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                client.ping()
                client.close()
                return proc, f"redis://127.0.0.1:{port}/0"
            except redis.AuthenticationError:  # up, and asking for the password it was given
                client.close()
                return proc, f"redis://127.0.0.1:{port}/0"
            except redis.ConnectionError:
                time.sleep(0.02)
        proc.kill()
        proc.wait()
    raise RuntimeError("redis-server did not start")


@contextmanager
def running_redis(workdir: Path, *extra: str) -> Iterator[str]:
    """`start_redis` for the length of a `with`: its URL, and the server stopped afterwards."""
    proc, url = start_redis(workdir, *extra)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def running_prometheus(tmp_path: Path, targets: dict[str, int], job: str = "gateway") -> Iterator[str]:
    """A real Prometheus (Debian's package) scraping each target port every second. The key of each target is
    the `namespace` label Prometheus puts on its series, as a PodMonitor does for a pod's namespace."""
    binary = need("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    jobs = "".join(
        f"      - targets: ['127.0.0.1:{target}']\n        labels: {{namespace: '{namespace}'}}\n"
        for namespace, target in targets.items()
    )
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"scrape_configs:\n  - job_name: {job}\n    static_configs:\n{jobs}"
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

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, 20, "prometheus becoming ready", step=0.2)
        yield url
    finally:
        stop(proc)
