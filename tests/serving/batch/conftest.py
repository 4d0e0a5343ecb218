"""Batch fixtures: the predictor core on the suite's real bundle, and input files made from its test split."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest


@pytest.fixture(scope="session")
def predictor(bundle_dir: Path):  # type: ignore[no-untyped-def]
    from serving.core.predictor import Predictor

    return Predictor.load(bundle_dir)


@pytest.fixture(scope="session")
def test_frame(bundle_dir: Path) -> pd.DataFrame:
    """The bundle's held-out split without its target, with an id column users would carry along."""
    frame = pd.read_csv(bundle_dir.parent / "data" / "prepared" / "test.csv").drop(columns=["target"])
    frame.insert(0, "id", [f"r{i}" for i in range(len(frame))])
    return frame


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[str]:
    """One LocalCluster per test module of the engines (starting one costs seconds); the engine's own embedded
    cluster is started by `test_dask_embedded_cluster_from_the_cli`."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        silence_logs=40,
    )
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()
