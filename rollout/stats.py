"""Anytime-valid statistics: confidence sequences that stay valid however often the reconciler reads them.

A gate is read at every tick. A fixed-sample interval read that way covers the truth far less often than it
claims (each look is another chance to be wrong); a confidence sequence covers it at every look at once:
P(the truth is ever outside the interval) <= 1 - confidence. Three constructions, one per kind of data:

- `difference_cs`: the difference of two arms' means (success rate, accuracy or reward, a custom PromQL mean).
  The normal-mixture boundary of Robbins, which is the mixture sequential probability ratio test (mSPRT) of
  Johari, Pekelis and Walsh ("Always valid inference", 2017) inverted into an interval: with v the variance of
  the estimate and a N(0, tau^2) mixture over the effect, the radius is
  sqrt(2 v (v + tau^2) / tau^2 * (log(1/alpha) + log((v + tau^2) / v) / 2)). Valid as the estimate becomes
  normal (Waudby-Smith et al., "Time-uniform central limit theory", 2021). A gate reads one side at a time
  (pass: the upper bound of "how much worse" below the margin; fail: its lower bound above), so each bound
  is one-sided, from a half-normal mixture, with error 1 - confidence (the pair reads as the 1 - 2 alpha
  interval of equivalence testing). The variance of each arm is bounded
  with the Bhatia-Davis inequality (mean - lo)(hi - mean), the mean taken with one pseudo-observation at each
  end of the range (the Agresti-Caffo adjustment for proportions), so that a run of all-successes does not
  read as zero variance; the candidate's variance is the one it has at the margin's edge (the score test of
  Farrington and Manning), which keeps the error at the margin within its level (tests/rollout checks it).
- `proportion_cs`: one arm's mean of observations in [0, 1] (disagreement rate, an absolute bound). The
  beta-binomial mixture martingale: for each p, the Bernoulli likelihood ratio mixed over a Beta prior centred
  on p (30 pseudo-observations) is a nonnegative supermartingale under p (for any [0, 1] observations, by
  convexity), so by Ville's inequality {p : M_n(p) < 1/alpha} is an exact confidence sequence, with no normal
  approximation: 100 clean answers bound a disagreement rate below 5 %.
- `quantile_cs`: a latency quantile from histogram buckets, by order statistics. At the true q-quantile, the
  count of observations at or below it is Binomial(n, q); the same beta-binomial martingale at p = q gives a
  band of ranks [r_lo, r_hi] that the count stays in at every n, and the quantile lies between the order
  statistics of those ranks (Howard and Ramdas, "Sequential estimation of quantiles", 2022); the prior's strength
  is one tail's worth, 1 / (1 - q). Ranks are mapped to seconds by linear interpolation inside the bucket, as
  Prometheus' histogram_quantile does: bounds by the buckets' edges alone would be sound whatever the latencies
  inside a bucket, but with buckets 2 to 2.5x apart they never decide a margin under 1.5x, so the buckets'
  resolution limits how finely two quantiles can be told apart (benchmarks/results/gates.md shows a 20 % p99
  margin going unresolved). Until r_hi < n there is no upper bound at all: that is the sample a quantile needs
  (`quantile_min_sample`: 473 requests for a p99 at 95 %), which policy validation enforces.

`tau` (and the beta prior's strength) only tune which sample size the sequence is tightest at; validity does
not depend on them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

INF = math.inf


@dataclass(frozen=True)
class Interval:
    """A point estimate and the confidence sequence around it at the current sample."""

    estimate: float
    low: float
    high: float

    def __contains__(self, x: float) -> bool:
        return self.low <= x <= self.high


# normal mixture (mSPRT) --------------------------------------------------------------------------------------
def normal_mixture_radius(v: float, tau: float, alpha: float) -> float:
    """Radius of the two-sided normal-mixture confidence sequence for an estimate of variance `v`."""
    if v <= 0:
        return 0.0
    t2 = tau * tau
    return math.sqrt(2 * v * (v + t2) / t2 * (math.log(1 / alpha) + 0.5 * math.log((v + t2) / v)))


def normal_mixture_bound(v: float, tau: float, alpha: float) -> float:
    """Distance from the estimate to a one-sided confidence bound that holds at every look with 1 - alpha.

    The mixture is half-normal (effects in one direction only), so the likelihood ratio is
    2 Phi(u) sqrt(v / (v + tau^2)) exp(r^2 tau^2 / (2 v (v + tau^2))) with u = r tau / sqrt(v (v + tau^2));
    the bound is where it reaches 1/alpha. It lies between the two-sided radii at 2 alpha and at alpha."""
    if v <= 0:
        return 0.0
    t2 = tau * tau
    limit = math.log(1 / alpha)

    def log_lr(r: float) -> float:
        u = r * tau / math.sqrt(v * (v + t2))
        phi = 0.5 * math.erfc(-u / math.sqrt(2))
        return math.log(2 * phi) - 0.5 * math.log((v + t2) / v) + r * r * t2 / (2 * v * (v + t2))

    lo, hi = normal_mixture_radius(v, tau, min(2 * alpha, 0.999)), normal_mixture_radius(v, tau, alpha)
    for _ in range(24):  # the bracket is within 20 % already: 24 halvings leave < 1e-7 of it
        mid = (lo + hi) / 2
        if log_lr(mid) < limit:
            lo = mid
        else:
            hi = mid
    return hi


def msprt_p(s1: float, n1: float, s2: float, n2: float, tau: float) -> tuple[float, float]:
    """(difference p1 - p2, always-valid p-value) of the mixture SPRT for H0: p1 == p2 (proportions)."""
    p1, p2 = s1 / n1, s2 / n2
    diff = p1 - p2
    v = p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2
    if v == 0:
        return diff, (1.0 if diff == 0 else 0.0)
    t2 = tau * tau
    log_lr = 0.5 * math.log(v / (v + t2)) + diff * diff * t2 / (2 * v * (v + t2))
    return diff, 1.0 if log_lr <= 0 else math.exp(-log_lr)


def bounded_variance(mean: float, lo: float = 0.0, hi: float = 1.0) -> float:
    """The largest variance one observation in [lo, hi] with this mean can have (Bhatia-Davis)."""
    m = min(max(mean, lo), hi)
    return (m - lo) * (hi - m)


def mean_variance(total: float, n: float, lo: float = 0.0, hi: float = 1.0) -> float:
    """Variance bound for one observation of an arm whose observations sum to `total` over `n`, its mean
    taken with one pseudo-observation at each end of the range (so that all-successes is not zero variance)."""
    return bounded_variance((total + lo + hi) / (n + 2), lo, hi)


def difference_cs(
    s1: float,
    n1: float,
    s2: float,
    n2: float,
    tau: float,
    alpha: float,
    lo: float = 0.0,
    hi: float = 1.0,
    at: float | None = None,
    one_sided: bool = True,
) -> Interval:
    """Confidence sequence for mean1 - mean2 (arm 1 the candidate), observations in [lo, hi].

    `at`: the difference the decision is about (the margin's edge). Arm 1's variance is then the one it has
    when the difference is exactly `at` (mean2 + at), as in the Farrington-Manning score test of
    non-inferiority: the variance under the hypothesis being tested, not at the estimate, which near 0 or 1
    looks smallest exactly where the estimate is lucky. (One pseudo-observation keeps it off 0.)
    `one_sided`: each bound holds with 1 - alpha (the pair is a 1 - 2 alpha interval, as in equivalence
    testing); otherwise the interval as a whole holds with 1 - alpha."""
    estimate = s1 / n1 - s2 / n2
    var1 = mean_variance(s1, n1, lo, hi)
    if at is not None:
        edge = (hi - lo) / (n1 + 2)
        null_mean = (s2 + lo + hi) / (n2 + 2) + at
        var1 = bounded_variance(min(max(null_mean, lo + edge), hi - edge), lo, hi)
    v = var1 / n1 + mean_variance(s2, n2, lo, hi) / n2
    r = normal_mixture_bound(v, tau, alpha) if one_sided else normal_mixture_radius(v, tau, alpha)
    span = hi - lo
    return Interval(estimate, max(estimate - r, -span), min(estimate + r, span))


# beta-binomial mixture ------------------------------------------------------------------------------------------
def _lbeta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def log_beta_binomial_martingale(s: float, n: float, p: float, strength: float) -> float:
    """log M_n(p): the Bernoulli likelihood ratio of `s` successes in `n`, mixed over Beta(p k, (1 - p) k)."""
    if p <= 0.0:
        return 0.0 if s <= 0 else INF
    if p >= 1.0:
        return 0.0 if s >= n else INF
    a, b = p * strength, (1 - p) * strength
    return _lbeta(a + s, b + n - s) - _lbeta(a, b) - s * math.log(p) - (n - s) * math.log1p(-p)


def _edge(f: Callable[[float], bool], inside: float, outside: float, tolerance: float) -> float:
    """Bisection for the boundary between `inside` (f true) and `outside` (f false), to `tolerance`."""
    while abs(outside - inside) > tolerance:
        mid = (inside + outside) / 2
        if f(mid):
            inside = mid
        else:
            outside = mid
    return inside


PROPORTION_STRENGTH = 30.0  # the beta prior's pseudo-observations: fixed, never from the data or from n


def proportion_cs(s: float, n: float, alpha: float, strength: float = PROPORTION_STRENGTH) -> Interval:
    """Exact confidence sequence for the mean of observations in [0, 1] (beta-binomial mixture, Ville)."""
    estimate = s / n
    k = strength
    limit = math.log(1 / alpha)

    def inside(p: float) -> bool:
        return log_beta_binomial_martingale(s, n, p, k) < limit

    centre = min(max(estimate, 1e-12), 1 - 1e-12)
    low = 0.0 if inside(1e-12) else _edge(inside, centre, 0.0, 1e-9)
    high = 1.0 if inside(1 - 1e-12) else _edge(inside, centre, 1.0, 1e-9)
    return Interval(estimate, min(low, estimate), max(high, estimate))


@functools.lru_cache(maxsize=1 << 16)
def rank_band(n: float, q: float, alpha: float, strength: float) -> tuple[float, float]:
    """The ranks [r_lo, r_hi] the count at or below the true q-quantile stays within, at every n."""
    limit = math.log(1 / alpha)

    def inside(s: float) -> bool:
        return log_beta_binomial_martingale(s, n, q, strength) < limit

    def excess(s: float) -> float:
        return log_beta_binomial_martingale(s, n, q, strength) - limit

    centre = n * q
    if not inside(centre):  # cannot happen for a prior centred on q, but never return an empty band
        return centre, centre
    sd = math.sqrt(n * q * (1 - q)) or 1.0
    low = 0.0 if inside(0.0) else _root(excess, *_bracket(excess, centre, -sd, 0.0), 1e-3)
    high = n if inside(n) else _root(excess, *_bracket(excess, centre, sd, n), 1e-3)
    return low, high


def _bracket(f: Callable[[float], float], centre: float, step: float, end: float) -> tuple[float, float]:
    """A tight (inside, outside) pair around the crossing, starting from the normal approximation's
    1 and 4 standard deviations out (the crossing is usually between), widening towards `end` if not."""
    inside = centre
    for k in (1.0, 2.0, 4.0, 8.0, 16.0):
        x = centre + k * step
        if (x - end) * step >= 0:
            return inside, end
        if f(x) < 0:
            inside = x
        else:
            return inside, x
    return inside, end


def _root(f: Callable[[float], float], inside: float, outside: float, tolerance: float) -> float:
    """The point where f, negative at `inside` and not at `outside`, crosses 0 (the Illinois method: the
    secant, with the stale end's value halved so it never stalls); the inside end of the final bracket."""
    fi, fo = f(inside), f(outside)
    stale = 0
    while abs(outside - inside) > tolerance:
        x = outside - fo * (outside - inside) / (fo - fi) if fo != fi else (inside + outside) / 2
        if not min(inside, outside) < x < max(inside, outside):
            x = (inside + outside) / 2
        fx = f(x)
        if fx < 0:
            inside, fi = x, fx
            if stale == -1:
                fo /= 2
            stale = -1
        else:
            outside, fo = x, fx
            if stale == 1:
                fi /= 2
            stale = 1
    return inside


def quantile_strength(q: float) -> float:
    """Prior strength for the rank band of the q-quantile: one tail's worth of pseudo-observations (a smaller
    strength bounds the quantile sooner, a larger one narrows the band a little later on)."""
    return 1.0 / (1.0 - q)


def quantile_min_sample(q: float, alpha: float) -> int:
    """Fewest observations for which the q-quantile has an upper confidence bound (r_hi < n)."""
    k = quantile_strength(q)
    lo, hi = 1, 1
    while rank_band(hi, q, alpha, k)[1] >= hi:
        lo, hi = hi, hi * 2
        if hi > 10**9:
            raise ValueError(f"quantile {q} cannot be bounded at alpha {alpha}")
    while lo < hi:
        mid = (lo + hi) // 2
        if rank_band(mid, q, alpha, k)[1] >= mid:
            lo = mid + 1
        else:
            hi = mid
    return hi


def rank_value(
    rank: float, buckets: tuple[tuple[float, float], ...], beyond_last: Literal["inf", "last finite"] = "inf"
) -> float:
    """The value at `rank` (0..total) in sorted cumulative (le, count) buckets, interpolating inside the bucket.

    A rank in the +Inf bucket has no finite value: INF (an upper bound that does not exist), or, as
    Prometheus' histogram_quantile answers, the highest finite bound."""
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return INF if beyond_last == "inf" else prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return INF if beyond_last == "inf" else prev_le


def quantile_cs(buckets: tuple[tuple[float, float], ...], q: float, alpha: float) -> Interval | None:
    """Order-statistic confidence sequence for the q-quantile of a histogram; None without observations."""
    if not buckets:
        return None
    buckets = tuple(sorted(buckets))
    n = buckets[-1][1]
    if n <= 0:
        return None
    r_lo, r_hi = rank_band(n, q, alpha, quantile_strength(q))
    estimate = rank_value(q * n, buckets)
    low = 0.0 if r_lo <= 0 else rank_value(r_lo, buckets)
    high = INF if r_hi >= n else rank_value(r_hi, buckets)
    return Interval(estimate, min(low, estimate), max(high, estimate))


def ratio_interval(num: Interval, den: Interval) -> Interval:
    """num / den from two intervals (each at half the error budget): [num.low / den.high, num.high / den.low]."""
    estimate = num.estimate / den.estimate if den.estimate > 0 else INF
    low = num.low / den.high if den.high > 0 and not math.isinf(den.high) else 0.0
    high = num.high / den.low if den.low > 0 else INF
    return Interval(estimate, min(low, estimate), max(high, estimate))
