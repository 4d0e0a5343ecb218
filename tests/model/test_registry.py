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
    with registry.fluent(), mlflow.start_run(experiment_id=registry.experiment_id()) as run:
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


def _tag(registry, version, digest):
    from model.registry import TAG_DIGEST

    registry.client.set_model_version_tag("clf", version, TAG_DIGEST, digest)


def _entries(directory):
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@pytest.mark.parametrize(
    "tag",
    ["sha256:../../escaped", "sha256:" + "A" * 64, "md5:" + "0" * 32, "sha256:" + "0" * 63 + "/", " "],
)
def test_a_digest_tag_that_is_not_a_digest_is_refused_before_it_names_a_path(
    registry, bundle_dir, tmp_path, tag
):
    version = _log(registry, bundle_dir).version
    _tag(registry, version, tag)
    with pytest.raises(RegistryError, match="not a bundle digest") as caught:
        registry.resolve(f"models:/clf/{version}")
    assert repr(tag) in str(caught.value)
    assert not (tmp_path / "escaped").exists()
    assert _entries(tmp_path / "cache" / "bundles") == []


def test_a_download_that_does_not_hash_to_its_tag_is_refused(registry, bundle_dir, rf_bundle_dir, tmp_path):
    honest = _log(registry, bundle_dir)
    swapped = _log(registry, rf_bundle_dir)  # its artifacts, but the other bundle's digest on the tag
    _tag(registry, swapped.version, honest.digest)
    with pytest.raises(RegistryError, match="refusing the bundle downloaded") as caught:
        registry.resolve(f"models:/clf/{swapped.version}")
    assert f"its files hash to {Bundle.open(rf_bundle_dir).digest}" in str(caught.value)
    assert _entries(tmp_path / "cache" / "bundles") == []  # nothing cached, no temp dir left
    # the honest version still resolves, and a later hit is checked again
    path = registry.resolve(f"models:/clf/{honest.version}")
    assert Bundle.open(path).digest == honest.digest


def test_a_failed_download_leaves_no_temp_dir(registry, bundle_dir, tmp_path):
    from model.registry import TAG_BUNDLE_URI

    version = _log(registry, bundle_dir)
    registry.client.set_model_version_tag(
        "clf", version.version, TAG_BUNDLE_URI, f"{version.bundle_uri}-gone"
    )
    with pytest.raises(RegistryError, match="cannot download"):
        registry.resolve(f"models:/clf/{version.version}")
    assert _entries(tmp_path / "cache" / "bundles") == []


def test_a_cache_entry_that_no_longer_matches_is_fetched_again(registry, bundle_dir):
    version = _log(registry, bundle_dir)
    path = registry.resolve(f"models:/clf/{version.version}")
    (path / "signature.json").write_text("{}")  # tampered on disk after it was cached
    again = registry.resolve(f"models:/clf/{version.version}")
    assert again == path and Bundle.open(again).digest == version.digest


@pytest.mark.parametrize("named_by", ["environment", "argument"])
def test_a_sqlite_store_keeps_its_artifacts_beside_it_not_in_the_working_directory(
    tmp_path, monkeypatch, bundle_dir, named_by
):
    import mlflow

    store = tmp_path / "store" / "mlflow.db"
    store.parent.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    uri = f"sqlite:///{store}"
    if named_by == "environment":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        registry = Registry(tmp_path / "repo")
    else:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        registry = Registry(tmp_path / "repo", tracking_uri=uri)
    with registry.fluent(), mlflow.start_run(experiment_id=registry.experiment_id()):
        mlflow.log_artifacts(str(bundle_dir), artifact_path="bundle")
    assert list(elsewhere.iterdir()) == []
    assert any((store.parent / "mlartifacts").rglob("signature.json"))


def test_a_registry_leaves_the_process_s_mlflow_settings_as_it_found_them(tmp_path, monkeypatch, bundle_dir):
    """Opening a registry, logging through it and resolving from it must not aim later code (or child
    processes, through MLFLOW_TRACKING_URI) at its store."""
    import os

    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("SLUICE_CACHE", str(tmp_path / "cache"))
    first = Registry(tmp_path / "first")
    ref = _log(first, bundle_dir)
    first.set_alias("clf", CHAMPION, ref.version)
    assert first.resolve("models:/clf@champion").is_dir()
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert "MLFLOW_REGISTRY_URI" not in os.environ

    # An operator's own setting survives a registry opened elsewhere, inside and after the block.
    outer = f"sqlite:///{tmp_path / 'outer.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", outer)
    second = Registry(tmp_path / "second", tracking_uri=f"sqlite:///{tmp_path / 'second.db'}")
    with second.fluent():
        assert mlflow.get_tracking_uri() == second.tracking_uri
    assert os.environ["MLFLOW_TRACKING_URI"] == outer
    assert mlflow.get_tracking_uri() == outer
