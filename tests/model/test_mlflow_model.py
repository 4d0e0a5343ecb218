"""The registered MLflow model is the bundle: its pyfunc answers what Sluice's predictor core answers."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model.bundle import Bundle
from model.registry import Registry


@pytest.fixture
def registry(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SLUICE_CACHE", str(tmp_path / "cache"))
    return Registry(tmp_path)


def _register(registry: Registry, bundle_dir: Path, rows: pd.DataFrame) -> str:
    import mlflow

    from model.package import log_model

    bundle = Bundle.open(bundle_dir)
    with registry.fluent(), mlflow.start_run(experiment_id=registry.experiment_id()) as run:
        model_uri = log_model(bundle, rows)
    ref = registry.register("m", model_uri, run.info.run_id, bundle.digest, f"runs:/{run.info.run_id}/bundle")
    return f"models:/m/{ref.version}"


def _rows(bundle_dir: Path, target: str) -> pd.DataFrame:
    frame = pd.read_csv(bundle_dir.parent / "data" / "prepared" / "test.csv")
    return frame.drop(columns=[target, *(c for c in ("penguin_id",) if c in frame.columns)])


@pytest.mark.parametrize(
    ("which", "target"),
    [("bundle_dir", "target"), ("mixed_bundle_dir", "species"), ("regression_bundle_dir", "target")],
)
def test_the_pyfunc_answers_what_the_bundle_serves(registry, request, which, target):
    import mlflow
    import onnxruntime as ort

    from model.bundle import onnx_feeds
    from model.contract import typed_frame

    bundle_dir = request.getfixturevalue(which)
    bundle = Bundle.open(bundle_dir)
    rows = _rows(bundle_dir, target)
    uri = _register(registry, bundle_dir, rows)

    # `models:/m/1` is one model to both: Sluice resolves it to this bundle, MLflow loads its pyfunc.
    assert Bundle.open(registry.resolve(uri)).digest == bundle.digest
    with registry.fluent():  # as a user's MLFLOW_TRACKING_URI would
        answers = mlflow.pyfunc.load_model(uri).predict(rows)

    signature = bundle.signature
    session = ort.InferenceSession(str(bundle.onnx_path), providers=["CPUExecutionProvider"])
    typed = typed_frame(rows, signature.features, "test")
    expected = session.run(signature.onnx_outputs, onnx_feeds(signature, typed))
    if signature.is_classifier:
        assert list(answers.columns) == [str(c) for c in signature.classes]
        np.testing.assert_allclose(answers.to_numpy(), expected[1], rtol=0, atol=1e-6)
        assert np.abs(answers.to_numpy().sum(axis=1) - 1).max() < 1e-5  # probabilities, not labels
    else:
        assert list(answers.columns) == ["prediction"]
        np.testing.assert_allclose(answers["prediction"], np.asarray(expected[0]).reshape(-1), rtol=1e-6)


def test_the_pyfunc_refuses_what_sluice_refuses(registry, mixed_bundle_dir):
    import mlflow
    from mlflow.exceptions import MlflowException

    rows = _rows(mixed_bundle_dir, "species").head(3).copy()
    with registry.fluent():
        model = mlflow.pyfunc.load_model(_register(registry, mixed_bundle_dir, rows))
    rows.loc[rows.index[1], "island"] = "Atlantis"
    with pytest.raises(
        MlflowException, match=r"column 'island', row 1: 'Atlantis' is not one of its categories"
    ):
        model.predict(rows)


def test_register_takes_the_bundle_an_experiment_left_unregistered(tmp_path, monkeypatch):
    """`sluice model register`: the bundle in artifacts/model, logged by its run, becomes a version once."""
    import shutil

    import mlflow

    from model.data import contract_for, read_split
    from model.layout import Layout
    from model.package import build_bundle, log_model, register_bundle
    from model.params import Params
    from model.pipeline import train_bundle
    from model.registry import CHALLENGER, RegistryError

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SLUICE_CACHE", str(tmp_path / "cache"))
    shutil.copy(Path(__file__).resolve().parents[2] / "params.yaml", tmp_path / "params.yaml")
    params = Params()
    train_bundle(tmp_path, tmp_path / "scratch-bundle", params)
    layout = Layout.at(tmp_path)
    registry = Registry(tmp_path)
    # what `package` does under dvc exp run
    with registry.fluent(), mlflow.start_run(experiment_id=registry.experiment_id()) as run:
        bundle = build_bundle(layout, params, layout.bundle, {"mlflow_run_id": run.info.run_id})
        log_model(bundle, read_split(layout.test_csv, contract_for(layout, params.data))[0])
    assert registry.client.search_model_versions("name = 'sluice-classifier'") == []

    ref = register_bundle(tmp_path)
    assert (ref.version, ref.digest) == ("1", bundle.digest)
    assert registry.alias("sluice-classifier", CHALLENGER).version == "1"
    with pytest.raises(RegistryError, match="version 1 already is this bundle"):
        register_bundle(tmp_path)
