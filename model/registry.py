"""The MLflow model registry: where bundles are registered, aliased (`challenger`, `champion`) and fetched.

Embedded default: a sqlite store `mlflow.db` and artifacts in `mlartifacts/` at the repository root (any
sqlite store keeps its artifacts in `mlartifacts/` beside it); `MLFLOW_TRACKING_URI` points elsewhere (an
MLflow server in a cluster). Aliases replace the deprecated stages.
Each registered version carries the bundle digest and where its bundle lives, so `models:/name@champion`
resolves to the same directory `dvc repro` wrote.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXPERIMENT = "sluice"
CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"
TAG_DIGEST = "sluice.bundle_digest"
TAG_BUNDLE_URI = "sluice.bundle_uri"

# What MLflow's fluent API reads (and what `mlflow.set_tracking_uri` writes back into the environment).
_FLUENT_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class RegistryError(LookupError):
    """A model, version or alias that the registry does not have, or a URI it cannot resolve."""


@dataclass(frozen=True)
class ModelVersionRef:
    name: str
    version: str
    digest: str | None
    bundle_uri: str | None
    run_id: str | None
    aliases: tuple[str, ...] = ()


def default_tracking_uri(root: str | Path = ".") -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


def _quiet_mlflow() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    import logging

    for name in ("mlflow", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


class Registry:
    """A thin, typed wrapper over MlflowClient for what Sluice needs of a model registry."""

    def __init__(self, root: str | Path = ".", tracking_uri: str | None = None):
        _quiet_mlflow()
        from mlflow import MlflowClient

        self.root = Path(root).resolve()
        self.tracking_uri = tracking_uri or default_tracking_uri(self.root)
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    @contextmanager
    def fluent(self) -> Iterator[None]:
        """MLflow's fluent API (`mlflow.start_run`, `mlflow.log_*`) aimed at this registry inside the block.

        `mlflow.set_tracking_uri` is process-wide and also sets `MLFLOW_TRACKING_URI` for every later command
        and child process, so a registry opened once would capture everything after it. What was set before
        comes back when the block ends.
        """
        import mlflow

        saved = {name: os.environ.get(name) for name in _FLUENT_ENV}
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])  # type: ignore[arg-type]  # None unsets it
            mlflow.set_registry_uri(saved["MLFLOW_REGISTRY_URI"])  # type: ignore[arg-type]
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    # experiments and runs -------------------------------------------------------------------------
    def experiment_id(self, name: str = EXPERIMENT) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return str(exp.experiment_id)
        location = None
        if self.tracking_uri.startswith("sqlite:///"):
            # Beside the store, whichever way it was named: MLflow's own default is ./mlruns in the working
            # directory, which scatters a registry's bundles over wherever a command happened to run.
            store = Path(self.tracking_uri.removeprefix("sqlite:///"))
            location = (store.parent / "mlartifacts").as_uri()
        return str(self.client.create_experiment(name, artifact_location=location))

    # versions and aliases -------------------------------------------------------------------------
    def register(
        self, name: str, model_uri: str, run_id: str, digest: str, bundle_uri: str
    ) -> ModelVersionRef:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name, description="Registered by Sluice's `package` stage.")
        with self.fluent():  # MLflow looks a `models:/m-...` source up in the process-wide tracking store
            mv = self.client.create_model_version(
                name, source=model_uri, run_id=run_id, tags={TAG_DIGEST: digest, TAG_BUNDLE_URI: bundle_uri}
            )
        return self._ref(mv)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.version(name, version)  # raises a clear error for an unknown version
        self.client.set_registered_model_alias(name, alias, str(version))

    def alias(self, name: str, alias: str) -> ModelVersionRef | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._ref(self.client.get_model_version_by_alias(name, alias))
        except MlflowException:
            return None

    def version(self, name: str, version: str) -> ModelVersionRef:
        from mlflow.exceptions import MlflowException

        try:
            return self._ref(self.client.get_model_version(name, str(version)))
        except MlflowException as e:
            raise RegistryError(f"model {name!r} has no version {version!r} in {self.tracking_uri}") from e

    def by_digest(self, name: str, digest: str) -> ModelVersionRef:
        for mv in self.client.search_model_versions(f"name = '{name}'"):
            if mv.tags.get(TAG_DIGEST) == digest:
                return self._ref(self.client.get_model_version(name, mv.version))
        raise RegistryError(f"model {name!r} has no version with digest {digest}")

    def promote(self, name: str, version: str) -> ModelVersionRef | None:
        """Make `version` the champion; the champion it replaces becomes `previous` (for a one-step rollback).

        Returns the version that was champion before, if any. Promoting the current champion is a no-op.
        """
        before = self.alias(name, CHAMPION)
        if before is not None and before.version == str(version):
            return before
        if before is not None:
            self.client.set_registered_model_alias(name, PREVIOUS, before.version)
        self.set_alias(name, CHAMPION, version)
        return before

    def _ref(self, mv: Any) -> ModelVersionRef:
        tags = dict(mv.tags or {})
        return ModelVersionRef(
            name=mv.name,
            version=str(mv.version),
            digest=tags.get(TAG_DIGEST),
            bundle_uri=tags.get(TAG_BUNDLE_URI),
            run_id=mv.run_id,
            aliases=tuple(getattr(mv, "aliases", []) or []),
        )

    # bundles ---------------------------------------------------------------------------------------
    def resolve(self, uri: str, cache: Path | None = None) -> Path:
        """`models:/name@alias` or `models:/name/version` -> a local bundle directory (downloaded once)."""
        m = _MODELS_URI.match(uri)
        if not m:
            raise RegistryError(f"{uri!r}: expected models:/<name>@<alias> or models:/<name>/<version>")
        name = m["name"]
        if m["alias"]:
            ref = self.alias(name, m["alias"])
            if ref is None:
                raise RegistryError(
                    f"{uri}: model {name!r} has no alias {m['alias']!r} in {self.tracking_uri}"
                )
        else:
            ref = self.version(name, m["version"])
        if not ref.bundle_uri or not ref.digest:
            raise RegistryError(
                f"{uri}: version {ref.version} was not registered by Sluice (no {TAG_BUNDLE_URI} tag)"
            )
        return self._fetch_bundle(uri, ref, cache)

    def _fetch_bundle(self, uri: str, ref: ModelVersionRef, cache: Path | None) -> Path:
        """The bundle of `ref` in the local cache, downloaded if missing; never used unless it hashes to
        the version's digest tag. The tag names the cache entry, so it is checked before it becomes a path."""
        from deployment.names import DIGEST
        from model.bundle import short_digest

        digest = ref.digest or ""
        if not DIGEST.fullmatch(digest):
            raise RegistryError(
                f"{uri}: version {ref.version} has tag {TAG_DIGEST}={digest!r}, not a bundle digest "
                "(sha256: and 64 lowercase hex digits)"
            )
        cache = (
            cache or Path(os.environ.get("SLUICE_CACHE", Path.home() / ".cache" / "sluice")) / "bundles"
        ).resolve()
        target = cache / short_digest(digest, 24)
        if target.exists():
            if _bundle_problem(target, digest) is None:
                return target
            shutil.rmtree(target, ignore_errors=True)  # a cache entry that no longer hashes to its name
        cache.mkdir(parents=True, exist_ok=True)
        import mlflow

        tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".download-"))
        try:
            try:
                local = Path(
                    mlflow.artifacts.download_artifacts(
                        artifact_uri=ref.bundle_uri,
                        dst_path=str(tmp),
                        tracking_uri=self.tracking_uri,
                        registry_uri=self.tracking_uri,
                    )
                )
            except Exception as e:  # MLflow raises its own and the stores' exceptions
                raise RegistryError(
                    f"{uri}: cannot download version {ref.version}'s bundle from {ref.bundle_uri} ({e})"
                ) from e
            problem = _bundle_problem(local, digest)
            if problem:
                raise RegistryError(
                    f"{uri}: refusing the bundle downloaded from {ref.bundle_uri} for version {ref.version} "
                    f"(tagged {TAG_DIGEST}={digest}): {problem}"
                )
            try:
                local.rename(target)
            except OSError:
                if _bundle_problem(target, digest):  # not another process's identical download
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target


def _bundle_problem(directory: Path, digest: str) -> str | None:
    """Why `directory` is not the bundle `digest` names (None when it is): its files must hash to the
    digest, and its metadata.json must say the same."""
    from model.bundle import Bundle, BundleError, compute_digest

    try:
        actual = compute_digest(directory)
        if actual != digest:
            return f"its files hash to {actual}"
        Bundle.open(directory, verify=True)
    except (BundleError, OSError) as e:
        return str(e)
    return None


def resolve_bundle_path(uri: str, root: str | Path = ".") -> Path:
    """Any model URI Sluice accepts -> a local bundle directory: a path, `file://...`, or `models:/...`."""
    if uri.startswith("models:/"):
        return Registry(root).resolve(uri)
    if uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(uri).path))
    return Path(uri)
