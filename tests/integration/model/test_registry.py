"""The MLflow registry on a real sqlite store: register, alias, promote, resolve models:/ URIs."""

import pytest

from model.bundle import Bundle
from model.registry import CHAMPION, PREVIOUS, Registry, RegistryError, resolve_bundle_path


@pytest.fixture
def registry(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SLUICE_CACHE", str(tmp_path / "cache"))
    return Registry(tmp_path)


def _log(registry, bundle_dir):
    import mlflow

    bundle = Bundle.open(bundle_dir)
    with mlflow.start_run(experiment_id=registry.experiment_id()) as run:
        mlflow.log_artifacts(str(bundle_dir), artifact_path="bundle")
    return registry.register(
        "clf",
        f"runs:/{run.info.run_id}/bundle",
        run.info.run_id,
        bundle.digest,
        f"runs:/{run.info.run_id}/bundle",
    )


def test_register_promote_and_resolve(registry, bundle_dir, rf_bundle_dir, tmp_path):
    v1 = _log(registry, bundle_dir)
    v2 = _log(registry, rf_bundle_dir)
    assert (v1.version, v2.version) == ("1", "2")
    assert (tmp_path / "mlflow.db").exists()

    assert registry.promote("clf", v1.version) is None
    before = registry.promote("clf", v2.version)
    assert before is not None and before.version == "1"
    assert registry.alias("clf", CHAMPION).version == "2"
    assert registry.alias("clf", PREVIOUS).version == "1"
    assert registry.by_digest("clf", v1.digest).version == "1"

    champion = Bundle.open(registry.resolve("models:/clf@champion"))
    assert champion.digest == Bundle.open(rf_bundle_dir).digest
    assert Bundle.open(registry.resolve("models:/clf/1")).digest == v1.digest


def test_clear_errors(registry, bundle_dir):
    _log(registry, bundle_dir)
    with pytest.raises(RegistryError, match="no alias 'champion'"):
        registry.resolve("models:/clf@champion")
    with pytest.raises(RegistryError, match="no version '7'"):
        registry.resolve("models:/clf/7")
    with pytest.raises(RegistryError, match="expected models:/"):
        registry.resolve("models:/clf")
    with pytest.raises(RegistryError, match="no version with digest"):
        registry.by_digest("clf", "sha256:" + "0" * 64)


def test_paths_and_file_uris_resolve_without_a_registry(bundle_dir):
    assert resolve_bundle_path(str(bundle_dir)) == bundle_dir
    assert resolve_bundle_path(bundle_dir.as_uri()) == bundle_dir
