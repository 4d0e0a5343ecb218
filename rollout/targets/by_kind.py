"""The target an environment's reconciler runs with: whichever kind of manifest it is given."""

from __future__ import annotations

from deployment import kinds
from rollout.state import Layout, Rollout, RolloutState
from rollout.targets import TargetError, TrafficTarget


def target_for(text: str) -> TrafficTarget:
    """The target for a manifest, by its kind (TargetError when it holds no deployment Sluice edits)."""
    kind = kinds.kind_of(text)
    if kind == "InferenceService":
        from rollout.targets.kserve import InferenceServiceV1Beta1

        return InferenceServiceV1Beta1()
    if kind == "SeldonDeployment":
        from rollout.targets.seldon import SeldonDeploymentV1

        return SeldonDeploymentV1()
    raise TargetError(f"expected a deployment manifest (kind: {' or '.join(kinds.KINDS)})")


class ByKind:
    """The target of whichever manifest it is given: what an environment's reconciler runs with."""

    def state(self, text: str) -> RolloutState:
        return target_for(text).state(text)

    def apply(self, text: str, layout: Layout | None, rollout: Rollout | None) -> str:
        return target_for(text).apply(text, layout, rollout)

    def add_candidate(self, text: str, name: str, model_uri: str, model_digest: str) -> str:
        return target_for(text).add_candidate(text, name, model_uri, model_digest)

    def annotation(self, text: str, key: str) -> str | None:
        return target_for(text).annotation(text, key)

    def annotate(self, text: str, key: str, value: str) -> str:
        return target_for(text).annotate(text, key, value)
