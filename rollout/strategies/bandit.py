"""Bandit: Thompson sampling on the feedback reward, with the allocation written to Git as weights.

Each arm's reward (accuracy: summed rewards in [0, 1] over the feedback count; or success rate) since the
test began gives a Beta posterior (the policy's `prior` plus successes and failures). Thompson sampling sends
each request to an arm with the probability that the arm is the better one; here that probability, computed
exactly by numerical integration rather than by sampling, becomes the candidate's weight for the next stretch
of traffic (clamped to [min_weight, max_weight] so that both arms keep learning). The weight is committed only
when it moves by at least `step` points, so the history stays readable.

The test stops when the posterior probability that one arm is best reaches `threshold`: the candidate is
promoted, or rolled back. With a `margin`, "best" forgives the candidate up to that much: it is promoted when
P(candidate >= stable - margin) reaches the threshold, and rolled back when P(stable > candidate + margin)
does. A posterior probability is not a frequentist error rate under repeated looks; benchmarks/gates.py
measures how often the bandit's stop is wrong, and its regret against a fixed 50/50 A/B test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rollout.observations import PredictorStats
from rollout.policy import BanditSpec, Policy
from rollout.strategies import Step


def steps(policy: Policy) -> list[Step]:
    return [Step("bandit", policy.bandit.start, 0.0, judge="bandit")]


@dataclass(frozen=True)
class BanditResult:
    outcome: Literal["candidate", "stable", "undecided"]
    p_candidate: float  # P(candidate >= stable - margin): the candidate is best, margin forgiven
    p_better: float  # P(candidate > stable): Thompson sampling's allocation, before clamping
    weight: int  # the candidate's share of traffic Thompson sampling asks for, clamped
    candidate: tuple[float, float]  # (successes, observations)
    stable: tuple[float, float]
    reason: str


def _arm(metric: str, s: PredictorStats) -> tuple[float, float]:
    if metric == "success_rate":
        return max(s.requests - s.errors, 0.0), s.requests
    return min(max(s.reward, 0.0), s.feedback), s.feedback


def _log_pdf(x: np.ndarray, a: float, b: float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return (
            (a - 1) * np.log(x)
            + (b - 1) * np.log1p(-x)
            - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
        )


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)))


def prob_greater(a1: float, b1: float, a2: float, b2: float, shift: float = 0.0, points: int = 4001) -> float:
    """P(X1 > X2 - shift) for independent X1 ~ Beta(a1, b1), X2 ~ Beta(a2, b2), by numerical integration.

    On one grid g covering both X1 and X2 - shift (12 standard deviations each side):
    P = integral of f2(g + shift) * (1 - F1(g)) dg."""
    sd1 = math.sqrt(a1 * b1 / ((a1 + b1) ** 2 * (a1 + b1 + 1)))
    sd2 = math.sqrt(a2 * b2 / ((a2 + b2) ** 2 * (a2 + b2 + 1)))
    m1, m2 = a1 / (a1 + b1), a2 / (a2 + b2) - shift
    lo = min(max(m1 - 12 * sd1, 0.0), max(m2 - 12 * sd2, -shift))
    hi = max(min(m1 + 12 * sd1, 1.0), min(m2 + 12 * sd2, 1.0 - shift))
    grid = np.linspace(lo, hi, points)
    in1 = (grid > 0) & (grid < 1)
    f1 = np.where(in1, np.exp(_log_pdf(np.clip(grid, 1e-300, 1 - 1e-16), a1, b1)), 0.0)
    cdf1 = np.concatenate(([0.0], np.cumsum((f1[1:] + f1[:-1]) / 2 * np.diff(grid))))
    y = grid + shift
    in2 = (y > 0) & (y < 1)
    f2 = np.where(in2, np.exp(_log_pdf(np.clip(y, 1e-300, 1 - 1e-16), a2, b2)), 0.0)
    total1, total2 = cdf1[-1], _trapezoid(f2, grid)
    if total1 <= 0 or total2 <= 0:  # all mass inside one grid cell: compare the means
        return 1.0 if m1 > m2 else 0.0
    survive = 1.0 - np.minimum(cdf1 / total1, 1.0)
    return float(min(max(_trapezoid(f2 * survive, grid) / total2, 0.0), 1.0))


def allocation(spec: BanditSpec, p_better: float) -> int:
    return int(min(max(round(100 * p_better), spec.min_weight), spec.max_weight))


def judge(spec: BanditSpec, candidate: PredictorStats, stable: PredictorStats) -> BanditResult:
    cs, cn = _arm(spec.metric, candidate)
    ss, sn = _arm(spec.metric, stable)
    a0, b0 = spec.prior
    ac, bc = a0 + cs, b0 + cn - cs
    a_s, b_s = a0 + ss, b0 + sn - ss
    p_better = prob_greater(ac, bc, a_s, b_s)
    p_candidate = prob_greater(ac, bc, a_s, b_s, shift=spec.margin) if spec.margin else p_better
    weight = allocation(spec, p_better)
    rates = f"{spec.metric}: candidate {cs:g}/{cn:g}, stable {ss:g}/{sn:g}"
    forgive = f" - {spec.margin:g}" if spec.margin else ""
    told = f"P(candidate >= stable{forgive}) = {p_candidate:.3f}"
    if cn < spec.min_sample or sn < spec.min_sample:
        why = f"{rates}; {told}; {spec.min_sample} observations per arm needed to stop"
        return BanditResult("undecided", p_candidate, p_better, weight, (cs, cn), (ss, sn), why)
    if p_candidate >= spec.threshold:
        why = f"{rates}; {told} reached {spec.threshold:g}: the candidate is best"
        return BanditResult("candidate", p_candidate, p_better, weight, (cs, cn), (ss, sn), why)
    if 1 - p_candidate >= spec.threshold:
        why = f"{rates}; P(stable best) = {1 - p_candidate:.3f} reached {spec.threshold:g}: the stable model is best"
        return BanditResult("stable", p_candidate, p_better, weight, (cs, cn), (ss, sn), why)
    return BanditResult("undecided", p_candidate, p_better, weight, (cs, cn), (ss, sn), f"{rates}; {told}")
