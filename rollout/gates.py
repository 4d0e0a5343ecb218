"""Metric gates: each turns observations of the candidate (and of the stable predictor) into a GateResult.

Verdicts: `pass`, `fail`, `hold` (no data yet, inside the gate's deadline), `no-data-pass` (no data and the
gate says pass: enough to advance a stage, never to promote), `skip` (the gate does not apply here, e.g. a
disagreement gate when the candidate is not a shadow, or a relative gate while the stable gets no traffic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from rollout.observations import Observations, PredictorStats
from rollout.policy import Gate

Verdict = Literal["pass", "fail", "hold", "no-data-pass", "skip"]
BLOCKING: frozenset[str] = frozenset({"fail", "hold"})


@dataclass(frozen=True)
class GateResult:
    gate: str
    metric: str
    value: float | None
    baseline: float | None
    threshold: str
    verdict: Verdict
    sample: float = 0.0
    detail: str = ""

    def row(self) -> tuple[str, str, str, str, str, str]:
        def fmt(x: float | None) -> str:
            return "-" if x is None else f"{x:.4g}"

        return (self.gate, self.metric, fmt(self.value), fmt(self.baseline), self.threshold, self.verdict)


@dataclass(frozen=True)
class GateContext:
    """Where the gate is evaluated: who the candidate and stable are and what the current step looks like."""

    candidate: str
    stable: str
    candidate_is_shadow: bool
    stable_gets_traffic: bool
    in_stage_for: float  # seconds since the stage was entered


def threshold_text(gate: Gate) -> str:
    subject = {"absolute": "value", "difference": "value - stable", "ratio": "value / stable"}[gate.compare]
    if gate.min is not None and gate.max is not None:
        return f"{gate.min:g} <= {subject} <= {gate.max:g}"
    if gate.min is not None:
        return f"{subject} >= {gate.min:g}"
    return f"{subject} <= {gate.max:g}"


def _measure(gate: Gate, name: str, stats: PredictorStats, obs: Observations) -> tuple[float | None, float]:
    """(value, sample size) of one predictor for this gate's metric."""
    match gate.metric:
        case "success_rate":
            return stats.success_rate(), stats.requests
        case "latency":
            return stats.latency_quantile(gate.quantile), stats.requests
        case "accuracy":
            return stats.accuracy(), stats.feedback
        case "disagreement":
            return stats.disagreement(), stats.comparisons
        case "promql":
            value = obs.custom.get(gate.name, {}).get(name)
            ok = value is not None and not math.isnan(value)
            return (value if ok else None), (math.inf if ok else 0.0)
    raise AssertionError(gate.metric)


def evaluate(gate: Gate, obs: Observations, ctx: GateContext) -> GateResult:
    """One gate, one verdict. Pure."""
    threshold = threshold_text(gate)

    def result(verdict: Verdict, value: float | None, baseline: float | None, sample: float, detail: str):
        return GateResult(gate.name, gate.metric, value, baseline, threshold, verdict, sample, detail)

    if gate.metric == "disagreement" and not ctx.candidate_is_shadow:
        return result("skip", None, None, 0, "only measured while the candidate is a shadow")
    if gate.compare != "absolute" and not ctx.stable_gets_traffic:
        return result("skip", None, None, 0, "relative gate: the stable predictor gets no traffic")

    value, sample = _measure(gate, ctx.candidate, obs.of(ctx.candidate), obs)
    baseline: float | None = None
    missing = ""
    if value is None or sample < max(gate.min_sample, 1):
        missing = f"candidate has {sample:g} of {max(gate.min_sample, 1)} observations needed"
    elif gate.compare != "absolute":
        baseline, base_sample = _measure(gate, ctx.stable, obs.of(ctx.stable), obs)
        if baseline is None or base_sample < max(gate.min_sample, 1):
            missing = f"stable has {base_sample:g} of {max(gate.min_sample, 1)} observations needed"
    if missing:
        if gate.no_data == "pass":
            return result("no-data-pass", value, baseline, sample, f"no data ({missing}); gate says pass")
        if gate.no_data == "hold" and ctx.in_stage_for < gate.no_data_deadline:
            left = gate.no_data_deadline - ctx.in_stage_for
            return result("hold", value, baseline, sample, f"no data ({missing}); waiting {left:.0f}s more")
        why = "gate says fail" if gate.no_data == "fail" else f"deadline {gate.no_data_deadline:g}s passed"
        return result("fail", value, baseline, sample, f"no data ({missing}); {why}")

    assert value is not None
    compared = value
    if gate.compare == "difference":
        assert baseline is not None
        compared = value - baseline
    elif gate.compare == "ratio":
        assert baseline is not None
        compared = (1.0 if value == 0 else math.inf) if baseline == 0 else value / baseline
    low_ok = gate.min is None or compared >= gate.min
    high_ok = gate.max is None or compared <= gate.max
    verdict: Verdict = "pass" if low_ok and high_ok else "fail"
    detail = "" if gate.compare == "absolute" else f"compared value {compared:.4g}"
    return result(verdict, value, baseline, sample, detail)


def evaluate_all(gates: list[Gate], obs: Observations, ctx: GateContext) -> tuple[GateResult, ...]:
    return tuple(evaluate(g, obs, ctx) for g in gates)
