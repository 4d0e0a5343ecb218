"""Fixtures shared by the whole suite: real bundles built once per test worker, and a quiet environment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit.services import running_redis

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
def mixed_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real multiclass bundle on mixed types: numeric, categorical and boolean features with missing values
    (the penguin-like table of sample_tables.py, profiled into its contract), one ONNX input per feature."""
    from sample_tables import penguins

    from model.contract import dump_contract
    from model.params import Params
    from model.pipeline import train_bundle
    from model.profile import profile

    work = tmp_path_factory.mktemp("mixed")
    (work / "data" / "source").mkdir(parents=True)
    frame = penguins()
    frame.to_csv(work / "data" / "source" / "penguins.csv", index=False)
    dump_contract(profile(frame, "species", drop=["penguin_id"]), work / "contract.yaml")
    params = Params.model_validate(
        {"data": {"source": "data/source/penguins.csv"}, "evaluate": {"gate_metric": "macro_f1"}}
    )
    return train_bundle(work, work / "bundle", params).path


@pytest.fixture(scope="session")
def regression_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real regression bundle: ridge on scikit-learn's diabetes set."""
    return _bundle(
        tmp_path_factory,
        "regression",
        data={"source": "builtin:diabetes"},
        train={"model": "ridge"},
        evaluate={"gate_metric": "rmse"},
    )


@pytest.fixture(scope="session")
def bad_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real but bad bundle: trained on labels of which half were flipped (near-random predictions)."""
    return _bundle(tmp_path_factory, "bad", data={"label_noise": 0.5})


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A real redis-server of this test's own (tests/serving/stream shares one per module)."""
    with running_redis(tmp_path) as url:
        yield url
