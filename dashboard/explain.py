"""Plain sentences for an on-call engineer: one per gate (what was measured, against what, and so what), and
what the rollout does next and when. Pure functions of the decision the reconciler's own rules made.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from rollout.decision import Action, Decision, current_step
from rollout.policy import Gate, Policy
from rollout.state import Rollout
from rollout.telemetry import stage_deadline

PROPORTIONS = frozenset({"success_rate", "accuracy", "disagreement"})


def metric_label(metric: str, gate: Gate | None = None) -> str:
    if metric == "latency":
        q = gate.quantile if gate is not None else 0.99
        return f"p{q * 100:g} latency"
    return {
        "success_rate": "success rate",
        "accuracy": "accuracy on feedback",
        "disagreement": "disagreement with the live model",
        "promql": "custom query",
    }.get(metric, metric.replace("_", " "))


def compare_of(g: Any, gate: Gate | None) -> str:
    found = getattr(g, "compare", None)
    if isinstance(found, str):
        return found
    return gate.comparison if gate is not None else "absolute"


def quantity(x: float | None, metric: str, compare: str, signed: bool = False) -> str:
    """A value in the unit a person reads: percent (points for a difference), milliseconds, or a ratio."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    sign = "+" if signed and x > 0 else ""
    if compare == "ratio":
        return f"{x:.3g}×"
    if metric in PROPORTIONS:
        if compare == "difference":
            return f"{sign}{x * 100:.2f} points"
        return f"{sign}{x * 100:.2f}%"
    if metric == "latency":
        return f"{sign}{x * 1000:.3g} ms"
    return f"{sign}{x:.4g}"


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) else None


@dataclass(frozen=True)
class GateFacts:
    """A gate result as the page shows it, whichever shape of GateResult the engine produced."""

    gate: str
    metric: str
    verdict: str
    compare: str
    n_candidate: float | None
    n_stable: float | None
    value: float | None
    baseline: float | None
    estimate: float | None
    low: float | None
    high: float | None
    limit: float | None
    threshold: str
    margin: float | None
    confidence: float | None
    method: str
    detail: str


def facts(g: Any, gate: Gate | None = None) -> GateFacts:
    compare = compare_of(g, gate)
    value, baseline = _number(getattr(g, "value", None)), _number(getattr(g, "baseline", None))
    estimate = _number(getattr(g, "estimate", None))
    if estimate is None and value is not None:
        if compare == "difference" and baseline is not None:
            estimate = value - baseline
        elif compare == "ratio" and baseline:
            estimate = value / baseline
        elif compare == "absolute":
            estimate = value
    n_candidate = _number(getattr(g, "n_candidate", None))
    if n_candidate is None:
        n_candidate = _number(getattr(g, "sample", None))
    n_stable = _number(getattr(g, "n_stable", None))
    return GateFacts(
        gate=str(g.gate),
        metric=str(g.metric),
        verdict=str(g.verdict),
        compare=compare,
        n_candidate=n_candidate,
        n_stable=n_stable,
        value=value,
        baseline=baseline,
        estimate=estimate,
        low=_number(getattr(g, "low", None)),
        high=_number(getattr(g, "high", None)),
        limit=_number(getattr(g, "limit", None)),
        threshold=str(getattr(g, "threshold", "") or ""),
        margin=_number(getattr(g, "margin", None)),
        confidence=_number(getattr(g, "confidence", None)),
        method=str(getattr(g, "method", "") or ""),
        detail=str(getattr(g, "detail", "") or ""),
    )


def explain(f: GateFacts, gate: Gate | None = None, on_failure: str = "rollback") -> str:
    """One sentence: what the gate measured, against what, and what its verdict means for the rollout."""
    label = metric_label(f.metric, gate)
    q = lambda x, signed=False: quantity(x, f.metric, f.compare, signed)  # noqa: E731
    if f.verdict == "skip":
        return f"{f.gate} is not judged at this stage: {f.detail or 'it does not apply here'}."
    if f.compare == "difference":
        measured = f"the candidate's {label} minus the stable model's is {q(f.estimate, True)}"
    elif f.compare == "ratio":
        measured = f"the candidate's {label} is {q(f.estimate)} the stable model's"
    else:
        measured = f"the candidate's {label} is {q(f.estimate)}"
    if f.low is not None and f.high is not None:
        confidence = f"{f.confidence * 100:g}% " if f.confidence else ""
        measured += f" ({confidence}interval {q(f.low, True)} to {q(f.high, True)})"
    sample = ""
    if f.n_candidate is not None:
        sample = f" on {f.n_candidate:.0f}" + (f" and {f.n_stable:.0f}" if f.n_stable is not None else "")
        sample += " observations"
    against = f"the limit {f.threshold}" if f.threshold and f.threshold != "-" else "its limit"
    if f.estimate is None and f.verdict in ("hold", "no-data-pass", "fail"):
        why = f.detail or "not enough data"
        if f.verdict == "hold":
            return f"{f.gate} waits: {why}."
        if f.verdict == "no-data-pass":
            return f"{f.gate} has no data ({why}) and is set to pass without it: enough to advance, never to promote."
        return f"{f.gate} fails for lack of data ({why}): the rollout is {_failure(on_failure)}."
    match f.verdict:
        case "pass":
            return f"{f.gate} passes: {measured}{sample}, within {against}."
        case "fail":
            return f"{f.gate} fails: {measured}{sample}, beyond {against}, so the rollout is {_failure(on_failure)}."
        case "hold":
            return f"{f.gate} is undecided: {measured}{sample}, not yet clearly on either side of {against}; it waits."
        case "no-data-pass":
            return f"{f.gate} is undecided ({measured}{sample}) and set to pass: enough to advance, never to promote."
    return f"{f.gate}: {f.verdict}; {measured}{sample}."


def _failure(on_failure: str) -> str:
    return "frozen" if on_failure == "freeze" else "rolled back"


# what happens next ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outlook:
    """What the rollout does next (one sentence), and when, if that is known (seconds since the epoch)."""

    action: str
    summary: str
    at: float | None = None


def outlook(
    rollout: Rollout | None,
    policy: Policy | None,
    decision: Decision | None,
    now: float,
    approval: str | None = None,
) -> Outlook:
    """The next step of a rollout. `decision` is what a tick would decide now (None when the metrics were not
    observed); `approval` names a step that waits for a human."""
    if rollout is None or not rollout.active:
        return Outlook("idle", "No rollout in progress: `sluice rollout start` begins one.")
    if rollout.status == "frozen":
        return Outlook(
            "hold", f"Frozen ({rollout.message or 'a gate failed'}): nothing moves until someone aborts."
        )
    if rollout.status == "paused":
        return Outlook("hold", f"Paused: {rollout.message}")
    if approval is not None:
        return Outlook(
            "await-approval",
            f"Waiting for a human to approve {approval}; its stage starts once it is approved.",
        )
    if policy is None:
        return Outlook("unknown", "The policy cannot be read, so the next step is unknown.")
    next_tick = now + policy.interval
    plan, step = current_step(policy, rollout)
    if decision is None:
        deadline = stage_deadline(policy, rollout)
        return Outlook(
            "unknown",
            "Metrics are not configured for the dashboard, so the gates are not shown; "
            + (
                f"the stage must move on by {_clock(deadline)}."
                if deadline
                else "the stage is not in the policy."
            ),
            deadline,
        )
    reason = decision.reason
    match decision.action:
        case Action.ROLLBACK:
            return Outlook("rollback", f"Rolls back at the next tick: {reason}.", next_tick)
        case Action.PROMOTE:
            return Outlook("promote", f"Promotes {rollout.candidate} to 100% at the next tick.", next_tick)
        case Action.ADVANCE:
            return Outlook("advance", f"Advances to {decision.step} at the next tick ({reason}).", next_tick)
        case Action.AWAIT_APPROVAL:
            what = "promotion" if decision.then == Action.PROMOTE else decision.step
            return Outlook(
                "await-approval", f"Proposes {what} for a human to approve at the next tick.", next_tick
            )
    # hold: baking, waiting for data, or an A/B test running
    if step is not None and step.judge == "ab":
        end = rollout.entered_at + policy.ab.max_duration
        return Outlook(
            "hold",
            f"A/B test running ({reason.removeprefix('A/B test running: ')}); it ends when conclusive, "
            f"at the latest at {_clock(end)} (then the stable model stays).",
            end,
        )
    holding = [g for g in decision.gates if g.verdict == "hold"]
    if holding:
        by_name = {g.name: g for g in policy.gates}
        ends = [rollout.entered_at + by_name[g.gate].no_data_deadline for g in holding if g.gate in by_name]
        until = min(ends) if ends else None
        names = ", ".join(g.gate for g in holding)
        then = f"; if still undecided by {_clock(until)} it fails" if until else ""
        return Outlook("hold", f"Waiting for enough data on {names}{then}.", until)
    if step is not None and now - rollout.entered_at < step.bake:
        end = rollout.entered_at + step.bake
        after = "promotion" if rollout.stage + 1 >= len(plan) else plan[rollout.stage + 1].name
        return Outlook(
            "hold", f"Baking {step.name}; {after} at {_clock(end)} if the gates keep passing.", end
        )
    return Outlook("hold", f"Holding: {reason}.", next_tick)


def _clock(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%H:%M:%S UTC", time.gmtime(ts))
