"""The pure core: (state, policy, observations, now) -> Decision. No git, no network, no clock.

A Decision is one of hold, advance, await-approval, promote, rollback or reallocate (a bandit moving traffic),
with the evidence that led to it (every gate's sample, estimate, interval, margin and verdict; the A/B test's
or the bandit's verdict the same way) and, when it changes something, the new traffic layout, the new rollout
annotation and, for a rollback the evidence decided, the quarantine record to write with it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from rollout import evidence
from rollout.gates import BLOCKING, GateContext, GateResult, evaluate_all, stage_stats
from rollout.observations import Observations, PredictorStats
from rollout.policy import Policy
from rollout.quarantine import Entry
from rollout.state import Layout, Rollout, RolloutState
from rollout.strategies import Step, ab, bandit, promoted_layout, rolled_back_layout, steps


class Action(StrEnum):
    HOLD = "hold"
    ADVANCE = "advance"
    AWAIT_APPROVAL = "await-approval"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    REALLOCATE = "reallocate"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    gates: tuple[GateResult, ...] = ()
    layout: Layout | None = None  # new traffic; None leaves the weights as they are
    rollout: Rollout | None = None  # new annotation; None leaves it as it is
    then: Action | None = None  # for await-approval: what approving will do (advance or promote)
    step: str = ""
    quarantine: Entry | None = None  # a rollback decided on evidence: the model to record as quarantined

    @property
    def writes(self) -> bool:
        return self.layout is not None or self.rollout is not None

    @property
    def merge_now(self) -> bool:
        """Everything but a step waiting for a human merges at once (rollbacks above all)."""
        return self.action != Action.AWAIT_APPROVAL

    def summary(self, env: str) -> str:
        what = self.then.value if self.then else self.action.value
        if self.action == Action.HOLD and self.rollout is not None:
            what = {"frozen": "freeze", "paused": "pause"}.get(self.rollout.status, "update")
        head = f"rollout({env}): {what}"
        if self.rollout is not None:
            head += f" {self.rollout.candidate}"
        if self.step:
            head += f" [{self.step}]"
        return head

    def trailers(self) -> list[tuple[str, str]]:
        """Git trailers: one `Sluice-Gate` per gate (A/B test and bandit included), and the quarantine."""
        pairs = evidence.gate_trailers(self.gates)
        if self.quarantine is not None:
            pairs.append((evidence.QUARANTINE, self.quarantine.digest or self.quarantine.predictor))
        return pairs

    def report(self) -> str:
        """Markdown: the reason, the traffic, the evidence table and the trailers (a commit body, a PR body)."""
        lines = [f"**{self.action.value}**: {evidence.one_line(self.reason)}", ""]
        if self.layout is not None:
            weights = ", ".join(f"{s.name}={s.traffic}{' (shadow)' if s.shadow else ''}" for s in self.layout)
            lines += [f"**Traffic**: {weights}", ""]
        if self.quarantine is not None:
            lines += [
                f"**Quarantined**: {self.quarantine.predictor} ({self.quarantine.digest or 'digest unknown'}); "
                "`sluice rollout start` refuses it unless forced.",
                "",
            ]
        lines += evidence.evidence_table(self.gates)
        return evidence.with_trailers("\n".join(lines).rstrip() + "\n", self.trailers())


def current_step(policy: Policy, rollout: Rollout) -> tuple[list[Step], Step | None]:
    plan = steps(policy if policy.strategy == rollout.strategy else policy.with_strategy(rollout.strategy))
    step = plan[rollout.stage] if 0 <= rollout.stage < len(plan) else None
    if step is not None and step.judge == "bandit" and rollout.weight is not None:
        step = dataclasses.replace(step, candidate_weight=rollout.weight)
    return plan, step


def counted_seconds(policy: Policy, rollout: Rollout, now: float) -> float | None:
    """How many seconds back the gates' counts reach: the stage (or the A/B test, or the bandit) since it
    began, less the policy's warm-up; None while the stage is still warming up."""
    counted = now - rollout.entered_at - policy.warmup
    return None if counted <= 0 and policy.warmup > 0 else max(0.0, counted)


def expected_layout(policy: Policy, rollout: Rollout) -> Layout | None:
    _, step = current_step(policy, rollout)
    return None if step is None else step.layout(rollout.stable, rollout.candidate)


def rollback(
    rollout: Rollout,
    reason: str,
    now: float,
    gates: tuple[GateResult, ...] = (),
    quarantine: Entry | None = None,
) -> Decision:
    """Stable back to 100 %, candidate removed. Always available, from any state, without a human."""
    return Decision(
        Action.ROLLBACK,
        reason,
        gates,
        layout=rolled_back_layout(rollout.stable),
        rollout=rollout.evolve(status="rolled-back", message=reason, entered_at=now),
        step="rollback",
        quarantine=quarantine,
    )


def quarantine_entry(state: RolloutState, rollout: Rollout, reason: str, now: float) -> Entry:
    pred = state.predictor(rollout.candidate)
    digest = pred.model_digest if pred is not None and pred.model_digest else ""
    return Entry(digest, rollout.candidate, reason, now, rollout.strategy)


def _fail(
    policy: Policy,
    state: RolloutState,
    rollout: Rollout,
    reason: str,
    now: float,
    gates: tuple[GateResult, ...],
    on_evidence: bool,
) -> Decision:
    if policy.on_failure == "freeze":
        msg = f"frozen: {reason}"
        return Decision(Action.HOLD, msg, gates, rollout=rollout.evolve(status="frozen", message=msg))
    entry = quarantine_entry(state, rollout, reason, now) if on_evidence else None
    return rollback(rollout, reason, now, gates, entry)


def _same(a: Layout, b: Layout) -> bool:
    return sorted(a, key=lambda s: s.name) == sorted(b, key=lambda s: s.name)


def decide(state: RolloutState, policy: Policy, obs: Observations, now: float) -> Decision:
    """The next step of the rollout in `state`. Pure: the same inputs always give the same decision."""
    r = state.rollout
    if r is None or not r.active:
        return Decision(Action.HOLD, "no rollout in progress")
    if r.status == "frozen":
        return Decision(Action.HOLD, r.message or "frozen")

    plan, step = current_step(policy, r)
    if step is None:
        msg = f"paused: stage {r.stage} does not exist in the {r.strategy} plan of this policy ({len(plan)} stages)"
        if r.status == "paused" and r.message == msg:
            return Decision(Action.HOLD, msg)
        return Decision(Action.HOLD, msg, rollout=r.evolve(status="paused", message=msg))
    expected = step.layout(r.stable, r.candidate)
    if not _same(state.layout, expected):
        want = ", ".join(f"{s.name}={s.traffic}{'(shadow)' if s.shadow else ''}" for s in expected)
        found = ", ".join(f"{s.name}={s.traffic}{'(shadow)' if s.shadow else ''}" for s in state.layout)
        msg = (
            f"paused: the manifest was edited by hand mid-rollout: stage {r.stage} ({step.name}) expects "
            f"{want}, found {found}. Restore those weights to resume, or run `sluice rollout abort`."
        )
        if r.status == "paused" and r.message == msg:
            return Decision(Action.HOLD, msg)
        return Decision(Action.HOLD, msg, rollout=r.evolve(status="paused", message=msg), step=step.name)
    if r.status == "paused":
        return Decision(
            Action.HOLD,
            "resumed: the weights match the stage again",
            rollout=r.evolve(status="progressing", message=""),
            step=step.name,
        )

    if r.approval:
        # A human merged the step (e.g. on GitHub) some time after it was proposed: its stage starts now.
        return Decision(
            Action.HOLD,
            f"approved step merged: {step.name} starts now",
            rollout=r.evolve(approval=False, entered_at=now),
            step=step.name,
        )
    in_stage = max(0.0, now - r.entered_at)
    ctx = GateContext(
        candidate=r.candidate,
        stable=r.stable,
        candidate_is_shadow=step.shadow,
        stable_gets_traffic=step.shadow or step.candidate_weight < 100,
        in_stage_for=in_stage,
    )
    results = evaluate_all(policy.gates, obs, ctx)
    failed = [g for g in results if g.verdict == "fail"]
    if failed:
        names = ", ".join(f"{g.gate} ({g.detail})" for g in failed)
        on_evidence = any(g.conclusive for g in failed)
        return _fail(policy, state, r, f"gate failed at {step.name}: {names}", now, results, on_evidence)

    no_data_pass = [g.gate for g in results if g.verdict == "no-data-pass"]
    blocking = [g.gate for g in results if g.verdict in BLOCKING]
    counts = stage_stats(obs)
    if step.judge == "ab":
        verdict = ab.judge(policy.ab, counts.get(r.candidate, _EMPTY), counts.get(r.stable, _EMPTY))
        results = (*results, _ab_result(policy, verdict))
        if verdict.outcome == "stable":
            reason = f"A/B test: {verdict.reason}; the stable model stays"
            return rollback(r, reason, now, results, quarantine_entry(state, r, reason, now))
        if verdict.outcome == "candidate" and not blocking and not no_data_pass:
            return _promote(policy, r, f"A/B test: {verdict.reason}", now, results)
        if in_stage >= policy.ab.max_duration:
            return rollback(
                r,
                f"A/B test: no decision after {policy.ab.max_duration:g}s ({verdict.reason}); stable kept",
                now,
                results,
            )
        wait = (
            verdict.reason
            if verdict.outcome == "undecided"
            else f"gates not ready: {blocking or no_data_pass}"
        )
        return Decision(Action.HOLD, f"A/B test running: {wait}", results, step=step.name)
    if step.judge == "bandit":
        return _bandit(policy, state, r, step, counts, results, blocking + no_data_pass, in_stage, now)

    holding = [g for g in results if g.verdict == "hold"]
    if holding:
        return Decision(
            Action.HOLD, f"waiting for data: {', '.join(g.gate for g in holding)}", results, step=step.name
        )
    if in_stage < step.bake:
        return Decision(
            Action.HOLD,
            f"{step.name}: baking, {step.bake - in_stage:.0f}s of {step.bake:g}s left",
            results,
            step=step.name,
        )
    if r.stage + 1 >= len(plan):
        if no_data_pass:
            return Decision(
                Action.HOLD,
                f"missing data never promotes: no data for {', '.join(no_data_pass)}",
                results,
                step=step.name,
            )
        return _promote(policy, r, f"every stage passed; last: {step.name}", now, results)
    nxt = plan[r.stage + 1]
    layout = nxt.layout(r.stable, r.candidate)
    new = r.evolve(stage=r.stage + 1, entered_at=now, status="progressing", message="")
    reason = f"{step.name} passed; next: {nxt.name}"
    if nxt.approval:
        return Decision(
            Action.AWAIT_APPROVAL,
            reason,
            results,
            layout,
            new.evolve(approval=True),
            then=Action.ADVANCE,
            step=nxt.name,
        )
    return Decision(Action.ADVANCE, reason, results, layout, new, step=nxt.name)


def _promote(
    policy: Policy, r: Rollout, reason: str, now: float, results: tuple[GateResult, ...]
) -> Decision:
    new = r.evolve(status="promoted", stable=r.candidate, entered_at=now, message=reason)
    layout = promoted_layout(r.candidate)
    if policy.approve_promotion:
        return Decision(
            Action.AWAIT_APPROVAL, reason, results, layout, new, then=Action.PROMOTE, step="promotion"
        )
    return Decision(Action.PROMOTE, reason, results, layout, new, step="promotion")


def _ab_result(policy: Policy, v: ab.ABResult) -> GateResult:
    """The A/B test's verdict as one more row of evidence."""
    spec = policy.ab
    verdict = {"candidate": "pass", "stable": "fail", "undecided": "hold"}[v.outcome]
    iv = v.interval
    return GateResult(
        gate="a/b test",
        metric=spec.metric,
        verdict=verdict,  # type: ignore[arg-type]
        compare="difference",
        n_candidate=v.candidate_n,
        n_stable=v.stable_n,
        value=v.candidate_rate,
        baseline=v.stable_rate,
        estimate=None if iv is None else iv.estimate,
        low=None if iv is None else iv.low,
        high=None if iv is None else iv.high,
        limit=-spec.margin,
        better="higher",
        margin=spec.margin,
        confidence=1 - spec.significance,
        method="normal-mixture confidence sequence (mSPRT)"
        if spec.test == "msprt"
        else "fixed-sample z interval",
        detail=v.reason,
        conclusive=v.outcome != "undecided",
    )


def _bandit_result(policy: Policy, v: bandit.BanditResult) -> GateResult:
    spec = policy.bandit
    verdict = {"candidate": "pass", "stable": "fail", "undecided": "hold"}[v.outcome]
    (cs, cn), (ss, sn) = v.candidate, v.stable
    return GateResult(
        gate="bandit",
        metric=spec.metric,
        verdict=verdict,  # type: ignore[arg-type]
        compare="absolute",
        n_candidate=cn,
        n_stable=sn,
        value=cs / cn if cn else None,
        baseline=ss / sn if sn else None,
        estimate=v.p_candidate,
        limit=spec.threshold,
        better="higher",
        margin=spec.margin,
        confidence=spec.threshold,
        method="Thompson sampling on Beta posteriors; estimate = P(candidate best)",
        detail=v.reason,
        conclusive=v.outcome != "undecided",
    )


def _bandit(
    policy: Policy,
    state: RolloutState,
    r: Rollout,
    step: Step,
    counts: dict[str, PredictorStats],
    results: tuple[GateResult, ...],
    waiting: list[str],
    in_test: float,
    now: float,
) -> Decision:
    """Thompson sampling: stop when one arm is best with the policy's probability, else move the weights."""
    spec = policy.bandit
    v = bandit.judge(spec, counts.get(r.candidate, _EMPTY), counts.get(r.stable, _EMPTY))
    results = (*results, _bandit_result(policy, v))
    if v.outcome == "stable":
        reason = f"bandit: {v.reason}"
        return rollback(r, reason, now, results, quarantine_entry(state, r, reason, now))
    if v.outcome == "candidate" and not waiting:
        return _promote(policy, r, f"bandit: {v.reason}", now, results)
    if in_test >= spec.max_duration:
        return rollback(
            r, f"bandit: no decision after {spec.max_duration:g}s ({v.reason}); stable kept", now, results
        )
    current = step.candidate_weight
    if abs(v.weight - current) >= spec.step:
        moved = dataclasses.replace(step, candidate_weight=v.weight)
        name = f"bandit {v.weight}%"
        return Decision(
            Action.REALLOCATE,
            f"bandit: candidate {current}% -> {v.weight}% (P(candidate better) = {v.p_better:.3f}); {v.reason}",
            results,
            layout=moved.layout(r.stable, r.candidate),
            rollout=r.evolve(weight=v.weight),
            step=name,
        )
    wait = f"gates not ready: {waiting}; " if v.outcome == "candidate" else ""
    return Decision(Action.HOLD, f"bandit at {current}%: {wait}{v.reason}", results, step=step.name)


def abort(state: RolloutState, now: float, who: str = "sluice rollout abort") -> Decision:
    """A rollback asked for by a human: from any active state, whatever the metrics say."""
    r = state.rollout
    if r is None or not r.active:
        return Decision(Action.HOLD, "no rollout in progress")
    return rollback(r, f"aborted by {who}", now)


_EMPTY = ab.PredictorStats()
