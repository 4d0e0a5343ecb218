"""Traffic targets: where weights are written. The engine sees only the `TrafficTarget` Protocol, so other
targets (Seldon v2 Experiment, KServe canaryTrafficPercent, an Istio VirtualService) can be added beside
Seldon Core v1 without touching the engine."""

from __future__ import annotations

from typing import Protocol

from rollout.state import Layout, Rollout, RolloutState


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
