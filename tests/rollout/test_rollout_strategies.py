"""Each strategy's plan, and its decisions through a whole rollout with pure inputs."""

from __future__ import annotations

import pytest
from rollout_factories import CAND, STABLE, T0, healthy, obs, policy, state_for

from rollout.decision import Action, abort, decide
from rollout.observations import PredictorStats
from rollout.state import Slot
from rollout.strategies import steps
from rollout.strategies.ab import judge, two_proportion_z


def run_to_end(pol, good_obs, max_ticks: int = 20) -> list[Action]:  # type: ignore[no-untyped-def]
    """Drive decide() forward, applying each decision's layout, until it promotes or rolls back."""
    actions = []
    stage, now = 0, T0
    for _ in range(max_ticks):
        st = state_for(pol, stage, entered_at=now - 1000)
        d = decide(st, pol, good_obs, now)
        actions.append(d.action)
        if d.action in (Action.PROMOTE, Action.ROLLBACK):
            return actions
        if d.action == Action.ADVANCE:
            assert d.rollout is not None
            stage = d.rollout.stage
        now += 1000
    return actions


def test_canary_plan_and_promotion() -> None:
    pol = policy("canary")
    assert [s.candidate_weight for s in steps(pol)] == [10, 50]
    assert run_to_end(pol, obs(healthy(), healthy())) == [Action.ADVANCE, Action.PROMOTE]


def test_canary_holds_while_baking_and_rolls_back_on_errors() -> None:
    pol = policy("canary")
    d = decide(state_for(pol, 0, entered_at=T0), pol, obs(healthy(), healthy()), T0 + 5)
    assert d.action == Action.HOLD and "baking" in d.reason and not d.writes
    d = decide(state_for(pol, 1, entered_at=T0), pol, obs(healthy(100, 10), healthy()), T0 + 5)
    assert d.action == Action.ROLLBACK and d.layout == (Slot(STABLE, 100),)
    assert d.rollout is not None and d.rollout.status == "rolled-back"
    report = d.report()
    assert "| success | success_rate (absolute) | 100 | 0.9 | [0.78" in report
    assert "Sluice-Gate: success; n=100; estimate=0.9; interval=[0.78" in report
    assert report.rstrip().endswith(f"Sluice-Quarantine: {CAND}")  # rolled back on evidence: quarantined


def test_freeze_instead_of_rollback() -> None:
    pol = policy("canary", on_failure="freeze")
    d = decide(state_for(pol, 1), pol, obs(healthy(100, 10), healthy()), T0 + 50)
    assert (
        d.action == Action.HOLD
        and d.layout is None
        and d.rollout is not None
        and d.rollout.status == "frozen"
    )
    again = decide(state_for(pol, 1, status="frozen"), pol, obs(healthy(), healthy()), T0 + 100)
    assert again.action == Action.HOLD and not again.writes


def test_approval_stage_and_promotion_approval() -> None:
    pol = policy("canary", stages=[{"weight": 10, "bake": 1}, {"weight": 50, "bake": 1, "approval": True}])
    d = decide(state_for(pol, 0), pol, obs(healthy(), healthy()), T0 + 5)
    assert d.action == Action.AWAIT_APPROVAL and d.then == Action.ADVANCE and not d.merge_now
    pol2 = policy("canary", approve_promotion=True)
    d = decide(state_for(pol2, 1), pol2, obs(healthy(), healthy()), T0 + 50)
    assert d.action == Action.AWAIT_APPROVAL and d.then == Action.PROMOTE and d.layout == (Slot(CAND, 100),)


def test_shadow_then_promote_and_disagreement_rollback() -> None:
    pol = policy(
        "shadow",
        gates=[{"name": "agree", "metric": "disagreement", "margin": 0.05, "min_sample": 10}],
    )
    (step,) = steps(pol)
    assert step.shadow and step.layout(STABLE, CAND) == (Slot(STABLE, 100), Slot(CAND, 100, shadow=True))
    agree = PredictorStats(requests=100, comparisons=300, disagreements=1)
    assert run_to_end(pol, obs(agree, healthy())) == [Action.PROMOTE]
    differ = PredictorStats(requests=100, comparisons=100, disagreements=30)
    d = decide(state_for(pol, 0), pol, obs(differ, healthy()), T0 + 50)
    assert d.action == Action.ROLLBACK and "agree" in d.reason


def test_shadow_then_canary_and_bluegreen_plans() -> None:
    assert [(s.candidate_weight, s.shadow) for s in steps(policy("shadow", shadow={"then": "canary"}))] == [
        (100, True),
        (10, False),
        (50, False),
    ]
    bg = steps(policy("shadow", shadow={"then": "bluegreen"}))
    assert [(s.candidate_weight, s.shadow) for s in bg] == [(100, True), (100, False)]


def test_bluegreen_plan_flip_and_rollback() -> None:
    pol = policy("bluegreen", bluegreen={"warmup": 10, "switch": [50, 100], "step_bake": 5, "blue_bake": 20})
    plan = steps(pol)
    assert [s.candidate_weight for s in plan] == [0, 50, 100]
    assert plan[-1].layout(STABLE, CAND) == (Slot(STABLE, 0), Slot(CAND, 100))
    assert run_to_end(pol, obs(healthy(), healthy())) == [Action.ADVANCE, Action.ADVANCE, Action.PROMOTE]
    d = decide(state_for(pol, 2), pol, obs(healthy(100, 50), healthy(0)), T0 + 1)
    assert d.action == Action.ROLLBACK and d.layout == (Slot(STABLE, 100),)


def test_ab_winner_loser_and_tie() -> None:
    pol = policy("ab", gates=[])
    winner = obs(
        stage=None,
        cand=PredictorStats(feedback=500, reward=450),
        stable=PredictorStats(feedback=500, reward=400),
    )
    d = decide(state_for(pol, 0), pol, winner, T0 + 10)
    assert d.action == Action.PROMOTE and "candidate wins" in d.reason
    loser = obs(
        cand=PredictorStats(feedback=500, reward=380), stable=PredictorStats(feedback=500, reward=450)
    )
    assert decide(state_for(pol, 0), pol, loser, T0 + 10).action == Action.ROLLBACK
    tie = obs(cand=PredictorStats(feedback=500, reward=451), stable=PredictorStats(feedback=500, reward=450))
    assert decide(state_for(pol, 0), pol, tie, T0 + 10).action == Action.HOLD
    after = decide(state_for(pol, 0), pol, tie, T0 + 601)
    assert after.action == Action.ROLLBACK and "no decision after 600s" in after.reason
    assert after.quarantine is None  # no evidence against the candidate: not quarantined
    few = obs(cand=PredictorStats(feedback=50, reward=50), stable=PredictorStats(feedback=50, reward=0))
    assert decide(state_for(pol, 0), pol, few, T0 + 10).action == Action.HOLD


def test_two_proportion_z_known_value() -> None:
    # 45/100 vs 30/100: pooled 0.375, se 0.06847, z 2.191, p 0.0285 (textbook example values)
    z, p = two_proportion_z(45, 100, 30, 100)
    assert z == pytest.approx(2.1909, abs=1e-3) and p == pytest.approx(0.02846, abs=1e-4)
    assert two_proportion_z(0, 10, 0, 10) == (0.0, 1.0)


def test_ab_min_effect() -> None:
    spec = policy("ab", ab={"min_sample": 100, "min_effect": 0.2}).ab
    r = judge(spec, PredictorStats(feedback=5000, reward=4600), PredictorStats(feedback=5000, reward=4400))
    assert r.outcome == "undecided" and r.interval is not None and r.interval.low > 0


def test_ab_with_a_margin_promotes_a_model_as_good_and_keeps_a_worse_one() -> None:
    pol = policy("ab", gates=[], ab={"min_sample": 100, "margin": 0.03, "msprt_tau": 0.03})
    same = obs(
        cand=PredictorStats(feedback=3000, reward=2850), stable=PredictorStats(feedback=3000, reward=2850)
    )
    d = decide(state_for(pol, 0), pol, same, T0 + 10)
    assert d.action == Action.PROMOTE and "not worse than the margin 0.03" in d.reason
    ab_row = d.gates[-1]
    assert ab_row.gate == "a/b test" and ab_row.verdict == "pass" and ab_row.limit == -0.03
    worse = obs(
        cand=PredictorStats(feedback=3000, reward=2650), stable=PredictorStats(feedback=3000, reward=2850)
    )
    d = decide(state_for(pol, 0), pol, worse, T0 + 10)
    assert d.action == Action.ROLLBACK and "worse than the margin" in d.reason and d.quarantine is not None
    # the same data without a margin: a tie is no reason to change the model
    strict = policy("ab", gates=[], ab={"min_sample": 100})
    assert decide(state_for(strict, 0), strict, same, T0 + 10).action == Action.HOLD


def test_manual_edit_pauses_then_resumes() -> None:
    pol = policy("canary")
    st = state_for(pol, 0)
    edited = type(st)(
        st.deployment,
        (st.predictors[0].__class__(STABLE, 70), st.predictors[1].__class__(CAND, 30)),
        st.rollout,
    )
    d = decide(edited, pol, obs(healthy(), healthy()), T0 + 50)
    assert d.action == Action.HOLD and d.rollout is not None and d.rollout.status == "paused"
    assert "edited by hand" in d.reason and d.layout is None
    paused = type(st)(st.deployment, edited.predictors, d.rollout)
    assert not decide(paused, pol, obs(healthy(), healthy()), T0 + 60).writes
    restored = type(st)(st.deployment, st.predictors, d.rollout)
    r = decide(restored, pol, obs(healthy(), healthy()), T0 + 70)
    assert r.rollout is not None and r.rollout.status == "progressing"


def test_abort_from_anywhere() -> None:
    pol = policy("canary")
    d = abort(state_for(pol, 1, status="paused"), T0)
    assert d.action == Action.ROLLBACK and d.layout == (Slot(STABLE, 100),)


def _peeking_false_positive_rate(test: str, runs: int = 400, looks: int = 40, batch: int = 50) -> float:
    """Both arms identical (p = 0.8); the test is read after every batch, as the reconciler reads it each tick.
    The share of runs in which it ever declares a winner is its false-positive rate under peeking."""
    import numpy as np

    from rollout.strategies.ab import msprt_p

    rng = np.random.default_rng(7)
    a = rng.binomial(batch, 0.8, size=(runs, looks)).cumsum(axis=1)
    b = rng.binomial(batch, 0.8, size=(runs, looks)).cumsum(axis=1)
    ever = 0
    for r in range(runs):
        for k in range(looks):
            n = batch * (k + 1)
            p = (
                two_proportion_z(a[r, k], n, b[r, k], n)[1]
                if test == "z"
                else msprt_p(a[r, k], n, b[r, k], n, 0.05)[1]
            )
            if p < 0.05:
                ever += 1
                break
    return ever / runs


def test_peeking_inflates_the_z_test_but_not_msprt() -> None:
    z_rate = _peeking_false_positive_rate("z")
    m_rate = _peeking_false_positive_rate("msprt")
    assert z_rate > 0.12, z_rate  # far above the nominal 5 %
    assert m_rate <= 0.05, m_rate


def test_msprt_still_finds_a_real_difference() -> None:
    from rollout.strategies.ab import msprt_p

    assert msprt_p(900, 1000, 800, 1000, 0.05)[1] < 0.001
    assert msprt_p(800, 1000, 800, 1000, 0.05)[1] == 1.0
    pol = policy("ab", gates=[], ab={"min_sample": 100, "test": "msprt", "max_duration": 600})
    assert pol.ab.test == "msprt"  # the default: valid under repeated looks
    win = obs(
        cand=PredictorStats(feedback=1000, reward=900), stable=PredictorStats(feedback=1000, reward=800)
    )
    d = decide(state_for(pol, 0), pol, win, T0 + 10)
    assert d.action == Action.PROMOTE and "mSPRT" in d.reason


def test_the_z_interval_is_narrower_than_the_sequential_one_and_reads_the_same_way() -> None:
    from rollout.strategies.ab import interval

    z = policy("ab", ab={"test": "z"}).ab
    msprt = policy("ab", ab={"test": "msprt"}).ab
    fixed, sequential = interval(z, 900, 1000, 880, 1000), interval(msprt, 900, 1000, 880, 1000)
    assert fixed.estimate == sequential.estimate == pytest.approx(0.02)
    assert fixed.high - fixed.low < sequential.high - sequential.low  # the price of reading it at every tick
    r = judge(z, PredictorStats(feedback=1000, reward=950), PredictorStats(feedback=1000, reward=900))
    assert r.outcome == "candidate" and "z interval" in r.reason
