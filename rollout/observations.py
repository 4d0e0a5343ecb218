"""What the metric providers observed: per-predictor counts over a window, in one shape for every provider.

Latency comes as cumulative histogram buckets so that any quantile a gate asks for can be computed here,
the way PromQL's histogram_quantile does (linear interpolation inside the bucket).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PredictorStats:
    requests: float = 0.0
    errors: float = 0.0  # responses with a 5xx code: a model fault; 4xx are the caller's
    buckets: tuple[tuple[float, float], ...] = ()  # (upper bound seconds, cumulative count), sorted
    feedback: float = 0.0
    reward: float = 0.0
    comparisons: float = 0.0  # shadow answers compared with the live model's
    disagreements: float = 0.0

    def success_rate(self) -> float | None:
        return None if self.requests <= 0 else 1.0 - self.errors / self.requests

    def accuracy(self) -> float | None:
        return None if self.feedback <= 0 else self.reward / self.feedback

    def disagreement(self) -> float | None:
        return None if self.comparisons <= 0 else self.disagreements / self.comparisons

    def latency_quantile(self, q: float) -> float | None:
        return histogram_quantile(q, self.buckets)


@dataclass(frozen=True)
class Observations:
    """A provider's answer for one tick: counts over its window, and `stage`, the counts since the stage (or the
    A/B test, or the bandit) began, less the policy's warm-up: what the gates judge."""

    window: float
    predictors: dict[str, PredictorStats] = field(default_factory=dict)
    custom: dict[str, dict[str, float]] = field(default_factory=dict)  # gate name -> predictor -> value
    stage: dict[str, PredictorStats] | None = None
    source: str = ""

    def of(self, name: str) -> PredictorStats:
        return self.predictors.get(name, PredictorStats())


def histogram_quantile(q: float, buckets: tuple[tuple[float, float], ...]) -> float | None:
    """Prometheus' histogram_quantile over cumulative (le, count) buckets; None when there is no sample."""
    from rollout.stats import rank_value

    if not buckets:
        return None
    buckets = tuple(sorted(buckets))
    total = buckets[-1][1]
    if total <= 0:
        return None
    return rank_value(q * total, buckets, beyond_last="last finite")  # as Prometheus


def merge_buckets(
    a: tuple[tuple[float, float], ...], b: tuple[tuple[float, float], ...], sign: float = 1.0
) -> tuple[tuple[float, float], ...]:
    """a + sign*b bucket-wise (used for deltas between two scrapes, and for summing label sets)."""
    out: dict[float, float] = dict(a)
    for le, c in b:
        out[le] = out.get(le, 0.0) + sign * c
    return tuple(sorted(out.items()))
