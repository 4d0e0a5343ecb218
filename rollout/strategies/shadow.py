"""Shadow: the candidate is a `shadow: true` predictor that sees mirrored requests and whose answers are
dropped; gates compare it with the live model (errors, latency, disagreement, accuracy on feedback). After
the shadow period the policy's `then` decides: promote at once, or go on as a canary or blue/green."""

from __future__ import annotations

from rollout.policy import Policy
from rollout.strategies import Step, bluegreen, canary


def steps(policy: Policy) -> list[Step]:
    first = Step(
        f"shadow {policy.shadow.mirror}% mirrored", policy.shadow.mirror, policy.shadow.duration, shadow=True
    )
    match policy.shadow.then:
        case "canary":
            return [first, *canary.steps(policy)]
        case "bluegreen":
            # Warm-up is what the shadow period was: go straight to the switch.
            return [first, *bluegreen.steps(policy)[1:]]
    return [first]
