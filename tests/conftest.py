"""Fixtures shared by the whole suite: real bundles built once per test worker, and a quiet environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("DO_NOT_TRACK", "true")

REPO = Path(__file__).resolve().parents[1]


def _bundle(tmp_path_factory: pytest.TempPathFactory, name: str, **overrides: object) -> Path:
    from model.params import Params
    from model.pipeline import train_bundle

    params = Params.model_validate(overrides) if overrides else Params()
    work = tmp_path_factory.mktemp(name)
    return train_bundle(work, work / "bundle", params).path


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bundle: logistic regression on the breast-cancer data (the default params)."""
    return _bundle(tmp_path_factory, "lr")


@pytest.fixture(scope="session")
def rf_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bundle: random forest, different digest and slightly different predictions."""
    return _bundle(
        tmp_path_factory, "rf", train={"model": "random_forest", "random_forest": {"n_estimators": 30}}
    )


@pytest.fixture(scope="session")
def bad_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real but bad bundle: trained on labels of which half were flipped (near-random predictions)."""
    return _bundle(tmp_path_factory, "bad", data={"label_noise": 0.5})
