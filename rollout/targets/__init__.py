"""Traffic targets: where weights are written. The engine sees only the `TrafficTarget` Protocol, so other
targets (Seldon v2 Experiment, an Istio VirtualService) can be added beside Seldon Core v1 and KServe without
touching the engine.

An environment chooses its target by the manifest it holds (`deployment.kinds`): `ByKind` reads the `kind`
of the text it is given and hands it to the SeldonDeployment target or the InferenceService target, so an
environment moves from one to the other with a commit that replaces its manifest, and no setting anywhere
else can disagree with Git. Both targets edit with ruamel.yaml's round-trip mode (the helpers below), so
comments and key order survive and a PR's diff shows only the traffic change.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Protocol

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from deployment.names import ANNOTATION
from rollout.state import Layout, Rollout, RolloutState, StateError

# The serving image a first manifest names until the first image build writes its digest.
DEFAULT_IMAGE = "ghcr.io/sluice-ml/sluice-serving@sha256:" + "0" * 64


class TargetError(ValueError):
    """A manifest the target cannot read or edit; the message names the field."""


class TrafficTarget(Protocol):
    def state(self, text: str) -> RolloutState:
        """Read predictors, weights and the rollout annotation from a manifest's text."""
        ...

    def apply(self, text: str, layout: Layout | None, rollout: Rollout | None) -> str:
        """The manifest with new weights (predictors absent from `layout` removed) and annotation."""
        ...

    def annotation(self, text: str, key: str) -> str | None:
        """The value of one annotation of the manifest, or None."""
        ...

    def annotate(self, text: str, key: str, value: str) -> str:
        """The manifest with one annotation set (used for the quarantine record)."""
        ...

    def add_candidate(self, text: str, name: str, model_uri: str, model_digest: str) -> str:
        """The manifest with one more predictor, at traffic 0, built like the stable one."""
        ...


# round-trip editing, shared by the targets ---------------------------------------------------------------
def roundtrip() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def load(text: str, kind: str) -> CommentedMap:
    """The manifest as an editable document; TargetError unless it is one mapping of `kind`."""
    try:
        doc = roundtrip().load(text)
    except Exception as e:
        raise TargetError(f"not valid YAML: {e}") from e
    if not isinstance(doc, CommentedMap) or doc.get("kind") != kind:
        raise TargetError(f"expected a {kind} (kind: {kind})")
    return doc


def dump(doc: CommentedMap) -> str:
    buf = io.StringIO()
    roundtrip().dump(doc, buf)
    return buf.getvalue()


def annotate(doc: CommentedMap, rollout: Rollout) -> None:
    """Write the rollout annotation (the engine's one piece of state in a manifest)."""
    set_annotation(doc, ANNOTATION, rollout.to_json())


def annotation_of(doc: CommentedMap, key: str) -> str | None:
    """The value of one `metadata.annotations` key, or None (the same place in every kind of manifest)."""
    value = ((doc.get("metadata") or {}).get("annotations") or {}).get(key)
    return None if value is None else str(value)


def set_annotation(doc: CommentedMap, key: str, value: str) -> None:
    """`metadata.annotations[key] = value`, everything else as it was."""
    meta = doc.setdefault("metadata", CommentedMap())
    if "annotations" not in meta:
        meta["annotations"] = CommentedMap()
    meta["annotations"][key] = value


def rollout_of(annotations: Mapping[str, str]) -> Rollout | None:
    raw = annotations.get(ANNOTATION)
    try:
        return Rollout.from_json(raw) if raw else None
    except StateError as e:
        raise TargetError(f"metadata.annotations.{ANNOTATION}: {e}") from e
