"""Read a SeldonDeployment (the YAML file in a gitops environment directory) into the spec `sluice up` runs.

Only reads: the rollout engine owns the round-trip editor. A manifest that Seldon's admission webhook would
refuse, or that the local runtime cannot run, raises `ManifestError` naming the file, the field and the value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

SELDON_API_VERSION = "machinelearning.seldon.io/v1"
KIND = "SeldonDeployment"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
MODELS_URI = re.compile(r"^models:/[^/@]+(@[^/]+|/\d+)$")
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class ManifestError(ValueError):
    """A manifest the local runtime cannot run; the message names the file, field and value."""


# --- the parts of the SeldonDeployment we read (everything else is allowed and ignored) ------------------


class _Parameter(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    type: str = "STRING"
    value: Any = None


class _Graph(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    type: str | None = None
    parameters: list[_Parameter] = []


class _Container(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    image: str | None = None


class _PodSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    containers: list[_Container] = []


class _ComponentSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    spec: _PodSpec | None = None


class _Predictor(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    graph: _Graph
    traffic: int = Field(default=0, ge=0, le=100)
    shadow: bool = False
    replicas: int | None = None
    annotations: dict[str, str] = {}
    componentSpecs: list[_ComponentSpec] = []


class _Spec(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str | None = None
    protocol: str | None = None
    predictors: list[_Predictor] = Field(min_length=1)


class _Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    namespace: str | None = None


class _SeldonDeployment(BaseModel):
    model_config = ConfigDict(extra="allow")
    apiVersion: str
    kind: str
    metadata: _Metadata
    spec: _Spec


# --- what the runtime uses ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictorSpec:
    """One predictor: a model version behind one process, with its share of traffic."""

    name: str
    traffic: int
    shadow: bool
    model_uri: str
    model_digest: str
    model_name: str  # the graph node's name: Seldon's `model_name` metric label
    model_image: str = ""
    model_version: str = ""
    predictor_version: str = ""

    @property
    def process_key(self) -> tuple[str, str, str, bool]:
        """What a running process serves: a change in any of these needs a new process.

        The shadow flag is part of it because a shadow runs at a lower CPU priority (see serving.runtime).
        """
        return (self.name, self.model_uri, self.model_digest, self.shadow)


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    predictors: tuple[PredictorSpec, ...]
    source: Path

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
    """A directory's one SeldonDeployment YAML file (or `path` itself when it is a file)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise ManifestError(f"{path}: no such file or directory")
    found = []
    for candidate in sorted([*path.glob("*.yaml"), *path.glob("*.yml")]):
        try:
            docs = list(yaml.safe_load_all(candidate.read_text()))
        except yaml.YAMLError:
            if "seldondeployment" in candidate.name.lower():
                found.append(candidate)  # let read_manifest report the YAML error with its position
            continue
        if any(isinstance(d, dict) and d.get("kind") == KIND for d in docs):
            found.append(candidate)
    if not found:
        raise ManifestError(f"{path}: no YAML file with kind: {KIND}")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ManifestError(f"{path}: more than one {KIND} ({names}); sluice up runs one")
    return found[0]


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
    """Parse and check a SeldonDeployment; `path` is an environment directory or the YAML file itself."""
    source = find_manifest(path)
    try:
        docs = [d for d in yaml.safe_load_all(source.read_text()) if d is not None]
    except yaml.YAMLError as e:
        raise ManifestError(f"{source}: not valid YAML ({_first_line(e)})") from e
    docs = [d for d in docs if isinstance(d, dict) and d.get("kind") == KIND]
    if len(docs) != 1:
        raise ManifestError(f"{source}: expected one document with kind: {KIND}, found {len(docs)}")
    try:
        sd = _SeldonDeployment.model_validate(docs[0])
    except ValidationError as e:
        err = e.errors()[0]
        field = _field_path(err["loc"])
        raise ManifestError(f"{source}: field {field}: {err['msg']} (got {err.get('input')!r})") from e
    if sd.apiVersion != SELDON_API_VERSION:
        raise ManifestError(
            f"{source}: field apiVersion: expected {SELDON_API_VERSION}, got {sd.apiVersion!r}"
        )
    predictors = tuple(_predictor(source, i, p, check_uri) for i, p in enumerate(sd.spec.predictors))
    _check_admission(source, predictors)
    return DeploymentSpec(name=sd.metadata.name, predictors=predictors, source=source)


def _predictor(
    source: Path, index: int, p: _Predictor, check_uri: Callable[[str], None] | None
) -> PredictorSpec:
    where = f"{source}: field spec.predictors[{index}]"
    if not NAME.match(p.name):
        raise ManifestError(f"{where}.name: {p.name!r} is not a valid name (lowercase letters, digits, '-')")
    params = {q.name: q.value for q in p.graph.parameters}
    for key in ("model_uri", "model_digest"):
        if not isinstance(params.get(key), str) or not params[key]:
            raise ManifestError(
                f"{where}.graph.parameters: {key} is missing (predictor {p.name!r} needs model_uri and model_digest)"
            )
    uri, digest = str(params["model_uri"]), str(params["model_digest"])
    if not DIGEST.match(digest):
        raise ManifestError(
            f"{where}.graph.parameters.model_digest: {digest!r} is not 'sha256:' + 64 hex digits"
        )
    if check_uri is not None:
        try:
            check_uri(uri)
        except ValueError as e:
            raise ManifestError(f"{where}.graph.parameters.model_uri: {uri!r}: {e}") from e
    image = _image(p)
    name, _, version = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    return PredictorSpec(
        name=p.name,
        traffic=p.traffic,
        shadow=p.shadow,
        model_uri=uri,
        model_digest=digest,
        model_name=p.graph.name,
        model_image=name,
        model_version=version,
        predictor_version=p.annotations.get("version", ""),
    )


def _image(p: _Predictor) -> str:
    for component in p.componentSpecs:
        if component.spec is None:
            continue
        for c in component.spec.containers:
            if c.name == p.graph.name and c.image:
                return c.image.split("@", 1)[0]
    return ""


def _check_admission(source: Path, predictors: tuple[PredictorSpec, ...]) -> None:
    """Seldon's admission rules, plus what one machine needs (unique names)."""
    seen: set[str] = set()
    for i, p in enumerate(predictors):
        if p.name in seen:
            raise ManifestError(
                f"{source}: field spec.predictors[{i}].name: duplicate predictor name {p.name!r}"
            )
        seen.add(p.name)
    shadows = [p for p in predictors if p.shadow]
    live = [p for p in predictors if not p.shadow]
    if len(shadows) > 1:
        names = ", ".join(repr(p.name) for p in shadows)
        raise ManifestError(
            f"{source}: field spec.predictors[].shadow: at most one shadow predictor, got {names}"
        )
    if not live:
        raise ManifestError(
            f"{source}: field spec.predictors[].shadow: shadow predictor {shadows[0].name!r} cannot be the only predictor"
        )
    if len(predictors) > 1:
        total = sum(p.traffic for p in live)
        if total != 100:
            weights = ", ".join(f"{p.name}={p.traffic}" for p in live)
            raise ManifestError(
                f"{source}: field spec.predictors[].traffic: non-shadow traffic must sum to 100, got {total} ({weights})"
            )
    elif 0 < live[0].traffic < 100:
        raise ManifestError(
            f"{source}: field spec.predictors[0].traffic: a single predictor takes 0 or 100, got {live[0].traffic}"
        )


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _first_line(e: Exception) -> str:
    return " ".join(str(e).split())[:300]
