"""A real redis-server per test module on a free loopback port (no persistence), and stream helpers."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(workdir: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start redis-server on a free port (with `extra` arguments); returns the process and its URL (without
    credentials). The caller stops it."""
    import redis

    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    for _ in range(5):
        port = free_port()
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
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


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def redis_client(redis_url: str):  # type: ignore[no-untyped-def]
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def predictor(bundle_dir: Path):  # type: ignore[no-untyped-def]
    from serving.core.predictor import Predictor

    return Predictor.load(bundle_dir)


@pytest.fixture(scope="session")
def records(bundle_dir: Path) -> list[dict[str, float]]:
    import pandas as pd

    frame = pd.read_csv(bundle_dir.parent / "data" / "prepared" / "test.csv").drop(columns=["target"])
    return frame.to_dict(orient="records")  # type: ignore[return-value]
