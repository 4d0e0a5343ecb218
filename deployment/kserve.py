"""A typed, read-only view of a KServe InferenceService (`serving.kserve.io/v1beta1`), and its admission rules.

Sluice runs an InferenceService in KServe's Standard mode with named canaries (KServe 0.20+): the stable
model is `spec.predictor` (named), each candidate a `spec.canary[]` entry with its own `predictor.name` and
`trafficPercent`. KServe makes one Deployment and one Service per predictor (`<isvc>-<name>-predictor`) and,
with the Gateway API, splits traffic by weight: each canary its percent, the stable predictor the rest. Both
models are named in Git, so a rollback is the removal of a canary and a promotion is `predictor.name` taking
the canary's name (KServe keeps the canary's pods).

Each predictor is a custom container (`kserve-container`) running Sluice's model server: KServe's storage
initializer copies `STORAGE_URI` to /mnt/models, the server refuses a bundle whose digest is not
`SLUICE_MODEL_DIGEST`, and it answers the Open Inference Protocol v2 on port 8080 under the InferenceService's
name (KServe's convention for a model's name). A canary may set `sluice.dev/shadow: "<percent>"` on its
predictor: at `trafficPercent: 0` it then receives that share of live requests as mirrored copies from the
router (KServe has no mirror of its own).

`parse()` applies KServe's defaults: the main container's name, a canary's predictor merged over the stable
one (fields it sets replace the stable's, maps merge, as KServe's controller does), the stable predictor taking
what the canaries leave. `admission()` lists what KServe's validating webhook and controller would refuse,
plus Sluice's rules (named predictors, models and images pinned by digest, Standard mode, no Knative-only
`canaryTrafficPercent`). The local runtime, the router, the reconciler and `sluice gitops check` read
InferenceServices here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from deployment import view
from deployment.names import DIGEST, IMAGE_DIGEST, NAME
from deployment.view import ManifestError, PredictorSet, Violation, image_parts, shape_error

__all__ = [
    "InferenceService",
    "ManifestError",
    "Predictor",
    "Violation",
    "admission",
    "check",
    "find",
    "loads",
    "parse",
    "read",
    "service_name",
]

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
CONTAINER = "kserve-container"  # KServe's name for a predictor's main container
STORAGE_URI = "STORAGE_URI"  # a custom container's model: KServe's storage initializer copies it to MODEL_DIR
MODEL_DIR = "/mnt/models"
DIGEST_ENV = "SLUICE_MODEL_DIGEST"  # the bundle digest the model server insists on
PROTOCOL_ENV = "PROTOCOL"  # v1 or v2: how KServe reaches a custom container
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
STANDARD = "Standard"
LEGACY_MODES = {"RawDeployment": "Standard", "Serverless": "Knative"}  # KServe's ParseDeploymentMode
SHADOW = "sluice.dev/shadow"  # on a canary's predictor: the percent of live requests mirrored to it
HTTP_PORT = 8080  # where a custom container listens (KServe's default)
SERVICE_PORT = 80  # the port of each predictor's Service
# KServe's IsvcNameFmt (metadata.name) and the CRD's pattern for predictor.name.
ISVC_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# What KServe's default storage initializer fetches (a URI with no scheme is taken as a local path).
STORAGE_PREFIXES = (
    "gs://", "s3://", "pvc://", "file://", "https://", "http://", "hdfs://", "webhdfs://", "oci://",
    "oci+native://", "oci+fetch://", "hf://",
)  # fmt: skip
_SCHEME = re.compile(r"\w+?://")
_OTHER_URI = re.compile(r"^[A-Za-z][\w+.-]*:/")  # models:/, runs:/, mlflow-artifacts:/ ...
IMPLEMENTATIONS = (
    "model", "sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "huggingface", "pmml",
    "lightgbm", "paddle",
)  # fmt: skip
CANARY_FIXED = ("maxReplicas", "scaleTarget", "scaleMetric", "autoScaling", "workerSpec")


@dataclass(frozen=True)
class Predictor:
    """One predictor as KServe would run it (a canary with the stable predictor's fields it inherits)."""

    index: int  # 0: spec.predictor; i + 1: spec.canary[i]
    where: str  # "spec.predictor" or "spec.canary[i].predictor"
    name: str  # predictor.name ('' when absent)
    traffic: int  # its effective share of live traffic (a shadow's: its mirror percentage)
    declared_traffic: int | None  # a canary's trafficPercent as written; None for the stable predictor
    shadow: bool
    model_name: str  # the v2 model name it serves: the InferenceService's name
    env: Mapping[str, str] = field(default_factory=dict)  # the main container's literal env
    env_field: str = ""  # where that env is written (the canary's own, or the stable's it inherits)
    image: str = ""  # the main container's image, as written
    images: tuple[tuple[str, str], ...] = ()  # (field path, image) of every container that names one
    args: tuple[str, ...] = ()  # the main container's command and args
    annotations: Mapping[str, str] = field(default_factory=dict)
    min_replicas: int | None = None
    max_replicas: int | None = None
    overrides: frozenset[str] = frozenset()  # the fields a canary sets itself (none for the stable)
    implementations: tuple[str, ...] = ()  # custom containers and/or framework specs it declares
    container: str | None = None  # the main container's name, KServe's default applied

    @property
    def model_uri(self) -> str | None:
        return self.env.get(STORAGE_URI) or None

    @property
    def model_digest(self) -> str | None:
        return self.env.get(DIGEST_ENV) or None

    @property
    def model_uri_field(self) -> str:
        """Where the model URI is written, for messages."""
        return f"{self.env_field}[{STORAGE_URI}]"

    @property
    def protocol(self) -> str | None:
        return self.env.get(PROTOCOL_ENV)

    @property
    def image_name(self) -> str:
        return image_parts(self.image)[0]

    @property
    def image_tag(self) -> str:
        return image_parts(self.image)[1]

    @property
    def version(self) -> str:
        """The predictor's `version` annotation (the `predictor_version` metric label)."""
        return self.annotations.get("version", "")


@dataclass(frozen=True)
class InferenceService(PredictorSet[Predictor]):
    name: str
    namespace: str | None
    predictors: tuple[Predictor, ...]  # the stable predictor first, then each canary in order
    annotations: Mapping[str, str] = field(default_factory=dict)
    deployment_mode: str = STANDARD  # KServe's, legacy names mapped (Standard, Knative, ModelMesh)
    declared_mode: str | None = None  # the deploymentMode annotation as written
    knative_canary: int | None = None  # spec.predictor.canaryTrafficPercent (Knative mode's canary)
    kind: str = KIND

    @property
    def stable(self) -> Predictor:
        return self.predictors[0]

    @property
    def canaries(self) -> tuple[Predictor, ...]:
        return self.predictors[1:]

    @property
    def protocol(self) -> str | None:
        return self.stable.protocol


def service_name(isvc: InferenceService, p: Predictor) -> str:
    """The Service KServe makes for a predictor (its PredictorServiceName)."""
    return f"{isvc.name}-{p.name}-predictor" if p.name else f"{isvc.name}-predictor"


# --- reading ------------------------------------------------------------------------------------------------


def loads(text: str, source: str | Path = "<manifest>") -> InferenceService:
    """The one InferenceService in a YAML text (other documents are ignored)."""
    return parse(view.the_one(text, (KIND,), source), source)


def read(path: str | Path) -> InferenceService:
    """The InferenceService in a file, or in the one manifest file of an environment directory."""
    source = find(path)
    return loads(view.read_text(source), source)


def find(path: str | Path) -> Path:
    """A directory's one InferenceService YAML file (or `path` itself when it is a file)."""
    return view.find(path, (KIND,))


def merge(stable: Mapping[str, Any], canary: Mapping[str, Any]) -> dict[str, Any]:
    """A canary's predictor as KServe builds it: the stable predictor with every field the canary sets
    replacing it, maps merged key by key (mergo.Merge WithOverride: an empty value replaces nothing)."""
    out = dict(stable)
    for key, value in canary.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        elif value not in (None, "", [], {}):
            out[key] = value
    return out


def parse(doc: Any, source: str | Path = "<manifest>") -> InferenceService:
    """A parsed YAML document -> the view. Refuses what cannot be read as an InferenceService at all (wrong
    kind or apiVersion, fields of the wrong type), naming the file and the field; rule breaks that still
    read (canary weights over 100, an unpinned model) are `admission()`'s to report."""

    def fail(where: str, message: str) -> ManifestError:
        return shape_error(source, where, message)

    head = view.header(doc, KIND, API_VERSION, source, "a predictor")
    name, namespace, annotations, spec = head.name, head.namespace, head.annotations, head.spec
    stable_raw = spec.get("predictor")
    if not isinstance(stable_raw, Mapping):
        raise fail("spec.predictor", "a mapping is required")
    knative = _int(stable_raw.get("canaryTrafficPercent"), "spec.predictor.canaryTrafficPercent", fail)
    canaries_raw = spec.get("canary") or []
    if not isinstance(canaries_raw, list):
        raise fail("spec.canary", f"expected a list of {{predictor, trafficPercent}}, got {canaries_raw!r}")

    entries: list[tuple[str, Mapping[str, Any], int]] = []
    for i, entry in enumerate(canaries_raw):
        where = f"spec.canary[{i}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("predictor"), Mapping):
            raise fail(where, "expected a mapping with a predictor and a trafficPercent")
        percent = _int(entry.get("trafficPercent"), f"{where}.trafficPercent", fail)
        if percent is None:
            raise fail(f"{where}.trafficPercent", "an integer 0..100 is required")
        entries.append((f"{where}.predictor", entry["predictor"], percent))

    model_name = name
    stable = _predictor(0, "spec.predictor", stable_raw, stable_raw, None, model_name, source)
    canaries = [
        _predictor(i + 1, where, merge(stable_raw, raw), raw, percent, model_name, source)
        for i, (where, raw, percent) in enumerate(entries)
    ]
    # KServe's HTTPRoute gives the stable predictor what the canaries leave.
    stable_share = max(0, 100 - sum(c.declared_traffic or 0 for c in canaries))
    stable = _with_traffic(stable, stable_share)
    declared_mode = annotations.get(DEPLOYMENT_MODE)
    mode = LEGACY_MODES.get(declared_mode or STANDARD, declared_mode or STANDARD)
    return InferenceService(
        name=name,
        namespace=namespace,
        predictors=(stable, *canaries),
        annotations=annotations,
        deployment_mode=mode,
        declared_mode=declared_mode,
        knative_canary=knative,
    )


def _with_traffic(p: Predictor, traffic: int) -> Predictor:
    return replace(p, traffic=traffic if not p.shadow else p.traffic)


def _int(value: Any, where: str, fail: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(where, f"expected an integer, got {value!r}")
    return value


def _predictor(
    index: int,
    where: str,
    merged: Mapping[str, Any],
    own: Mapping[str, Any],
    percent: int | None,
    model_name: str,
    source: str | Path,
) -> Predictor:
    def fail(where: str, message: str) -> ManifestError:
        return shape_error(source, where, message)

    name = own.get("name") if index else merged.get("name")
    if name is not None and not isinstance(name, str):
        raise fail(f"{where}.name", f"expected a string, got {name!r}")
    # A canary's containers are all its own or all the stable predictor's (KServe replaces the list whole).
    base = where if index == 0 or own.get("containers") else "spec.predictor"
    containers = _containers(merged.get("containers"), f"{base}.containers", fail)
    init_base = where if index == 0 or own.get("initContainers") else "spec.predictor"
    init = _containers(merged.get("initContainers"), f"{init_base}.initContainers", fail)
    main_index = next((k for k, c in enumerate(containers) if c.get("name") == CONTAINER), None)
    if main_index is None and len(containers) == 1:
        main_index = 0  # KServe names a lone container kserve-container
    main: Mapping[str, Any] = containers[main_index] if main_index is not None else {}
    env_field = f"{base}.containers[{main_index}].env" if main_index is not None else f"{base}.containers"
    annotations = view.string_map(merged.get("annotations"), f"{where}.annotations", source)
    shadow = SHADOW in annotations and index > 0
    mirror = _percent(annotations.get(SHADOW)) if shadow else None
    traffic = (mirror or 0) if shadow else (percent or 0)
    min_replicas = _int(merged.get("minReplicas"), f"{where}.minReplicas", fail)
    if index and own.get("minReplicas") is None:
        stable_min = _int(merged.get("minReplicas"), "spec.predictor.minReplicas", fail)
        min_replicas = math.ceil((stable_min if stable_min is not None else 1) * (percent or 0) / 100)
    images = tuple(
        (f"{path}.image", str(c["image"]))
        for path, c in [
            *((f"{base}.containers[{k}]", c) for k, c in enumerate(containers)),
            *((f"{init_base}.initContainers[{k}]", c) for k, c in enumerate(init)),
        ]
        if c.get("image") is not None
    )
    # KServe's GetImplementations: each framework or model spec, one custom predictor per container named
    # kserve-container, or the first container when nothing else is declared.
    implementations = [k for k in IMPLEMENTATIONS if merged.get(k) is not None]
    implementations += ["containers" for c in containers if c.get("name") == CONTAINER]
    if containers and not implementations:
        implementations = ["containers"]
    return Predictor(
        index=index,
        where=where,
        name=name or "",
        traffic=traffic,
        declared_traffic=percent,
        shadow=shadow,
        model_name=model_name,
        env=_env(main.get("env"), env_field, fail),
        env_field=env_field,
        image=str(main.get("image") or ""),
        images=images,
        args=tuple(str(a) for a in [*(main.get("command") or []), *(main.get("args") or [])]),
        annotations=annotations,
        min_replicas=min_replicas,
        max_replicas=_int(merged.get("maxReplicas"), f"{where}.maxReplicas", fail),
        overrides=frozenset(own) if index else frozenset(),
        implementations=tuple(implementations),
        container=CONTAINER if main_index is not None else None,
    )


def _containers(value: Any, where: str, fail: Any) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(c, Mapping) for c in value):
        raise fail(where, f"expected a list of containers, got {value!r}")
    return list(value)


def _env(value: Any, where: str, fail: Any) -> dict[str, str]:
    """The literal values of a container's env (entries set by valueFrom are left out)."""
    if value is None:
        return {}
    if not isinstance(value, list):
        raise fail(where, f"expected a list of {{name, value}}, got {value!r}")
    out: dict[str, str] = {}
    for k, entry in enumerate(value):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise fail(f"{where}[{k}]", f"expected {{name, value}}, got {entry!r}")
        if entry.get("value") is not None:
            out[entry["name"]] = str(entry["value"])
    return out


def _percent(text: str | None) -> int | None:
    try:
        value = int(str(text).strip())
    except ValueError:
        return None
    return value if 0 <= value <= 100 else None


# --- admission ----------------------------------------------------------------------------------------------


def admission(isvc: InferenceService) -> list[Violation]:
    """Every rule `isvc` breaks (empty: fine)."""
    return [*_kserve_rules(isvc), *_sluice_rules(isvc)]


def _kserve_rules(isvc: InferenceService) -> list[Violation]:
    """What KServe's webhook (validateInferenceService, validateCanarySpecs) and controller refuse."""
    out: list[Violation] = []

    def refuse(path: str, message: str) -> None:
        out.append(Violation(path, "kserve", message))

    if not ISVC_NAME.match(isvc.name):
        refuse(
            "metadata.name",
            f"{isvc.name!r} is not a valid InferenceService name ([a-z]([-a-z0-9]*[a-z0-9])?)",
        )
    stable = isvc.stable
    for p in isvc.predictors:
        if p.name and not ISVC_NAME.match(p.name):
            refuse(f"{p.where}.name", f"{p.name!r} does not match [a-z]([-a-z0-9]*[a-z0-9])?")
        if len(p.implementations) != 1:
            found = ", ".join(p.implementations) or "none"
            refuse(
                p.where, f"exactly one implementation (containers or a model spec) is required, found {found}"
            )
        uri = p.model_uri
        if uri and _SCHEME.search(uri) and not uri.startswith(STORAGE_PREFIXES):
            refuse(
                p.model_uri_field,
                f"{uri!r}: KServe's storage initializer fetches only {', '.join(STORAGE_PREFIXES)}",
            )
        # validateReplicas: KServe's default minReplicas is 1; a maxReplicas of 0 means no upper bound.
        low, high = (p.min_replicas if p.min_replicas is not None else 1), p.max_replicas or 0
        if low < 0 or high < 0 or (high and low > high):
            refuse(
                f"{p.where}.minReplicas",
                f"replicas must be 0 <= minReplicas <= maxReplicas, got {low}..{high}",
            )
        if p.protocol is not None and p.protocol not in ("v1", "v2"):
            refuse(f"{p.env_field}[{PROTOCOL_ENV}]", f"protocol must be v1 or v2, got {p.protocol!r}")
    if not isvc.canaries:
        return out
    if isvc.declared_mode != STANDARD:
        refuse(
            f"metadata.annotations[{DEPLOYMENT_MODE}]",
            f"canaries need {STANDARD} mode, got {isvc.declared_mode!r}",
        )
    seen: set[str] = set()
    for c in isvc.canaries:
        if not c.name:
            refuse(f"{c.where}.name", "a canary's predictor.name is required")
        elif c.name in seen:
            refuse(f"{c.where}.name", f"canary predictor.name {c.name!r} is duplicated")
        elif c.name == stable.name:
            refuse(
                f"{c.where}.name", f"canary predictor.name {c.name!r} conflicts with the stable predictor's"
            )
        seen.add(c.name)
        where = c.where.removesuffix(".predictor")
        if c.declared_traffic is not None and not 0 <= c.declared_traffic <= 100:
            refuse(f"{where}.trafficPercent", f"must be 0..100, got {c.declared_traffic}")
        for key in CANARY_FIXED:
            if key in c.overrides:
                refuse(f"{c.where}.{key}", f"a canary may not set {key} (canaries run fixed replicas)")
        stable_min = stable.min_replicas if stable.min_replicas is not None else 1
        if "minReplicas" in c.overrides and (c.min_replicas or 0) > stable_min:
            refuse(
                f"{c.where}.minReplicas",
                f"{c.min_replicas} exceeds the stable predictor's minReplicas ({stable_min})",
            )
        if c.model_uri and c.model_uri == stable.model_uri:
            refuse(
                c.model_uri_field,
                f"the same model as the stable predictor ({c.model_uri!r}): promoting it changes predictor.name, "
                "which KServe allows only with a model change",
            )
    total = sum(c.declared_traffic or 0 for c in isvc.canaries)
    if total > 100:
        weights = ", ".join(f"{c.name}={c.declared_traffic}" for c in isvc.canaries)
        refuse(
            "spec.canary[].trafficPercent",
            f"canary trafficPercent must sum to at most 100, got {total} ({weights})",
        )
    return out


def _sluice_rules(isvc: InferenceService) -> list[Violation]:
    out: list[Violation] = []
    if isvc.declared_mode != STANDARD:
        message = (
            f"must be {STANDARD}: Sluice's canaries are KServe's named canaries, which run only in {STANDARD} "
            f"mode, and the mode cannot change once the InferenceService exists (got {isvc.declared_mode!r})"
        )
        out.append(Violation(f"metadata.annotations[{DEPLOYMENT_MODE}]", "mode", message))
    if isvc.knative_canary is not None:
        message = (
            "canaryTrafficPercent is Knative mode's canary: the stable model would live only in the cluster's "
            "revision history, not in Git; Sluice writes named canaries (spec.canary) instead"
        )
        out.append(Violation("spec.predictor.canaryTrafficPercent", "mode", message))
    seen: set[str] = set()
    for p in isvc.predictors:
        label = f"predictor {p.name!r}" if p.name else f"{p.where}"
        if not p.name:
            if p.index == 0:
                message = 'the stable predictor must be named ("m-" + 12 hex digits of its bundle digest)'
                out.append(Violation(f"{p.where}.name", "names", message))
        elif not NAME.match(p.name):
            message = f"{p.name!r} is not a valid name (lowercase letters, digits and '-', at most 63)"
            out.append(Violation(f"{p.where}.name", "names", message))
        elif p.name in seen:
            out.append(Violation(f"{p.where}.name", "names", f"duplicate predictor name {p.name!r}"))
        seen.add(p.name)
        service = service_name(isvc, p)
        if len(service) > 63:
            message = f"KServe's Service for it, {service!r}, is longer than 63 characters"
            out.append(Violation(f"{p.where}.name", "names", message))
        if p.container is None:
            message = f"{label}: a custom container named {CONTAINER} runs the model server"
            out.append(Violation(f"{p.where}.containers", "container", message))
            continue
        uri = p.model_uri
        if uri is None:
            message = f"{label}: {STORAGE_URI} is missing (every predictor names its bundle)"
            out.append(Violation(p.model_uri_field, "pinning", message))
        elif _OTHER_URI.match(uri) and not _SCHEME.search(uri):
            message = (
                f"{label}: {uri!r} is not a storage URI: KServe would take it for a local path and its storage "
                "initializer would fail; write where the bundle is stored (`sluice rollout` resolves models:/ "
                "to it for an InferenceService)"
            )
            out.append(Violation(p.model_uri_field, "pinning", message))
        digest = p.model_digest
        if digest is None or not DIGEST.match(digest):
            message = f"{label}: {DIGEST_ENV} must pin the model ('sha256:' + 64 hex digits), got {digest!r}"
            out.append(Violation(f"{p.env_field}[{DIGEST_ENV}]", "pinning", message))
        elif not _passes(p.args, "--digest", {f"$({DIGEST_ENV})", digest}):
            message = (
                f"{label}: the model server must be told the digest (--digest $({DIGEST_ENV})), or it would "
                "serve whatever bundle it is given"
            )
            out.append(Violation(p.env_field.removesuffix(".env") + ".args", "pinning", message))
        if not _passes(p.args, "--name", {isvc.name, "$(INFERENCE_SERVICE_NAME)"}):
            message = (
                f"{label}: the model server must serve the model as {isvc.name!r} (--name), the name KServe "
                "clients and the router's readiness probe use"
            )
            out.append(Violation(p.env_field.removesuffix(".env") + ".args", "container", message))
        for path, image in p.images:
            if not IMAGE_DIGEST.search(image):
                message = f"{label}: image must be pinned by @sha256 digest, got {image!r}"
                out.append(Violation(path, "pinning", message))
    stable = isvc.stable
    if SHADOW in stable.annotations:
        message = "the stable predictor serves live traffic; only a canary can be a shadow"
        out.append(Violation(f"{stable.where}.annotations[{SHADOW}]", "shadow", message))
    shadows = [c for c in isvc.canaries if c.shadow]
    if len(shadows) > 1:
        out.append(
            Violation(
                f"spec.canary[].predictor.annotations[{SHADOW}]",
                "shadow",
                f"at most one shadow, got {[c.name for c in shadows]}",
            )
        )
    for c in shadows:
        raw = c.annotations.get(SHADOW)
        if _percent(raw) is None:
            message = f"the percent of live requests mirrored to {c.name!r} (0..100), got {raw!r}"
            out.append(Violation(f"{c.where}.annotations[{SHADOW}]", "shadow", message))
        if c.declared_traffic:
            where = c.where.removesuffix(".predictor")
            message = f"a shadow takes no live traffic (KServe would route {c.declared_traffic}% to it), got {c.declared_traffic}"
            out.append(Violation(f"{where}.trafficPercent", "shadow", message))
    return out


def _passes(args: Sequence[str], flag: str, allowed: set[str], absent: bool = False) -> bool:
    """Whether `args` give `flag` one of the allowed values (or, with `absent`, do not give it at all)."""
    values = [args[i + 1] for i, a in enumerate(args[:-1]) if a == flag]
    values += [a.split("=", 1)[1] for a in args if a.startswith(f"{flag}=")]
    if not values:
        return absent
    return all(v in allowed for v in values)


def check(isvc: InferenceService, source: str | Path = "<manifest>") -> None:
    """Raise ManifestError naming the file and every broken rule, or return."""
    view.refuse(admission(isvc), source)
