"""Blue/green: green (the candidate) runs at 0 % for a warm-up while the gates check it on smoke or pinned
traffic; traffic then switches at once (or along a short schedule); blue stays at 0 % for a bake time so that
rollback is one flip, and is then retired by the promotion."""

from __future__ import annotations

from rollout.policy import Policy
from rollout.strategies import Step


def steps(policy: Policy) -> list[Step]:
    spec = policy.bluegreen
    out = [Step("green warm-up at 0%", 0, spec.warmup)]
    for i, w in enumerate(spec.switch):
        last = w == 100
        name = "green 100%, blue kept at 0%" if last else f"switch {w}% to green"
        out.append(
            Step(name, w, spec.blue_bake if last else spec.step_bake, approval=spec.approval and i == 0)
        )
    return out
