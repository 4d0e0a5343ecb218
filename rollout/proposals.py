"""Pure rules beside decide(): what to do with proposals already written, and how a rollout begins.

A tick finds the proposals earlier runs left open and settles them before it writes anything: a step a crash
left unmerged, decided on the very main commit the tick reads, is finished (merged for the action its
`Sluice-Action` trailer names); a step that waits for a human keeps waiting; anything else is stale and is
discarded. A safety decision (rollback, freeze, pause) discards every pending step and is written at once.
No git, no network, no clock: the shell (reconciler.py) carries out what these functions return.
"""

from __future__ import annotations

from dataclasses import dataclass

from deployment.names import predictor_name
from rollout import evidence
from rollout.decision import Action, Decision
from rollout.policy import Policy
from rollout.scm import Proposal
from rollout.state import Layout, Rollout, RolloutState, Slot
from rollout.strategies import steps


class RolloutError(RuntimeError):
    """Something a human must fix before the rollout can go on; the message says what."""


@dataclass(frozen=True)
class Settlement:
    """What a tick does with the pending proposals, and the decision it reports (and writes, if `write`)."""

    decision: Decision
    write: bool = False
    merge: Proposal | None = None  # a step a crash left unmerged, decided on the current main: finish it
    discard: tuple[tuple[Proposal, str], ...] = ()  # (proposal, why)
    waiting: tuple[Proposal, ...] = ()  # steps waiting for a human


def is_safety(decision: Decision) -> bool:
    """Rollbacks and the holds that stop a rollout (freeze, pause) never wait behind anything."""
    return decision.action == Action.ROLLBACK or (
        decision.rollout is not None and decision.rollout.status in ("frozen", "paused")
    )


def merged_action(decision: Decision) -> Action:
    """What merging the proposal of `decision` does: for a step waiting for approval, what approving does."""
    return decision.then or decision.action


def trailers(decision: Decision, base: str) -> list[tuple[str, str]]:
    """The trailers every proposal carries: its action and the main commit its decision was made on."""
    return [(evidence.ACTION, merged_action(decision).value), (evidence.BASE, base)]


def recovered_action(proposal: Proposal) -> Action | None:
    """The action a proposal's trailer names; None when it names none (or one this version does not know)."""
    try:
        return Action(proposal.action) if proposal.action else None
    except ValueError:
        return None


def _approval_hint(env: str, waiting: Proposal) -> str:
    return f"waiting for approval of {waiting.name} (`sluice rollout approve --env {env}`)"


def settle(
    env: str, state: RolloutState, pending: list[Proposal], revision: str, decision: Decision
) -> Settlement:
    """The pending proposals of `env`, the state and the decision made on main at `revision` -> what to do."""
    r = state.rollout
    if r is None or not r.active:
        # Only a start that waits for approval, proposed on this very main, may be pending now.
        waiting = tuple(p for p in pending if p.kind == "approval" and p.base == revision)
        stale = tuple((p, "no rollout in progress") for p in pending if p not in waiting)
        if waiting:
            wait = Decision(Action.AWAIT_APPROVAL, _approval_hint(env, waiting[-1]))
            return Settlement(wait, discard=stale, waiting=waiting)
        return Settlement(decision, discard=stale)

    if is_safety(decision):
        return Settlement(
            decision, write=decision.writes, discard=tuple((p, decision.reason) for p in pending)
        )
    if not pending:
        return Settlement(decision, write=decision.writes)

    approvals = tuple(p for p in pending if p.kind == "approval")
    discard: list[tuple[Proposal, str]] = []
    for p in pending:
        if p.kind != "auto":
            continue
        if p.base == revision and not approvals and recovered_action(p) is not None:
            return Settlement(repaired(p, merged=True), merge=p, discard=tuple(discard))
        why = "stale" if recovered_action(p) is not None else f"stale (no {evidence.ACTION} trailer)"
        discard.append((p, why))
    if approvals:
        wait = Decision(
            Action.AWAIT_APPROVAL,
            f"{_approval_hint(env, approvals[-1])}; meanwhile: {decision.reason}",
            decision.gates,
            step=decision.step,
        )
        return Settlement(wait, discard=tuple(discard), waiting=approvals)
    return Settlement(decision, write=decision.writes, discard=tuple(discard))


def repaired(proposal: Proposal, merged: bool) -> Decision:
    """The decision a tick reports when it finishes (or fails to finish) a step an earlier run wrote."""
    action = recovered_action(proposal) or Action.HOLD
    if not merged:
        return Decision(Action.HOLD, f"{proposal.name} ({action.value}) is written but cannot be merged yet")
    return Decision(action, f"merged {proposal.name} ({proposal.title}), left unmerged by an earlier run")


def approved(proposal: Proposal) -> Decision:
    """What `sluice rollout approve` did: the action the approved step's trailer names."""
    action = recovered_action(proposal)
    if action is None:
        raise RolloutError(
            f"{proposal.name} carries no {evidence.ACTION} trailer: it was not written by this reconciler "
            "(or by an older one); merge or close it by hand"
        )
    return Decision(action, f"approved {proposal.name}")


@dataclass(frozen=True)
class Opening:
    """The first step of a rollout: the decision to write, its title, and the layout to reset to first (the
    stable predictor alone, when predictors of an older rollout are still in the manifest)."""

    decision: Decision
    title: str
    reset: Layout | None = None


def opening(
    env: str,
    state: RolloutState,
    policy: Policy,
    digest: str,
    candidate_uri: str,
    now: float,
) -> Opening:
    """The first step of a rollout of the bundle `digest` into `env`, whose manifest is in `state`."""
    if state.rollout is not None and state.rollout.active:
        r = state.rollout
        raise RolloutError(
            f"{env}: a {r.strategy} rollout of {r.candidate} is {r.status}; "
            f"abort it first (`sluice rollout abort --env {env}`)"
        )
    stable = state.stable_name()
    name = predictor_name(digest)
    if name == stable:
        raise RolloutError(f"{env}: {name} is already the stable model")
    leftovers = [p.name for p in state.predictors if p.name != stable]
    first = steps(policy)[0]
    sticky = policy.ab.sticky_key if policy.strategy == "ab" else None
    rollout = Rollout(policy.strategy, name, stable, 0, now, "progressing", "", now, sticky, first.approval)
    decision = Decision(
        Action.AWAIT_APPROVAL if first.approval else Action.ADVANCE,
        f"start {policy.strategy} of {name} ({candidate_uri}) against {stable}",
        layout=first.layout(stable, name),
        rollout=rollout,
        then=Action.ADVANCE if first.approval else None,
        step=first.name,
    )
    title = f"rollout({env}): start {policy.strategy} {name} [{first.name}]"
    return Opening(decision, title, (Slot(stable, 100),) if leftovers else None)
