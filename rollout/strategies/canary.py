"""Canary: the candidate's share of traffic rises stage by stage (e.g. 5, 25, 50 %), each stage baking
behind the gates; after the last stage the candidate is promoted to 100 % and the stable one removed."""

from __future__ import annotations

from rollout.policy import Policy
from rollout.strategies import Step


def steps(policy: Policy) -> list[Step]:
    return [Step(f"canary {s.weight}%", s.weight, s.bake, approval=s.approval) for s in policy.stages]
