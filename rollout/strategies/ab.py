"""A/B test: a fixed split pinned per user key, judged by an interval on the difference of one metric.

The metric is a proportion per arm: success rate (successes = prediction requests - 5xx) or accuracy
(successes = summed rewards, rewards in [0, 1], out of the feedback count), counted since the test began. The
test is read once both arms have `min_sample` observations. The interval on (candidate - stable) has
confidence 1 - `significance`:

- margin 0 (a superiority test): the candidate wins when the interval lies above 0 and the difference is at
  least `min_effect`; the stable model wins when it lies below 0;
- margin m > 0 (non-inferiority): the candidate is promoted when the interval lies above -m, and the stable
  model is kept (a rollback) when it lies below -m.

With no decision by `max_duration` the stable model is kept (a tie never changes the model).

`test: msprt` uses the normal-mixture confidence sequence of rollout/stats.py: the mixture sequential
probability ratio test (Johari, Pekelis and Walsh, "Always valid inference", 2017) inverted into an interval,
valid however often the reconciler reads it. `test: z` is the classic fixed-sample interval, whose error rate
grows well above `significance` when it is read at every tick ("peeking"); tests/rollout checks both claims
by simulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

from rollout.observations import PredictorStats
from rollout.policy import ABSpec, Policy
from rollout.stats import Interval, difference_cs, mean_variance, msprt_p
from rollout.strategies import Step

__all__ = ["ABResult", "judge", "msprt_p", "steps", "two_proportion_z"]


def steps(policy: Policy) -> list[Step]:
    return [Step(f"a/b split {policy.ab.split}%", policy.ab.split, 0.0, judge="ab")]


@dataclass(frozen=True)
class ABResult:
    outcome: Literal["candidate", "stable", "undecided"]
    candidate_rate: float | None
    stable_rate: float | None
    candidate_n: float
    stable_n: float
    interval: Interval | None
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


def interval(spec: ABSpec, cs: float, cn: float, ss: float, sn: float) -> Interval:
    """The interval on candidate - stable that the test reads (two-sided, confidence 1 - significance)."""
    if spec.test == "msprt":
        return difference_cs(
            cs,
            cn,
            ss,
            sn,
            tau=max(spec.msprt_tau, spec.margin),
            alpha=spec.significance,
            at=-spec.margin,
            one_sided=False,
        )
    diff = cs / cn - ss / sn
    se = math.sqrt(mean_variance(cs, cn) / cn + mean_variance(ss, sn) / sn)
    z = NormalDist().inv_cdf(1 - spec.significance / 2)
    return Interval(diff, diff - z * se, diff + z * se)


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
            f"{spec.metric}: samples {cn:g} (candidate) and {sn:g} (stable), {spec.min_sample} needed per arm",
        )
    iv = interval(spec, cs, cn, ss, sn)
    name = "mSPRT" if spec.test == "msprt" else "z"
    base = (
        f"{spec.metric}: candidate {cs / cn:.4f} (n={cn:g}) vs stable {ss / sn:.4f} (n={sn:g}), "
        f"difference {iv.estimate:+.4f}, {name} interval [{iv.low:+.4f}, {iv.high:+.4f}] at "
        f"{1 - spec.significance:g}"
    )
    if spec.margin > 0:
        if iv.low > -spec.margin:
            return ABResult(
                "candidate",
                cs / cn,
                ss / sn,
                cn,
                sn,
                iv,
                f"{base}: not worse than the margin {spec.margin:g}",
            )
        if iv.high < -spec.margin:
            return ABResult(
                "stable", cs / cn, ss / sn, cn, sn, iv, f"{base}: worse than the margin {spec.margin:g}"
            )
    else:
        if iv.low > 0 and iv.estimate >= spec.min_effect:
            return ABResult("candidate", cs / cn, ss / sn, cn, sn, iv, f"{base}: candidate wins")
        if iv.high < 0:
            return ABResult("stable", cs / cn, ss / sn, cn, sn, iv, f"{base}: stable wins")
    return ABResult("undecided", cs / cn, ss / sn, cn, sn, iv, f"{base}: no decision yet")
