"""A/B test: a fixed split pinned per user key, judged by a two-sided two-proportion z-test.

The metric is a proportion per arm: success rate (successes = requests - 5xx) or accuracy (successes = summed
rewards, rewards in [0, 1], out of the feedback count), counted since the test began. The test is read only
once both arms have `min_sample` observations. With p < `significance` and an absolute difference of at least
`min_effect`, the better arm wins: the candidate is promoted, or the stable model kept (a rollback). With no
winner by `max_duration`, the stable model is kept (a tie never changes the model).

Reading a fixed-horizon z-test at every tick ("peeking") raises its false-positive rate well above
`significance`; a minimum sample and a small significance level limit that. `test: msprt` removes it: the
mixture sequential probability ratio test (Johari, Pekelis and Walsh, "Always valid inference", 2017) with a
normal mixing distribution N(0, tau^2) over the difference of proportions gives a p-value that is valid at
every look, computed from the current totals alone (the engine keeps no history; using the current value
rather than the running minimum only makes it more conservative). tests/rollout checks both claims by
simulation.
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


def msprt_p(s1: float, n1: float, s2: float, n2: float, tau: float) -> tuple[float, float]:
    """(difference p1 - p2, always-valid p-value) of the mixture SPRT for H0: p1 == p2."""
    p1, p2 = s1 / n1, s2 / n2
    diff = p1 - p2
    v = p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2
    if v == 0:
        return diff, (1.0 if diff == 0 else 0.0)
    t2 = tau * tau
    log_lr = 0.5 * math.log(v / (v + t2)) + diff * diff * t2 / (2 * v * (v + t2))
    return diff, 1.0 if log_lr <= 0 else math.exp(-log_lr)


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
    name = "z-test"
    if spec.test == "msprt":
        _, p = msprt_p(cs, cn, ss, sn, spec.msprt_tau)
        name = "mSPRT"
    base = (
        f"{spec.metric}: candidate {cs / cn:.4f} (n={cn:g}) vs stable {ss / sn:.4f} (n={sn:g}), "
        f"{name} z={z:.2f}, p={p:.4g}"
    )
    if p < spec.significance and abs(diff) >= spec.min_effect:
        winner: Literal["candidate", "stable"] = "candidate" if diff > 0 else "stable"
        return ABResult(winner, cs / cn, ss / sn, cn, sn, z, p, f"{base}: {winner} wins")
    return ABResult("undecided", cs / cn, ss / sn, cn, sn, z, p, f"{base}: no significant difference yet")
