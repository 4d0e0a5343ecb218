"""A/B test: a fixed split pinned per user key, judged by a two-sided two-proportion z-test.

The metric is a proportion per arm: success rate (successes = requests - 5xx) or accuracy (successes = summed
rewards, rewards in [0, 1], out of the feedback count), counted since the test began. The test is read only
once both arms have `min_sample` observations. With p < `significance` and an absolute difference of at least
`min_effect`, the better arm wins: the candidate is promoted, or the stable model kept (a rollback). With no
winner by `max_duration`, the stable model is kept (a tie never changes the model).

Reading the test at every tick ("peeking") raises the false-positive rate above `significance`; a minimum
sample and a small significance level (0.01 in production) limit it. A sequential test would remove it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from rollout.observations import PredictorStats
from rollout.policy import ABSpec, Policy
from rollout.strategies import Step


def steps(policy: Policy) -> list[Step]:
    return [Step(f"a/b split {policy.ab.split}%", policy.ab.split, 0.0, judge="ab")]


@dataclass(frozen=True)
class ABResult:
    outcome: Literal["candidate", "stable", "undecided"]
    candidate_rate: float | None
    stable_rate: float | None
    candidate_n: float
    stable_n: float
    z: float | None
    p_value: float | None
    reason: str


def two_proportion_z(s1: float, n1: float, s2: float, n2: float) -> tuple[float, float]:
    """(z, two-sided p-value) for H0: p1 == p2, with the pooled standard error."""
    p1, p2 = s1 / n1, s2 / n2
    pooled = (s1 + s2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (p1 - p2) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def _arm(metric: str, s: PredictorStats) -> tuple[float, float]:
    if metric == "success_rate":
        return max(s.requests - s.errors, 0.0), s.requests
    return min(max(s.reward, 0.0), s.feedback), s.feedback


def judge(spec: ABSpec, candidate: PredictorStats, stable: PredictorStats) -> ABResult:
    cs, cn = _arm(spec.metric, candidate)
    ss, sn = _arm(spec.metric, stable)
    if cn < spec.min_sample or sn < spec.min_sample:
        return ABResult(
            "undecided",
            cs / cn if cn else None,
            ss / sn if sn else None,
            cn,
            sn,
            None,
            None,
            f"{spec.metric}: samples {cn:g} (candidate) and {sn:g} (stable), {spec.min_sample} needed per arm",
        )
    z, p = two_proportion_z(cs, cn, ss, sn)
    diff = cs / cn - ss / sn
    base = f"{spec.metric}: candidate {cs / cn:.4f} (n={cn:g}) vs stable {ss / sn:.4f} (n={sn:g}), z={z:.2f}, p={p:.4g}"
    if p < spec.significance and abs(diff) >= spec.min_effect:
        winner: Literal["candidate", "stable"] = "candidate" if diff > 0 else "stable"
        return ABResult(winner, cs / cn, ss / sn, cn, sn, z, p, f"{base}: {winner} wins")
    return ABResult("undecided", cs / cn, ss / sn, cn, sn, z, p, f"{base}: no significant difference yet")
