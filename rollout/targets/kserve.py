"""The KServe InferenceService target: edits `spec.canary[]` (KServe's named canaries, Standard mode) and the
rollout annotation, with ruamel.yaml's round-trip mode so that comments and key order survive.

How the engine's layouts become an InferenceService (`deployment.kserve` reads it back):

    a candidate is added       spec.canary gets {trafficPercent: 0, predictor: {name, containers}}: a copy of the
                               stable predictor's containers with the candidate's STORAGE_URI and digest
    canary stage / A/B split   the canary's trafficPercent; the stable predictor takes the rest
    shadow                     trafficPercent 0 and `sluice.dev/shadow: "<mirror percent>"` on its predictor
    promotion                  spec.predictor becomes the canary (its name, its containers; the stable
                               predictor's replicas and other settings kept) and the canary entry goes: KServe
                               keeps the canary's pods
    rollback                   the canary entry goes
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from deployment import kserve
from deployment.kserve import CONTAINER, DIGEST_ENV, SHADOW, STORAGE_URI
from deployment.names import predictor_name
from deployment.view import ManifestError
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


class InferenceServiceV1Beta1:
    """`serving.kserve.io/v1beta1` InferenceService, Standard mode, named canaries."""

    def load(self, text: str) -> CommentedMap:
        doc = load(text, kserve.KIND)
        if not isinstance((doc.get("spec") or {}).get("predictor"), CommentedMap):
            raise TargetError("spec.predictor: a mapping is required")
        return doc

    def view(self, doc: CommentedMap) -> kserve.InferenceService:
        try:
            return kserve.parse(doc)
        except ManifestError as e:
            raise TargetError(str(e).removeprefix("<manifest>: ")) from e

    def state(self, text: str) -> RolloutState:
        isvc = self.view(self.load(text))
        predictors = tuple(
            PredictorState(
                name=p.name,
                traffic=p.traffic,
                shadow=p.shadow,
                model_uri=p.model_uri,
                model_digest=p.model_digest,
            )
            for p in isvc.predictors
        )
        return RolloutState(isvc.name, predictors, rollout_of(isvc.annotations), namespace=isvc.namespace)

    def apply(self, text: str, layout: Layout | None, rollout: Rollout | None) -> str:
        doc = self.load(text)
        if layout is not None:
            self._lay_out(doc, layout)
        if rollout is not None:
            annotate(doc, rollout)
        return dump(doc)

    def _lay_out(self, doc: CommentedMap, layout: Layout) -> None:
        spec: CommentedMap = doc["spec"]
        isvc = self.view(doc)
        wanted = {s.name: s for s in layout}
        missing = sorted(set(wanted) - {p.name for p in isvc.predictors})
        if missing:
            raise TargetError(f"spec: no predictor named {missing}")
        canaries: CommentedSeq = spec.get("canary") or CommentedSeq()
        stable = isvc.stable.name
        if stable not in wanted:
            # Promotion: one canary takes all live traffic and becomes spec.predictor.
            full = [s for s in layout if not s.shadow and s.traffic == 100]
            if len(full) != 1:
                raise TargetError(
                    f"spec.predictor: the stable predictor {stable} can leave only when one canary takes all "
                    f"traffic, got {dict((s.name, s.traffic) for s in layout)}"
                )
            at = next(i for i, c in enumerate(canaries) if c["predictor"].get("name") == full[0].name)
            spec["predictor"] = promoted(spec["predictor"], canaries[at]["predictor"])
            del canaries[at]
        elif wanted[stable].shadow:
            raise TargetError(f"spec.predictor: the stable predictor {stable} cannot be a shadow")
        for i in reversed(range(len(canaries))):
            if canaries[i]["predictor"].get("name") not in wanted:
                del canaries[i]
        for entry in canaries:
            slot = wanted[str(entry["predictor"]["name"])]
            entry["trafficPercent"] = 0 if slot.shadow else slot.traffic
            annotations = entry["predictor"].get("annotations")
            if slot.shadow:
                if not isinstance(annotations, CommentedMap):
                    annotations = entry["predictor"]["annotations"] = CommentedMap()
                annotations[SHADOW] = str(slot.traffic)
            elif isinstance(annotations, CommentedMap) and SHADOW in annotations:
                del annotations[SHADOW]
                if not annotations:
                    del entry["predictor"]["annotations"]
        if "canary" in spec and not canaries:
            del spec["canary"]
        after = self.view(doc)
        share = wanted[after.stable.name].traffic
        if after.stable.traffic != share:
            raise TargetError(
                f"spec.predictor: the stable predictor {after.stable.name} takes what the canaries leave "
                f"({after.stable.traffic}%), not {share}%"
            )

    def annotation(self, text: str, key: str) -> str | None:
        return annotation_of(self.load(text), key)

    def annotate(self, text: str, key: str, value: str) -> str:
        doc = self.load(text)
        set_annotation(doc, key, value)
        return dump(doc)

    def add_candidate(self, text: str, name: str, model_uri: str, model_digest: str) -> str:
        doc = self.load(text)
        isvc = self.view(doc)
        if isvc.predictor(name) is not None:
            raise TargetError(f"spec: a predictor named {name} is already there")
        spec: CommentedMap = doc["spec"]
        containers = spec["predictor"].get("containers")
        if not isinstance(containers, CommentedSeq) or not containers:
            raise TargetError(f"spec.predictor.containers: a custom container named {CONTAINER} is required")
        new: CommentedSeq = copy.deepcopy(containers)
        main = next((c for c in new if c.get("name") == CONTAINER), new[0] if len(new) == 1 else None)
        if main is None:
            raise TargetError(f"spec.predictor.containers: no container named {CONTAINER}")
        for c in new:
            _clear_comments(c)
        env = main.setdefault("env", CommentedSeq())
        for key, value in ((STORAGE_URI, model_uri), (DIGEST_ENV, model_digest)):
            entry = next((e for e in env if e.get("name") == key), None)
            if entry is None:
                env.append(CommentedMap([("name", key), ("value", value)]))
            else:
                entry.pop("valueFrom", None)
                entry["value"] = value
        predictor = CommentedMap([("name", name), ("containers", new)])
        entry = CommentedMap([("trafficPercent", 0), ("predictor", predictor)])
        if "canary" in spec and isinstance(spec["canary"], CommentedSeq):
            spec["canary"].append(entry)
        else:
            keys = list(spec.keys())
            spec.insert(keys.index("predictor") + 1, "canary", CommentedSeq([entry]))
        return dump(doc)


def promoted(stable: CommentedMap, canary: Mapping[str, Any]) -> CommentedMap:
    """The stable predictor after a promotion: the canary's predictor as KServe ran it (the stable one with
    the canary's fields over it), keeping the stable predictor's replica settings (the canary ran fixed
    replicas sized to its share) and dropping the shadow marker."""
    out: CommentedMap = copy.deepcopy(stable)
    _merge_into(out, {k: v for k, v in canary.items() if k != "minReplicas"})
    annotations = out.get("annotations")
    if isinstance(annotations, CommentedMap) and SHADOW in annotations:
        del annotations[SHADOW]
        if not annotations:
            del out["annotations"]
    return out


def _merge_into(into: CommentedMap, over: Mapping[str, Any]) -> None:
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), CommentedMap):
            _merge_into(into[key], value)
        elif value not in (None, "", [], {}):
            into[key] = copy.deepcopy(value)


def _clear_comments(node: Any) -> None:
    """A copy's comments describe the original: drop them, recursively."""
    if isinstance(node, CommentedMap | CommentedSeq):
        node.ca.items.clear()
        for child in node.values() if isinstance(node, CommentedMap) else node:
            _clear_comments(child)


_INITIAL = """\
# The {env} environment on KServe: what `sluice up gitops/environments/{env}` runs on one machine and what
# Argo CD applies to a cluster running KServe 0.20+ in Standard mode. The stable model is spec.predictor; a
# candidate is a spec.canary entry (KServe's named canaries: one Deployment and Service per predictor). The
# rollout engine edits only the canaries, their trafficPercent, the shadow marker and the one annotation
# `sluice.dev/rollout`; every change to this file is a Git commit. Written by `sluice rollout init`.
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: {deployment}
  namespace: {namespace}
  labels:
    app.kubernetes.io/name: {deployment}
    app.kubernetes.io/part-of: sluice
  annotations:
    serving.kserve.io/deploymentMode: Standard   # named canaries need it; it cannot change later
spec:
  predictor:
    name: {predictor}              # "m-" + the first 12 hex digits of the bundle digest
    minReplicas: 1
    containers:
      - name: kserve-container
        image: {image}
        command: [python, -m, serving.http.server]
        # KServe's storage initializer copies STORAGE_URI to /mnt/models; the server refuses any other digest
        # and answers the Open Inference Protocol v2 under the InferenceService's name, on port 8080.
        args:
          - --model=/mnt/models
          - --digest=$(SLUICE_MODEL_DIGEST)
          - --name={deployment}
          - --host=0.0.0.0
          - --port=8080
        env:
          - name: STORAGE_URI
            value: {model_uri}
          - name: SLUICE_MODEL_DIGEST
            value: {digest}
          - name: PROTOCOL
            value: v2
        ports:
          - containerPort: 8080
            protocol: TCP
        readinessProbe:
          httpGet:
            path: /v2/health/ready
            port: 8080
"""


def initial_manifest(
    env: str,
    model_uri: str,
    digest: str,
    deployment: str = "sluice-classifier",
    namespace: str = "sluice",
    image: str = DEFAULT_IMAGE,
) -> str:
    """The first InferenceService of an environment: one stable predictor, pinned by digest, at 100 %."""
    text = _INITIAL.format(
        env=env,
        deployment=deployment,
        namespace=namespace,
        predictor=predictor_name(digest),
        image=image,
        model_uri=model_uri,
        digest=digest,
    )
    InferenceServiceV1Beta1().view(InferenceServiceV1Beta1().load(text))  # fails loudly on a broken value
    return text
