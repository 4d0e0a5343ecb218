"""The Seldon Core v1 SeldonDeployment target: edits `predictors[].traffic`, `predictors[].shadow` and the
rollout annotation with ruamel.yaml's round-trip mode, so comments and key order survive and a PR's diff
shows only the traffic change."""

from __future__ import annotations

import copy

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from deployment import seldon
from deployment.names import predictor_name
from rollout.state import Layout, PredictorState, Rollout, RolloutState
from rollout.targets import (
    DEFAULT_IMAGE,
    TargetError,
    annotate,
    annotation_of,
    dump,
    load,
    rollout_of,
    set_annotation,
)


class SeldonDeploymentV1:
    """`machinelearning.seldon.io/v1` SeldonDeployment."""

    def load(self, text: str) -> CommentedMap:
        doc = load(text, "SeldonDeployment")
        predictors = (doc.get("spec") or {}).get("predictors")
        if not isinstance(predictors, CommentedSeq) or not predictors:
            raise TargetError("spec.predictors: at least one predictor is required")
        return doc

    def dump(self, doc: CommentedMap) -> str:
        return dump(doc)

    def state(self, text: str) -> RolloutState:
        try:
            sd = seldon.parse(self.load(text))
        except seldon.ManifestError as e:
            raise TargetError(str(e).removeprefix("<manifest>: ")) from e
        predictors = tuple(
            PredictorState(
                name=p.name,
                traffic=p.traffic,
                shadow=p.shadow,
                model_uri=p.model_uri,
                model_digest=p.model_digest,
            )
            for p in sd.predictors
        )
        return RolloutState(sd.name, predictors, rollout_of(sd.annotations), namespace=sd.namespace)

    def apply(self, text: str, layout: Layout | None, rollout: Rollout | None) -> str:
        doc = self.load(text)
        predictors: CommentedSeq = doc["spec"]["predictors"]
        if layout is not None:
            wanted = {s.name: s for s in layout}
            present = {str(p.get("name")) for p in predictors}
            missing = sorted(set(wanted) - present)
            if missing:
                raise TargetError(f"spec.predictors: no predictor named {missing}")
            for i in reversed(range(len(predictors))):
                if str(predictors[i].get("name")) not in wanted:
                    del predictors[i]
            for p in predictors:
                slot = wanted[str(p["name"])]
                if "traffic" in p:
                    p["traffic"] = slot.traffic
                else:
                    keys = list(p.keys())
                    at = keys.index("replicas") + 1 if "replicas" in keys else 1
                    p.insert(at, "traffic", slot.traffic)
                if slot.shadow:
                    if "shadow" in p:
                        p["shadow"] = True
                    else:
                        p.insert(list(p.keys()).index("traffic") + 1, "shadow", True)
                elif "shadow" in p:
                    del p["shadow"]
        if rollout is not None:
            annotate(doc, rollout)
        return self.dump(doc)

    def annotation(self, text: str, key: str) -> str | None:
        return annotation_of(self.load(text), key)

    def annotate(self, text: str, key: str, value: str) -> str:
        doc = self.load(text)
        set_annotation(doc, key, value)
        return self.dump(doc)

    def add_candidate(self, text: str, name: str, model_uri: str, model_digest: str) -> str:
        doc = self.load(text)
        predictors: CommentedSeq = doc["spec"]["predictors"]
        if any(str(p.get("name")) == name for p in predictors):
            raise TargetError(f"spec.predictors: a predictor named {name} is already there")
        live = [p for p in predictors if p.get("shadow") is not True]
        template = max(live, key=lambda p: p.get("traffic", 100 if len(predictors) == 1 else 0))
        new: CommentedMap = copy.deepcopy(template)
        new.ca.items.clear()  # the template's comments describe the template
        new["name"] = name
        if "traffic" in new:
            new["traffic"] = 0
        else:
            new.insert(1, "traffic", 0)
        new.pop("shadow", None)
        graph = new.setdefault("graph", CommentedMap())
        params = graph.setdefault("parameters", CommentedSeq())
        for key, value in (("model_uri", model_uri), ("model_digest", model_digest)):
            entry = next((p for p in params if p.get("name") == key), None)
            if entry is None:
                params.append(CommentedMap([("name", key), ("type", "STRING"), ("value", value)]))
            else:
                entry["value"] = value
        predictors.append(new)
        return self.dump(doc)


_INITIAL = """\
# The {env} environment: what `sluice up gitops/environments/{env}` runs on one machine and what Argo CD applies
# to a cluster. The rollout engine edits only the predictors' traffic, the shadow flag and the one annotation
# `sluice.dev/rollout`; every change to this file is a Git commit. Written by `sluice rollout init`.
apiVersion: machinelearning.seldon.io/v1
kind: SeldonDeployment
metadata:
  name: {deployment}
  namespace: {namespace}
  labels:
    app.kubernetes.io/name: {deployment}
    app.kubernetes.io/part-of: sluice
spec:
  name: {deployment}
  protocol: seldon
  predictors:
    - name: {predictor}           # "m-" + the first 12 hex digits of the bundle digest
      replicas: 1
      traffic: 100
      componentSpecs:
        - spec:
            containers:
              - name: classifier
                image: {image}
      graph:
        name: classifier
        type: MODEL
        parameters:
          - name: model_uri
            type: STRING
            value: {model_uri}
          - name: model_digest       # the predictor refuses a bundle with another digest
            type: STRING
            value: {digest}
"""


def initial_manifest(
    env: str,
    model_uri: str,
    digest: str,
    deployment: str = "sluice-classifier",
    namespace: str = "sluice",
    image: str = DEFAULT_IMAGE,
) -> str:
    """The first manifest of an environment: one stable predictor, pinned by digest, at 100 %."""
    predictor = predictor_name(digest)
    text = _INITIAL.format(
        env=env,
        deployment=deployment,
        namespace=namespace,
        predictor=predictor,
        image=image,
        model_uri=model_uri,
        digest=digest,
    )
    SeldonDeploymentV1().load(text)  # fails loudly if a value broke the YAML
    return text
