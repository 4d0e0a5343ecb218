"""Gates: each answers "is the candidate worse than the stable model by more than the margin?" from every
observation since the stage began, with a confidence sequence (rollout/stats.py) so that reading it at every
tick does not multiply false alarms.

Verdicts: `pass` (not worse by more than the margin, at the gate's confidence), `fail` (worse by more than the
margin, at that confidence), `hold` (not known yet), `no-data-pass` (undecided or no data, and the gate says
pass: enough to advance a stage, never to promote), `skip` (the gate does not apply here, e.g. a disagreement
gate when the candidate is not a shadow, an accuracy gate while it is one (no feedback reaches a shadow), or a
relative gate while the stable model gets no traffic).

Every result carries its evidence: the sample on each side, the estimate and interval of the compared value,
the limit the margin sets, and how the interval was computed. Pure: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from rollout.observations import Observations, PredictorStats
from rollout.policy import Gate
from rollout.stats import Interval, difference_cs, proportion_cs, quantile_cs, ratio_interval

Verdict = Literal["pass", "fail", "hold", "no-data-pass", "skip"]
BLOCKING: frozenset[str] = frozenset({"fail", "hold"})
SAMPLE_SUFFIX = " [sample]"  # key of a promql gate's sample query among the custom queries

NORMAL_MIXTURE = "normal-mixture confidence sequence (mSPRT), one-sided bounds"
BETA_BINOMIAL = "beta-binomial confidence sequence (exact)"
ORDER_STATISTICS = "order-statistic confidence sequence on histogram ranks"


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict and the evidence for it, in the units of the compared value.

    The compared value is candidate - stable (`difference`), candidate / stable (`ratio`) or the candidate's
    own value (`absolute`, and disagreement). `limit` is the edge the margin sets on it; `better` says which
    side of the limit is acceptable. `low`/`high` is the confidence sequence at this tick."""

    gate: str
    metric: str
    verdict: Verdict
    compare: str = "absolute"
    n_candidate: float = 0.0
    n_stable: float | None = None  # None: a one-sided gate that does not look at the stable model
    value: float | None = None  # the candidate's measured value
    baseline: float | None = None  # the stable model's
    estimate: float | None = None
    low: float | None = None
    high: float | None = None
    limit: float | None = None
    better: Literal["higher", "lower"] = "higher"
    margin: float = 0.0
    confidence: float = 0.95
    method: str = ""
    detail: str = ""
    conclusive: bool = False  # the verdict came from the interval (not from a no-data or deadline rule)

    def evidence(self) -> dict[str, Any]:
        """The numbers behind the verdict, as plain data (JSON output, reports)."""
        return {
            "compare": self.compare,
            "n_candidate": self.n_candidate,
            "n_stable": self.n_stable,
            "estimate": self.estimate,
            "interval": None if self.low is None or self.high is None else [self.low, self.high],
            "limit": self.limit,
            "better": self.better,
            "margin": self.margin,
            "confidence": self.confidence,
            "method": self.method,
        }

    def but(self, **changes: Any) -> GateResult:
        """This result with some fields changed (a plain copy: cheaper than dataclasses.replace)."""
        fields = dict(self.__dict__)
        fields.update(changes)
        return GateResult(**fields)

    @property
    def sample(self) -> float:
        return self.n_candidate

    @property
    def threshold(self) -> str:
        """The acceptable side of the limit, e.g. `>= -0.02` or `<= 1.5x`."""
        if self.limit is None:
            return "-"
        op = ">=" if self.better == "higher" else "<="
        return f"{op} {self._fmt(self.limit)}"

    def _fmt(self, x: float | None, signed: bool = False) -> str:
        if x is None:
            return "-"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        if self.compare == "ratio":
            return f"{x:.3g}x"
        return f"{x:+.4g}" if signed and self.compare == "difference" else f"{x:.4g}"

    @property
    def sample_text(self) -> str:
        if self.n_stable is None:
            return f"{self.n_candidate:.0f}"
        return f"{self.n_candidate:.0f} / {self.n_stable:.0f}"

    @property
    def estimate_text(self) -> str:
        return self._fmt(self.estimate, signed=True)

    @property
    def interval_text(self) -> str:
        if self.low is None or self.high is None:
            return "-"
        return f"[{self._fmt(self.low, signed=True)}, {self._fmt(self.high, signed=True)}]"

    def row(self) -> tuple[str, str, str, str, str, str, str]:
        """gate, metric, n (candidate / stable), estimate, interval, acceptable, verdict."""
        return (
            self.gate,
            self.metric,
            self.sample_text,
            self.estimate_text,
            self.interval_text,
            self.threshold,
            self.verdict,
        )


@dataclass(frozen=True)
class GateContext:
    """Where the gate is evaluated: who the candidate and stable are and what the current step looks like."""

    candidate: str
    stable: str
    candidate_is_shadow: bool
    stable_gets_traffic: bool
    in_stage_for: float  # seconds since the stage was entered


@dataclass(frozen=True)
class _Arm:
    """One predictor's data for a gate: a sum of observations over a count (or histogram buckets)."""

    total: float
    n: float
    buckets: tuple[tuple[float, float], ...] = ()

    @property
    def mean(self) -> float | None:
        return None if self.n <= 0 else self.total / self.n


def _arm(gate: Gate, name: str, stats: PredictorStats, obs: Observations) -> _Arm:
    match gate.metric:
        case "success_rate":
            return _Arm(max(stats.requests - stats.errors, 0.0), stats.requests)
        case "accuracy":
            return _Arm(min(max(stats.reward, 0.0), stats.feedback), stats.feedback)
        case "disagreement":
            return _Arm(min(stats.disagreements, stats.comparisons), stats.comparisons)
        case "latency":
            buckets = tuple(sorted(stats.buckets))
            return _Arm(0.0, max((c for _, c in buckets), default=0.0), buckets)
        case "promql":
            value = obs.custom.get(gate.name, {}).get(name)
            count = obs.custom.get(gate.name + SAMPLE_SUFFIX, {}).get(name)
            if value is None or count is None or math.isnan(value) or math.isnan(count) or count <= 0:
                return _Arm(0.0, 0.0)
            lo, hi = gate.bounds
            return _Arm(min(max(value, lo), hi) * count, count)
    raise AssertionError(gate.metric)


def stage_stats(obs: Observations) -> dict[str, PredictorStats]:
    """Counts since the stage began when the provider has them, else over its window."""
    return obs.stage if obs.stage is not None else obs.predictors


def _interval(gate: Gate, cand: _Arm, stable: _Arm | None) -> tuple[Interval, float, str]:
    """(interval of the compared value, its limit, method)."""
    compare = gate.comparison
    margin = gate.margin or 0.0
    sign = 1.0 if gate.direction == "higher" else -1.0
    if gate.metric == "latency":
        c = quantile_cs(cand.buckets, gate.quantile, gate.alpha_per_arm)
        assert c is not None
        if stable is None:
            assert gate.max is not None
            return c, gate.max + margin, ORDER_STATISTICS
        s = quantile_cs(stable.buckets, gate.quantile, gate.alpha_per_arm)
        assert s is not None
        if compare == "ratio":
            return ratio_interval(c, s), 1.0 + margin, ORDER_STATISTICS
        diff = Interval(c.estimate - s.estimate, c.low - s.high, c.high - s.low)
        return diff, margin, ORDER_STATISTICS
    lo, hi = gate.bounds if gate.metric == "promql" else (0.0, 1.0)
    if stable is None:  # one arm against a fixed bound: exact, on observations rescaled to [0, 1]
        span = hi - lo
        unit = proportion_cs((cand.total - lo * cand.n) / span, cand.n, gate.alpha)
        interval = Interval(cand.total / cand.n, lo + unit.low * span, lo + unit.high * span)
        if gate.metric == "disagreement":
            return interval, margin, BETA_BINOMIAL
        bound = gate.min if gate.min is not None else gate.max
        assert bound is not None
        return interval, bound - sign * margin, BETA_BINOMIAL
    limit = -sign * margin
    interval = difference_cs(
        cand.total, cand.n, stable.total, stable.n, tau=margin, alpha=gate.alpha, lo=lo, hi=hi, at=limit
    )
    return interval, limit, NORMAL_MIXTURE


def evaluate(gate: Gate, obs: Observations, ctx: GateContext) -> GateResult:
    """One gate, one verdict, with its evidence. Pure."""
    compare = gate.comparison
    relative = compare != "absolute"
    base = GateResult(
        gate=gate.name,
        metric=gate.metric,
        verdict="hold",
        compare=compare,
        better=gate.direction,
        margin=gate.margin or 0.0,
        confidence=gate.confidence,
    )
    if gate.metric == "disagreement" and not ctx.candidate_is_shadow:
        return base.but(verdict="skip", detail="only measured while the candidate is a shadow")
    if gate.metric == "accuracy" and ctx.candidate_is_shadow:
        return base.but(verdict="skip", detail="a shadow's answers are dropped: no feedback reaches it")
    if relative and not ctx.stable_gets_traffic:
        return base.but(verdict="skip", detail="relative gate: the stable model gets no traffic")

    stats = stage_stats(obs)
    cand = _arm(gate, ctx.candidate, stats.get(ctx.candidate, PredictorStats()), obs)
    stable = _arm(gate, ctx.stable, stats.get(ctx.stable, PredictorStats()), obs) if relative else None
    sampled = base.but(
        n_candidate=cand.n,
        n_stable=None if stable is None else stable.n,
        value=_point(gate, cand),
        baseline=None if stable is None else _point(gate, stable),
    )
    needed = max(gate.min_sample, 1)
    missing = ""
    if cand.n < needed:
        missing = f"candidate has {cand.n:g} of {needed} observations needed"
    elif stable is not None and stable.n < needed:
        missing = f"stable has {stable.n:g} of {needed} observations needed"
    if missing:
        verdict, detail = _undecided(gate, ctx, f"no data ({missing})", no_data=True)
        return sampled.but(verdict=verdict, detail=detail)

    interval, limit, method = _interval(gate, cand, stable)
    note = _coarse(gate, cand, stable)
    judged = sampled.but(
        estimate=interval.estimate, low=interval.low, high=interval.high, limit=limit, method=method
    )
    higher = gate.direction == "higher"
    if (interval.low > limit) if higher else (interval.high < limit):
        detail = "not worse than the margin" if relative else "within the bound"
        return judged.but(verdict="pass", detail=detail + note, conclusive=True)
    if (interval.high < limit) if higher else (interval.low > limit):
        detail = "worse than the margin" if relative else "beyond the bound"
        return judged.but(verdict="fail", detail=f"{detail}: {_side(interval, limit)}{note}", conclusive=True)
    verdict, detail = _undecided(gate, ctx, "undecided: the interval contains the limit")
    return judged.but(verdict=verdict, detail=detail + note)


def _coarse(gate: Gate, cand: _Arm, stable: _Arm | None) -> str:
    """A warning when a latency gate's margin is finer than the histogram buckets around the quantile: inside
    a bucket the seconds are interpolated (as histogram_quantile does), so such a margin is not resolved."""
    if gate.metric != "latency" or gate.comparison != "ratio":
        return ""
    edges = [le for le, _ in cand.buckets if not math.isinf(le)]
    estimate = _point(gate, cand)
    if estimate is None:
        return ""
    lower = max((le for le in edges if le < estimate), default=0.0)
    upper = min((le for le in edges if le >= estimate), default=math.inf)
    if lower > 0 and upper / lower > 1 + (gate.margin or 0.0):
        return (
            f" (the histogram bucket around the p{gate.quantile * 100:g}, {lower:g}-{upper:g} s, is wider than "
            f"the margin of {gate.margin:g}: inside it the seconds are interpolated, as histogram_quantile does)"
        )
    return ""


def _side(interval: Interval, limit: float) -> str:
    return f"[{interval.low:.4g}, {interval.high:.4g}] vs limit {limit:.4g}"


def _point(gate: Gate, arm: _Arm) -> float | None:
    if arm.n <= 0:
        return None
    if gate.metric == "latency":
        from rollout.observations import histogram_quantile

        return histogram_quantile(gate.quantile, arm.buckets)
    return arm.total / arm.n


def _undecided(gate: Gate, ctx: GateContext, why: str, no_data: bool = False) -> tuple[Verdict, str]:
    """What an undecided gate does now: hold inside its deadline, then resolve by its `no_data` rule."""
    if gate.no_data == "pass":
        return "no-data-pass", f"{why}; gate says pass (advances a stage, never promotes)"
    if no_data and gate.no_data == "fail":
        return "fail", f"{why}; gate says fail"
    if ctx.in_stage_for < gate.no_data_deadline:
        left = gate.no_data_deadline - ctx.in_stage_for
        return "hold", f"{why}; waiting {left:.0f}s more"
    return "fail", f"{why}; deadline {gate.no_data_deadline:g}s passed"


def evaluate_all(gates: list[Gate], obs: Observations, ctx: GateContext) -> tuple[GateResult, ...]:
    return tuple(evaluate(g, obs, ctx) for g in gates)


def custom_queries(gates: list[Gate]) -> dict[str, str]:
    """The PromQL templates a provider must answer for these gates: each promql gate's value and sample."""
    out: dict[str, str] = {}
    for g in gates:
        if g.metric == "promql" and g.query and g.sample_query:
            out[g.name] = g.query
            out[g.name + SAMPLE_SUFFIX] = g.sample_query
    return out
