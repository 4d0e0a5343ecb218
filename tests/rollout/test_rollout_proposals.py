"""The pure rules beside decide(): settling pending proposals, the first step of a rollout, and the trailers a
proposal carries. Plain values, no git, no clock."""

from __future__ import annotations

import pytest
from rollout_factories import CAND, STABLE, T0, policy, state_for

from rollout import evidence
from rollout.decision import Action, Decision
from rollout.proposals import (
    RolloutError,
    approved,
    opening,
    recovered_action,
    repaired,
    settle,
    trailers,
)
from rollout.scm import Proposal
from rollout.state import PredictorState, Rollout, RolloutState

REV, OLD = "c" * 40, "d" * 40
CAND_DIGEST = "sha256:" + "b" * 64


def proposal(name: str, kind: str = "auto", base: str = REV, action: str | None = "advance") -> Proposal:
    return Proposal("prod", name, name, kind, f"rollout(prod): {action} {CAND}", base, action=action)  # type: ignore[arg-type]


ADVANCE = Decision(
    Action.ADVANCE, "canary 10% passed", rollout=state_for(policy()).rollout, step="canary 50%"
)
HOLD = Decision(Action.HOLD, "baking")
ROLLBACK = Decision(
    Action.ROLLBACK,
    "gate failed",
    rollout=Rollout("canary", CAND, STABLE, 0, T0, "rolled-back"),
    step="rollback",
)


def test_no_pending_writes_the_decision() -> None:
    s = settle("prod", state_for(policy()), [], REV, ADVANCE)
    assert s.write and s.decision is ADVANCE and s.merge is None and not s.discard


def test_a_step_a_crash_left_on_this_main_is_finished_for_its_trailer_action() -> None:
    left = proposal("a", action="promote")
    s = settle("prod", state_for(policy()), [left], REV, HOLD)
    assert s.merge == left and not s.write
    assert s.decision.action == Action.PROMOTE and "left unmerged" in s.decision.reason


def test_a_step_without_a_trailer_or_on_an_older_main_is_discarded() -> None:
    legacy, old = proposal("legacy", action=None), proposal("old", base=OLD)
    s = settle("prod", state_for(policy()), [legacy, old], REV, ADVANCE)
    assert s.merge is None and s.write
    assert [(p.name, why) for p, why in s.discard] == [
        ("legacy", f"stale (no {evidence.ACTION} trailer)"),
        ("old", "stale"),
    ]


def test_an_approval_waits_and_stale_steps_go() -> None:
    waiting, stale = proposal("w", kind="approval", base=OLD), proposal("s", base=OLD)
    s = settle("prod", state_for(policy()), [waiting, stale], REV, ADVANCE)
    assert not s.write and s.waiting == (waiting,) and [p for p, _ in s.discard] == [stale]
    assert s.decision.action == Action.AWAIT_APPROVAL and "meanwhile: canary 10% passed" in s.decision.reason


def test_a_rollback_discards_everything_and_is_written() -> None:
    pending = [proposal("w", kind="approval"), proposal("a")]
    s = settle("prod", state_for(policy()), pending, REV, ROLLBACK)
    assert s.write and s.decision is ROLLBACK and s.merge is None
    assert [p for p, _ in s.discard] == pending


def test_with_no_rollout_only_a_start_awaiting_approval_on_this_main_waits() -> None:
    idle = RolloutState("sd", (PredictorState(STABLE, 100),))
    start, old, auto = proposal("s", "approval"), proposal("o", "approval", base=OLD), proposal("a")
    s = settle("prod", idle, [start, old, auto], REV, HOLD)
    assert s.waiting == (start,) and [p for p, _ in s.discard] == [old, auto]
    assert (
        s.decision.action == Action.AWAIT_APPROVAL
        and "sluice rollout approve --env prod" in s.decision.reason
    )


def test_recovered_actions() -> None:
    assert recovered_action(proposal("x", action="rollback")) == Action.ROLLBACK
    assert recovered_action(proposal("x", action="destroy")) is None
    assert repaired(proposal("x", action="advance"), merged=False).action == Action.HOLD
    assert approved(proposal("x", kind="approval", action="promote")).action == Action.PROMOTE
    with pytest.raises(RolloutError, match="no Sluice-Action trailer"):
        approved(proposal("x", kind="approval", action=None))


def test_trailers_name_what_merging_does_and_the_base() -> None:
    waiting = Decision(Action.AWAIT_APPROVAL, "r", then=Action.PROMOTE)
    assert trailers(waiting, REV) == [(evidence.ACTION, "promote"), (evidence.BASE, REV)]
    assert trailers(ROLLBACK, OLD)[0] == (evidence.ACTION, "rollback")


def test_a_reason_cannot_forge_a_trailer() -> None:
    body = evidence.with_trailers(
        "**hold**: x\n\nSluice-Action: promote", [(evidence.ACTION, "hold\nSluice-Action: promote")]
    )
    assert evidence.parse_trailers(body) == [
        ("Sluice-Action", "promote"),
        ("Sluice-Action", "hold Sluice-Action: promote"),
    ]
    assert evidence.trailer(body, evidence.ACTION) == "hold Sluice-Action: promote"  # the last one wins


def test_new_trailers_join_an_existing_trailer_paragraph() -> None:
    body = "report\n\nSluice-Gate: success; decision=pass\n"
    out = evidence.with_trailers(body, [(evidence.ACTION, "advance")])
    assert evidence.parse_trailers(out) == [
        ("Sluice-Gate", "success; decision=pass"),
        ("Sluice-Action", "advance"),
    ]
    prose = evidence.with_trailers("Traffic: a=90, b=10\n", [(evidence.ACTION, "advance")])
    assert prose.endswith("Traffic: a=90, b=10\n\nSluice-Action: advance\n")


def test_opening_a_rollout() -> None:
    pol = policy(stages=[{"weight": 10, "bake": 0, "approval": True}, {"weight": 50, "bake": 0}])
    idle = RolloutState("sd", (PredictorState(STABLE, 100), PredictorState("m-cccccccccccc", 0)))
    first = opening("prod", idle, pol, CAND_DIGEST, "models:/m/2", T0)
    d = first.decision
    assert d.action == Action.AWAIT_APPROVAL and d.then == Action.ADVANCE and d.step == "canary 10%"
    assert (
        d.rollout is not None
        and d.rollout.candidate == CAND
        and d.rollout.stable == STABLE
        and d.rollout.approval
    )
    assert first.reset is not None and [s.name for s in first.reset] == [
        STABLE
    ]  # a leftover predictor goes first
    assert first.title == f"rollout(prod): start canary {CAND} [canary 10%]"
    with pytest.raises(RolloutError, match="abort it first"):
        opening("prod", state_for(pol), pol, CAND_DIGEST, "u", T0)
    with pytest.raises(RolloutError, match="already the stable model"):
        opening("prod", idle, pol, "sha256:" + "a" * 64, "u", T0)
