"""A real redis-server per test module on a free loopback port (no persistence), and stream helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit.services import running_redis


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


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
