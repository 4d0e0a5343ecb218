"""The confidence sequences behind the gates: each covers the truth at every look with the stated probability
(checked by seeded simulation, read at every look as the reconciler reads it), and the sample-size rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rollout.stats import (
    difference_cs,
    log_beta_binomial_martingale,
    normal_mixture_bound,
    normal_mixture_radius,
    proportion_cs,
    quantile_cs,
    quantile_min_sample,
    quantile_strength,
    rank_band,
    ratio_interval,
)


def test_the_one_sided_bound_lies_between_the_two_sided_radii() -> None:
    for v in (1e-6, 1e-4, 1e-2):
        for alpha in (0.01, 0.05, 0.2):
            r = normal_mixture_bound(v, 0.02, alpha)
            assert normal_mixture_radius(v, 0.02, 2 * alpha) <= r <= normal_mixture_radius(v, 0.02, alpha)
    assert normal_mixture_bound(0.0, 0.02, 0.05) == 0.0


def _ever_beyond(at: float | None, p_cand: float, p_stable: float, limit: float, runs: int = 250) -> float:
    """Share of runs whose lower bound on (candidate - stable) ever exceeds `limit`, read at every look."""
    rng = np.random.default_rng(11)
    looks, per_look = 50, 30  # 10 % of traffic on the candidate, 90 % on the stable model
    cand = rng.binomial(per_look, p_cand, size=(runs, looks)).cumsum(axis=1)
    stable = rng.binomial(9 * per_look, p_stable, size=(runs, looks)).cumsum(axis=1)
    hits = 0
    for r in range(runs):
        for k in range(looks):
            n = per_look * (k + 1)
            iv = difference_cs(cand[r, k], n, stable[r, k], 9 * n, tau=0.02, alpha=0.05, at=at)
            if iv.low > limit:
                hits += 1
                break
    return hits / runs


def test_difference_bounds_hold_at_every_look() -> None:
    # identical arms: the lower bound claims the candidate better than it is in at most 5 % of runs
    assert _ever_beyond(0.0, 0.9, 0.9, 0.0) <= 0.05
    # a candidate exactly at the margin: "not worse than the margin" is claimed in at most 5 % of runs,
    # with the variance taken at the margin (without it, the lucky runs look less variable than they are)
    at_margin = _ever_beyond(-0.02, 0.96, 0.98, -0.02)
    plain = _ever_beyond(None, 0.96, 0.98, -0.02)
    assert at_margin <= 0.05 and at_margin <= plain


def test_the_exact_proportion_sequence_holds_at_every_look() -> None:
    """Ville's inequality: the beta-binomial martingale at the true p ever reaches 1/alpha in <= alpha of runs."""
    rng = np.random.default_rng(5)
    p, alpha, runs, looks, per_look = 0.03, 0.05, 400, 200, 25
    counts = rng.binomial(per_look, p, size=(runs, looks)).cumsum(axis=1)
    limit = math.log(1 / alpha)
    excluded = sum(
        any(
            log_beta_binomial_martingale(counts[r, k], per_look * (k + 1), p, 30.0) >= limit
            for k in range(looks)
        )
        for r in range(runs)
    )
    assert excluded / runs <= alpha
    iv = proportion_cs(0, 200, 0.05)
    assert iv.low == 0.0 and 0.0 < iv.high < 0.05  # 200 clean observations bound the rate below 5 %


def test_the_quantile_rank_band_holds_at_every_look() -> None:
    rng = np.random.default_rng(9)
    q, alpha, runs, looks, per_look = 0.95, 0.05, 300, 80, 25
    truth = -math.log(1 - q)  # the exponential's q-quantile
    below = (rng.exponential(size=(runs, looks * per_look)) <= truth).reshape(runs, looks, per_look)
    counts = below.sum(axis=2).cumsum(axis=1)
    limit = math.log(1 / alpha)
    k = quantile_strength(q)
    excluded = sum(
        any(
            log_beta_binomial_martingale(counts[r, j], per_look * (j + 1), q, k) >= limit
            for j in range(looks)
        )
        for r in range(runs)
    )
    assert excluded / runs <= alpha


def test_quantile_interval_from_buckets_contains_the_truth() -> None:
    rng = np.random.default_rng(3)
    edges = np.concatenate([np.geomspace(1e-4, 1.0, 60), [np.inf]])
    sample = rng.lognormal(mean=math.log(0.002), sigma=0.6, size=20000)
    buckets = tuple((float(le), float((sample <= le).sum())) for le in edges)
    true_p99 = 0.002 * math.exp(0.6 * 2.3263)
    iv = quantile_cs(buckets, 0.99, 0.05)
    assert iv is not None and iv.low <= true_p99 <= iv.high and iv.high / iv.low < 1.3
    assert quantile_cs((), 0.99, 0.05) is None


@pytest.mark.parametrize(
    ("q", "alpha", "expected"), [(0.99, 0.05, 473), (0.95, 0.025, 110), (0.9, 0.025, 54)]
)
def test_the_sample_a_quantile_needs(q: float, alpha: float, expected: int) -> None:
    n = quantile_min_sample(q, alpha)
    assert n == expected
    k = quantile_strength(q)
    assert rank_band(n - 1, q, alpha, k)[1] >= n - 1  # one fewer: no upper bound at all
    assert rank_band(n, q, alpha, k)[1] < n


def test_ratio_of_two_intervals() -> None:
    from rollout.stats import Interval

    r = ratio_interval(Interval(2.0, 1.5, 2.5), Interval(1.0, 0.5, 1.25))
    assert (r.estimate, r.low, r.high) == (2.0, 1.2, 5.0)
    assert ratio_interval(Interval(2.0, 1.5, math.inf), Interval(1.0, 0.0, 1.25)).high == math.inf
