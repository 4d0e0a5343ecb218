"""Strategies turn a policy into steps: what traffic the candidate gets at each stage, how long it bakes,
whether a human must approve entering it, and how the stage is judged (gates, or an A/B test).

`steps(policy)` is the whole plan; the rollout annotation's `stage` indexes into it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rollout.policy import Policy
from rollout.state import Layout, Slot


@dataclass(frozen=True)
class Step:
    name: str
    candidate_weight: int  # share of live traffic, or the mirror percentage when shadow
    bake: float
    shadow: bool = False
    approval: bool = False  # entering this step waits for `sluice rollout approve`
    judge: Literal["gates", "ab", "bandit"] = "gates"

    def layout(self, stable: str, candidate: str) -> Layout:
        if self.shadow:
            return (Slot(stable, 100), Slot(candidate, self.candidate_weight, shadow=True))
        return (Slot(stable, 100 - self.candidate_weight), Slot(candidate, self.candidate_weight))


def promoted_layout(candidate: str) -> Layout:
    return (Slot(candidate, 100),)


def rolled_back_layout(stable: str) -> Layout:
    return (Slot(stable, 100),)


def steps(policy: Policy) -> list[Step]:
    from rollout.strategies import ab, bandit, bluegreen, canary, shadow

    builders = {
        "canary": canary.steps,
        "shadow": shadow.steps,
        "ab": ab.steps,
        "bluegreen": bluegreen.steps,
        "bandit": bandit.steps,
    }
    return builders[policy.strategy](policy)
