"""The predictor loads a version from the MLflow registry by alias or number (real sqlite store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.bundle import Bundle
from serving.core.predictor import DigestMismatch, Predictor


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_load_models_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bundle_dir: Path, rf_bundle_dir: Path
) -> None:
    import mlflow

    from model.registry import Registry

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SLUICE_CACHE", str(tmp_path / "cache"))
    registry = Registry(tmp_path)
    versions = []
    for path in (bundle_dir, rf_bundle_dir):
        with registry.fluent(), mlflow.start_run(experiment_id=registry.experiment_id()) as run:
            mlflow.log_artifacts(str(path), artifact_path="bundle")
        uri = f"runs:/{run.info.run_id}/bundle"
        versions.append(registry.register("clf", uri, run.info.run_id, Bundle.open(path).digest, uri))
    registry.promote("clf", versions[1].version)

    champion = Predictor.load("models:/clf@champion", root=tmp_path)
    assert champion.digest == Bundle.open(rf_bundle_dir).digest
    first = Predictor.load("models:/clf/1", expected_digest=versions[0].digest, root=tmp_path)
    assert first.digest == Bundle.open(bundle_dir).digest
    assert first.predict(first.validate([[14.0] * first.n_features])).probabilities.shape == (1, 2)
    with pytest.raises(DigestMismatch):
        Predictor.load("models:/clf@champion", expected_digest=versions[0].digest, root=tmp_path)
