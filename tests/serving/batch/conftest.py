"""Batch fixtures: the predictor core on the suite's real bundle, and input files made from its test split."""

from __future__ import annotations

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
