"""The kinds of deployment manifest an environment may hold, and reading whichever one it holds.

An environment chooses its serving platform by the manifest in gitops/environments/<env>/: a
SeldonDeployment (`seldondeployment.yaml`, Seldon Core v1) or an InferenceService (`inferenceservice.yaml`,
KServe). The manifest is what Argo CD applies, what `sluice up` and the router run and what the reconciler
edits, so its `kind` is the one place the choice is written and nothing else can disagree with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from deployment import kserve, seldon, view
from deployment.kserve import InferenceService
from deployment.seldon import SeldonDeployment
from deployment.view import ManifestError, Violation

# Either view: both offer name, namespace, annotations, predictors (name, traffic, shadow, model_uri,
# model_digest, model_name, image_name, image_tag, version, model_uri_field), live, shadow and weights().
Deployment = SeldonDeployment | InferenceService
Predictor = seldon.Predictor | kserve.Predictor

KINDS = (seldon.KIND, kserve.KIND)
FILES = {seldon.KIND: "seldondeployment.yaml", kserve.KIND: "inferenceservice.yaml"}


def file_name(kind: str) -> str:
    """The file an environment keeps a manifest of this kind in."""
    try:
        return FILES[kind]
    except KeyError:
        raise ManifestError(f"kind {kind!r} is not a deployment Sluice runs ({' or '.join(KINDS)})") from None


def kind_of(text: str) -> str | None:
    """The deployment kind in a YAML text (None when there is none, or the text is not YAML)."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        return None
    return next((d["kind"] for d in docs if isinstance(d, Mapping) and d.get("kind") in KINDS), None)


def parse(doc: Any, source: str | Path = "<manifest>") -> Deployment:
    kind = doc.get("kind") if isinstance(doc, Mapping) else None
    if kind == kserve.KIND:
        return kserve.parse(doc, source)
    return seldon.parse(doc, source)  # reports a wrong kind with the field


def loads(text: str, source: str | Path = "<manifest>") -> Deployment:
    """The one deployment manifest in a YAML text."""
    return parse(view.the_one(text, KINDS, source), source)


def find(path: str | Path) -> Path:
    """A directory's one deployment manifest file (or `path` itself when it is a file)."""
    return view.find(path, KINDS)


def read(path: str | Path) -> Deployment:
    """The deployment in a file, or in the one manifest file of an environment directory."""
    source = find(path)
    return loads(view.read_text(source), source)


def admission(d: Deployment) -> list[Violation]:
    return kserve.admission(d) if isinstance(d, InferenceService) else seldon.admission(d)


def check(d: Deployment, source: str | Path = "<manifest>") -> None:
    """Raise ManifestError naming the file and every broken rule, or return."""
    view.refuse(admission(d), source)
