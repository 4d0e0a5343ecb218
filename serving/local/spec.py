"""What `sluice up` runs from a deployment manifest: one process per predictor, with the labels its metrics carry.

The manifest (a SeldonDeployment, or an InferenceService's stable predictor and canaries) is read and checked
by `deployment.kinds` (the same views and admission rules the reconciler uses); this module adds what one
machine needs: every predictor's bundle must be loadable from here. A manifest it cannot run raises
`ManifestError` naming the file, the field and the value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deployment import kinds
from deployment.view import ManifestError

__all__ = [
    "DeploymentSpec",
    "ManifestError",
    "PredictorSpec",
    "check_model_uri",
    "find_manifest",
    "read_manifest",
]

MODELS_URI = re.compile(r"^models:/[^/@]+(@[^/]+|/\d+)$")


@dataclass(frozen=True)
class PredictorSpec:
    """One predictor: a model version behind one process, with its share of traffic."""

    name: str
    traffic: int
    shadow: bool
    model_uri: str
    model_digest: str
    model_name: str  # the v2 model name it serves, and the `model_name` metric label
    model_image: str = ""
    model_version: str = ""
    predictor_version: str = ""

    @property
    def process_key(self) -> tuple[str, str, str, bool]:
        """What a running process serves: a change in any of these needs a new process.

        The shadow flag is part of it because a shadow runs at a lower CPU priority (see serving.local.processes).
        """
        return (self.name, self.model_uri, self.model_digest, self.shadow)


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    predictors: tuple[PredictorSpec, ...]
    source: Path
    view: kinds.Deployment  # the manifest as the router reads it (weights, annotations, labels)

    @property
    def live(self) -> tuple[PredictorSpec, ...]:
        return tuple(p for p in self.predictors if not p.shadow)

    @property
    def shadow(self) -> PredictorSpec | None:
        return next((p for p in self.predictors if p.shadow), None)

    def predictor(self, name: str) -> PredictorSpec:
        for p in self.predictors:
            if p.name == name:
                return p
        raise KeyError(name)


def find_manifest(path: str | Path) -> Path:
    """A directory's one deployment manifest file (or `path` itself when it is a file)."""
    return kinds.find(path)


def check_model_uri(uri: str) -> None:
    """Refuse a URI no predictor can load: an unknown scheme, a malformed `models:/`, a missing directory.

    A `models:/` URI is only checked for form here (the registry is asked when its predictor starts).
    """
    if uri.startswith("models:/"):
        if not MODELS_URI.match(uri):
            raise ValueError("expected models:/NAME@ALIAS or models:/NAME/VERSION")
        return
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError("unknown model URI scheme (expected a path, file:// or models:/)")
    if uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        local = Path(unquote(urlparse(uri).path))
    else:
        local = Path(uri)
    if not local.is_dir():
        raise ValueError(f"no bundle directory at {local}")


def read_manifest(
    path: str | Path, *, check_uri: Callable[[str], None] | None = check_model_uri
) -> DeploymentSpec:
    """Parse and check a deployment manifest; `path` is an environment directory or the YAML file itself."""
    source = kinds.find(path)
    deployment = kinds.read(source)
    kinds.check(deployment, source)
    predictors = tuple(_predictor(source, p, check_uri) for p in deployment.predictors)
    return DeploymentSpec(name=deployment.name, predictors=predictors, source=source, view=deployment)


def _predictor(source: Path, p: kinds.Predictor, check_uri: Callable[[str], None] | None) -> PredictorSpec:
    # admission() has checked that model_uri and model_digest are there and well formed.
    uri, digest = p.model_uri or "", p.model_digest or ""
    if check_uri is not None:
        try:
            check_uri(uri)
        except ValueError as e:
            raise ManifestError(f"{source}: field {p.model_uri_field}: {uri!r}: {e}") from e
    return PredictorSpec(
        name=p.name,
        traffic=p.traffic,
        shadow=p.shadow,
        model_uri=uri,
        model_digest=digest,
        model_name=p.model_name,
        model_image=p.image_name,
        model_version=p.image_tag,
        predictor_version=p.version,
    )
