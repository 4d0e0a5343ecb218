"""The pure core: (state, policy, observations, now) -> Decision. No git, no network, no clock.

A Decision is one of hold, advance, await-approval, promote or rollback, with the gate report that led to it
and, when it changes something, the new traffic layout and the new rollout annotation to write.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from rollout.gates import BLOCKING, GateContext, GateResult, evaluate_all
from rollout.observations import Observations
from rollout.policy import Policy
from rollout.state import Layout, Rollout, RolloutState
from rollout.strategies import Step, ab, promoted_layout, rolled_back_layout, steps


class Action(StrEnum):
    HOLD = "hold"
    ADVANCE = "advance"
    AWAIT_APPROVAL = "await-approval"
    PROMOTE = "promote"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    gates: tuple[GateResult, ...] = ()
    layout: Layout | None = None  # new traffic; None leaves the weights as they are
    rollout: Rollout | None = None  # new annotation; None leaves it as it is
    then: Action | None = None  # for await-approval: what approving will do (advance or promote)
    step: str = ""

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

    def report(self) -> str:
        """Markdown: the reason and the gate table (a commit body, a pull-request body)."""
        lines = [f"**{self.action.value}**: {self.reason}", ""]
        if self.layout is not None:
            weights = ", ".join(f"{s.name}={s.traffic}{' (shadow)' if s.shadow else ''}" for s in self.layout)
            lines += [f"Traffic: {weights}", ""]
        if self.gates:
            lines += [
                "| gate | metric | value | baseline | threshold | verdict |",
                "|---|---|---|---|---|---|",
            ]
            lines += ["| " + " | ".join(r.row()) + " |" for r in self.gates]
            details = [f"- {r.gate}: {r.detail}" for r in self.gates if r.detail]
            if details:
                lines += ["", *details]
        return "\n".join(lines).rstrip() + "\n"


def current_step(policy: Policy, rollout: Rollout) -> tuple[list[Step], Step | None]:
    plan = steps(policy if policy.strategy == rollout.strategy else policy.with_strategy(rollout.strategy))
    return plan, plan[rollout.stage] if 0 <= rollout.stage < len(plan) else None


def expected_layout(policy: Policy, rollout: Rollout) -> Layout | None:
    _, step = current_step(policy, rollout)
    return None if step is None else step.layout(rollout.stable, rollout.candidate)


def rollback(rollout: Rollout, reason: str, now: float, gates: tuple[GateResult, ...] = ()) -> Decision:
    """Stable back to 100 %, candidate removed. Always available, from any state, without a human."""
    return Decision(
        Action.ROLLBACK,
        reason,
        gates,
        layout=rolled_back_layout(rollout.stable),
        rollout=rollout.evolve(status="rolled-back", message=reason, entered_at=now),
        step="rollback",
    )


def _fail(
    policy: Policy, rollout: Rollout, reason: str, now: float, gates: tuple[GateResult, ...]
) -> Decision:
    if policy.on_failure == "freeze":
        msg = f"frozen: {reason}"
        return Decision(Action.HOLD, msg, gates, rollout=rollout.evolve(status="frozen", message=msg))
    return rollback(rollout, reason, now, gates)


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
        names = ", ".join(f"{g.gate} ({g.detail or f'{g.value:.4g} vs {g.threshold}'})" for g in failed)
        return _fail(policy, r, f"gate failed at {step.name}: {names}", now, results)

    no_data_pass = [g.gate for g in results if g.verdict == "no-data-pass"]
    if step.judge == "ab":
        stage_stats = obs.stage if obs.stage is not None else obs.predictors
        verdict = ab.judge(policy.ab, stage_stats.get(r.candidate, _EMPTY), stage_stats.get(r.stable, _EMPTY))
        blocking = [g.gate for g in results if g.verdict in BLOCKING]
        if verdict.outcome == "stable":
            return rollback(r, f"A/B test: {verdict.reason}; the stable model stays", now, results)
        if verdict.outcome == "candidate" and not blocking and not no_data_pass:
            return _promote(policy, r, f"A/B test: {verdict.reason}", now, results)
        if in_stage >= policy.ab.max_duration:
            return rollback(
                r,
                f"A/B test: no winner after {policy.ab.max_duration:g}s ({verdict.reason}); stable kept",
                now,
                results,
            )
        wait = (
            verdict.reason
            if verdict.outcome == "undecided"
            else f"gates not ready: {blocking or no_data_pass}"
        )
        return Decision(Action.HOLD, f"A/B test running: {wait}", results, step=step.name)

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


def abort(state: RolloutState, now: float, who: str = "sluice rollout abort") -> Decision:
    """A rollback asked for by a human: from any active state, whatever the metrics say."""
    r = state.rollout
    if r is None or not r.active:
        return Decision(Action.HOLD, "no rollout in progress")
    return rollback(r, f"aborted by {who}", now)


_EMPTY = ab.PredictorStats()
