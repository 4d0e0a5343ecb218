"""A typed, read-only view of a SeldonDeployment (`machinelearning.seldon.io/v1`), and its admission rules.

`parse()` turns a YAML document into a `SeldonDeployment` with Seldon's defaults applied: a lone live
predictor takes all live traffic whatever its `traffic` field says (0, absent or 100), as Seldon's ingress
routes do. `admission()` lists what Seldon Core v1's admission webhook would refuse, plus Sluice's own rules
(DNS-label names, unique names, models pinned by digest, images pinned by @sha256). The local runtime, the
router, the reconciler and `sluice gitops check` all read manifests here, so they accept and refuse the same
files. The rollout engine edits manifests elsewhere (a round-trip editor); it reads them here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployment import view
from deployment.names import API_VERSION, DIGEST, IMAGE_DIGEST, KIND, NAME
from deployment.view import ManifestError, PredictorSet, Violation, image_parts, shape_error

__all__ = [
    "ManifestError",
    "Predictor",
    "SeldonDeployment",
    "Violation",
    "admission",
    "check",
    "find",
    "loads",
    "parse",
    "read",
]


@dataclass(frozen=True)
class Predictor:
    """One predictor as Seldon would run it."""

    index: int
    name: str
    traffic: int  # its effective share of live traffic, Seldon's defaults applied
    declared_traffic: int | None  # the `traffic` field as written (None when absent)
    shadow: bool
    graph_name: str  # the graph node's name: Seldon's `model_name` metric label
    parameters: Mapping[str, Any] = field(default_factory=dict)
    image: str = ""  # the graph container's image, as written
    images: tuple[tuple[str, str], ...] = ()  # (field path, image) of every container that names one
    replicas: int | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def model_uri(self) -> str | None:
        value = self.parameters.get("model_uri")
        return value if isinstance(value, str) and value else None

    @property
    def model_digest(self) -> str | None:
        value = self.parameters.get("model_digest")
        return value if isinstance(value, str) and value else None

    @property
    def model_name(self) -> str:
        """The graph node's name: Seldon's `model_name` metric label and the v2 model name it serves."""
        return self.graph_name

    @property
    def model_uri_field(self) -> str:
        """Where the model URI is written, for messages."""
        return f"spec.predictors[{self.index}].graph.parameters.model_uri"

    @property
    def image_name(self) -> str:
        """The image without tag or digest (Seldon's `model_image` label)."""
        return image_parts(self.image)[0]

    @property
    def image_tag(self) -> str:
        """The image's tag, '' when it has none (Seldon's `model_version` label)."""
        return image_parts(self.image)[1]

    @property
    def version(self) -> str:
        """The predictor's `version` annotation (Seldon's `predictor_version` label)."""
        return self.annotations.get("version", "")


@dataclass(frozen=True)
class SeldonDeployment(PredictorSet[Predictor]):
    name: str
    namespace: str | None
    predictors: tuple[Predictor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)
    protocol: str | None = None
    kind: str = KIND


# --- reading ------------------------------------------------------------------------------------------------


def loads(text: str, source: str | Path = "<manifest>") -> SeldonDeployment:
    """The one SeldonDeployment in a YAML text (other documents are ignored)."""
    return parse(view.the_one(text, (KIND,), source), source)


def read(path: str | Path) -> SeldonDeployment:
    """The SeldonDeployment in a file, or in the one manifest file of an environment directory."""
    source = find(path)
    return loads(view.read_text(source), source)


def find(path: str | Path) -> Path:
    """A directory's one SeldonDeployment YAML file (or `path` itself when it is a file)."""
    return view.find(path, (KIND,))


def parse(doc: Any, source: str | Path = "<manifest>") -> SeldonDeployment:
    """A parsed YAML document -> the view. Refuses what cannot be read as a SeldonDeployment at all (wrong
    kind or apiVersion, fields of the wrong type), naming the file and the field; rule breaks that still
    read (weights that do not sum to 100, say) are `admission()`'s to report."""

    def fail(where: str, message: str) -> ManifestError:
        return shape_error(source, where, message)

    head = view.header(doc, KIND, API_VERSION, source, "predictors")
    name, namespace, annotations, spec = head.name, head.namespace, head.annotations, head.spec
    raw = spec.get("predictors")
    if not isinstance(raw, list) or not raw:
        raise fail("spec.predictors", "at least one predictor is required")

    declared: list[tuple[Mapping[str, Any], int | None]] = []
    for i, p in enumerate(raw):
        where = f"spec.predictors[{i}]"
        if not isinstance(p, Mapping):
            raise fail(where, "a predictor must be a mapping")
        traffic = p.get("traffic")
        if traffic is not None and (isinstance(traffic, bool) or not isinstance(traffic, int)):
            raise fail(f"{where}.traffic", f"expected an integer 0..100, got {traffic!r}")
        declared.append((p, traffic))
    live = [i for i, (p, _) in enumerate(declared) if p.get("shadow") is not True]

    predictors = []
    for i, (p, traffic) in enumerate(declared):
        where = f"spec.predictors[{i}]"
        pname = p.get("name")
        if not isinstance(pname, str) or not pname:
            raise fail(f"{where}.name", f"a non-empty string is required, got {pname!r}")
        shadow = p.get("shadow", False)
        if not isinstance(shadow, bool):
            raise fail(f"{where}.shadow", f"expected true or false, got {shadow!r}")
        graph = p.get("graph")
        if not isinstance(graph, Mapping):
            raise fail(f"{where}.graph", "a mapping with a name is required")
        graph_name = graph.get("name")
        if not isinstance(graph_name, str) or not graph_name:
            raise fail(f"{where}.graph.name", f"a non-empty string is required, got {graph_name!r}")
        replicas = p.get("replicas")
        if replicas is not None and (isinstance(replicas, bool) or not isinstance(replicas, int)):
            raise fail(f"{where}.replicas", f"expected an integer, got {replicas!r}")
        # Seldon's ingress gives a lone live predictor all live traffic, whatever its field says.
        effective = 100 if not shadow and live == [i] else (traffic or 0)
        predictors.append(
            Predictor(
                index=i,
                name=pname,
                traffic=effective,
                declared_traffic=traffic,
                shadow=shadow,
                graph_name=graph_name,
                parameters=_parameters(graph, f"{where}.graph.parameters", fail),
                image=_image(p, graph_name),
                images=tuple(
                    (f"{where}.{path}.image", str(c["image"]))
                    for path, c in _containers(p)
                    if c.get("image") is not None
                ),
                replicas=replicas,
                annotations=view.string_map(p.get("annotations"), f"{where}.annotations", source),
            )
        )
    protocol = spec.get("protocol")
    return SeldonDeployment(
        name=name,
        namespace=namespace,
        predictors=tuple(predictors),
        annotations=annotations,
        protocol=protocol if isinstance(protocol, str) else None,
    )


def _parameters(graph: Mapping[str, Any], where: str, fail: Any) -> dict[str, Any]:
    raw = graph.get("parameters") or []
    if not isinstance(raw, list):
        raise fail(where, f"expected a list of {{name, type, value}}, got {raw!r}")
    out: dict[str, Any] = {}
    for j, q in enumerate(raw):
        if not isinstance(q, Mapping) or not isinstance(q.get("name"), str):
            raise fail(f"{where}[{j}]", f"expected {{name, type, value}}, got {q!r}")
        out[q["name"]] = q.get("value")
    return out


def _containers(p: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(path, container) of every container under a predictor's componentSpecs, malformed parts skipped."""
    out = []
    specs = p.get("componentSpecs")
    for j, cs in enumerate(specs if isinstance(specs, list) else []):
        pod = cs.get("spec") if isinstance(cs, Mapping) else None
        containers = pod.get("containers") if isinstance(pod, Mapping) else None
        for k, c in enumerate(containers if isinstance(containers, list) else []):
            if isinstance(c, Mapping):
                out.append((f"componentSpecs[{j}].spec.containers[{k}]", c))
    return out


def _image(p: Mapping[str, Any], graph_name: str) -> str:
    for _, c in _containers(p):
        if c.get("name") == graph_name and c.get("image"):
            return str(c["image"])
    return ""


# --- admission ----------------------------------------------------------------------------------------------


def admission(sd: SeldonDeployment) -> list[Violation]:
    """Every rule `sd` breaks (empty: fine)."""
    out: list[Violation] = []
    seen: set[str] = set()
    for p in sd.predictors:
        where = f"spec.predictors[{p.index}]"
        if not NAME.match(p.name):
            message = f"{p.name!r} is not a valid name (lowercase letters, digits and '-', at most 63)"
            out.append(Violation(f"{where}.name", "names", message))
        if p.name in seen:
            out.append(Violation(f"{where}.name", "names", f"duplicate predictor name {p.name!r}"))
        seen.add(p.name)
        if p.declared_traffic is not None and not 0 <= p.declared_traffic <= 100:
            message = f"predictor {p.name!r}: traffic must be 0..100, got {p.declared_traffic}"
            out.append(Violation(f"{where}.traffic", "weights", message))
        if p.model_uri is None:
            message = f"predictor {p.name!r}: model_uri is missing (every predictor names its bundle)"
            out.append(Violation(f"{where}.graph.parameters.model_uri", "pinning", message))
        digest = p.parameters.get("model_digest")
        if not isinstance(digest, str) or not DIGEST.match(digest):
            message = (
                f"predictor {p.name!r}: model_digest must pin the model ('sha256:' + 64 hex digits), "
                f"got {digest!r}"
            )
            out.append(Violation(f"{where}.graph.parameters.model_digest", "pinning", message))
        for path, image in p.images:
            if not IMAGE_DIGEST.search(image):
                message = f"predictor {p.name!r}: image must be pinned by @sha256 digest, got {image!r}"
                out.append(Violation(path, "pinning", message))

    shadows = [p for p in sd.predictors if p.shadow]
    live = sd.live
    if len(shadows) > 1:
        names = [p.name for p in shadows]
        out.append(
            Violation("spec.predictors[].shadow", "shadow", f"at most one shadow predictor, got {names}")
        )
    if not live:
        message = f"shadow predictor {shadows[0].name!r} cannot be the only predictor"
        out.append(Violation("spec.predictors[].shadow", "shadow", message))
    elif len(live) > 1:
        total = sum(p.declared_traffic or 0 for p in live)
        if total != 100:
            weights = ", ".join(f"{p.name}={p.declared_traffic or 0}" for p in live)
            message = f"non-shadow traffic must sum to 100, got {total} ({weights})"
            out.append(Violation("spec.predictors[].traffic", "weights", message))
    elif live[0].declared_traffic is not None and 0 < live[0].declared_traffic < 100:
        # Seldon refuses 1..99 on a lone predictor; with a shadow beside it the ingress ignores the value,
        # which would make a diff lie about where traffic goes: refused as well.
        only = live[0]
        message = (
            f"a lone live predictor takes 0 or 100 (all traffic either way), got {only.declared_traffic}"
        )
        out.append(Violation(f"spec.predictors[{only.index}].traffic", "weights", message))
    return out


def check(sd: SeldonDeployment, source: str | Path = "<manifest>") -> None:
    """Raise ManifestError naming the file and every broken rule, or return."""
    view.refuse(admission(sd), source)
