"""The bandit strategy: Thompson sampling's allocation, commits only on a big enough move, and the stop."""

from __future__ import annotations

import math

import pytest
from rollout_factories import CAND, STABLE, T0, obs, policy, state_for

from rollout.decision import Action, decide, expected_layout
from rollout.observations import PredictorStats
from rollout.state import PredictorState, RolloutState, Slot
from rollout.strategies import steps
from rollout.strategies.bandit import judge, prob_greater


def exact_prob_greater(a1: int, b1: int, a2: int, b2: int) -> float:
    """P(X1 > X2) for Beta variables with integer a1 (Evan Miller's closed form)."""

    def lbeta(a: float, b: float) -> float:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)

    total = sum(
        math.exp(lbeta(a2 + i, b1 + b2) - math.log(b1 + i) - lbeta(1 + i, b1) - lbeta(a2, b2))
        for i in range(a1)
    )
    return total


@pytest.mark.parametrize(
    ("a1", "b1", "a2", "b2"), [(3, 2, 2, 3), (40, 12, 35, 17), (901, 101, 881, 121), (1, 1, 1, 1)]
)
def test_probability_of_being_better_is_exact(a1: int, b1: int, a2: int, b2: int) -> None:
    assert prob_greater(a1, b1, a2, b2) == pytest.approx(exact_prob_greater(a1, b1, a2, b2), abs=2e-4)


def test_a_margin_forgives_the_candidate() -> None:
    assert prob_greater(901, 101, 911, 91) < 0.5 < prob_greater(901, 101, 911, 91, shift=0.02)


def bandit_policy(**over: object):  # type: ignore[no-untyped-def]
    spec = {"step": 10, "threshold": 0.95, "min_sample": 100, "max_duration": 600, **over}
    return policy("bandit", gates=[], bandit=spec)


def fb(n: float, good: float) -> PredictorStats:
    return PredictorStats(requests=n, feedback=n, reward=good)


def test_allocation_follows_the_posterior_within_bounds() -> None:
    spec = bandit_policy(min_weight=10, max_weight=90).bandit
    assert judge(spec, fb(0, 0), fb(0, 0)).weight == 50  # no data: the prior says even
    leaning = judge(spec, fb(60, 50), fb(60, 45))
    assert 50 < leaning.weight < 90 and leaning.outcome == "undecided"  # too few to stop
    sure = judge(spec, fb(2000, 1900), fb(2000, 1700))
    assert sure.weight == 90 and sure.outcome == "candidate" and sure.p_candidate > 0.99


def test_the_plan_and_the_bandit_weight_in_git() -> None:
    pol = bandit_policy(start=30)
    (step,) = steps(pol)
    assert step.judge == "bandit" and step.layout(STABLE, CAND) == (Slot(STABLE, 70), Slot(CAND, 30))
    st = state_for(pol, 0)
    moved = st.rollout.evolve(weight=60)  # type: ignore[union-attr]
    assert expected_layout(pol, moved) == (Slot(STABLE, 40), Slot(CAND, 60))


def test_commits_only_when_the_allocation_moves_by_a_step() -> None:
    pol = bandit_policy(start=50)
    st = state_for(pol, 0)
    small = decide(st, pol, obs(fb(40, 34), fb(40, 33.5)), T0 + 10)  # P(better) 0.56: a 6-point move
    assert small.action == Action.HOLD and not small.writes, small.reason
    big = decide(st, pol, obs(fb(80, 76), fb(80, 60)), T0 + 10)
    assert big.action == Action.REALLOCATE and big.rollout is not None and big.rollout.weight is not None
    assert big.rollout.weight >= 60 and big.rollout.entered_at == st.rollout.entered_at  # type: ignore[union-attr]
    assert big.layout == (Slot(STABLE, 100 - big.rollout.weight), Slot(CAND, big.rollout.weight))
    assert "Sluice-Gate: bandit; n=80/80" in big.report()
    # the next tick reads the new weights from the manifest: unchanged data, no new commit
    after = RolloutState("sd", tuple(PredictorState(s.name, s.traffic) for s in big.layout), big.rollout)
    assert not decide(after, pol, obs(fb(80, 76), fb(80, 60)), T0 + 20).writes


def test_stops_when_one_arm_is_best() -> None:
    pol = bandit_policy()
    st = state_for(pol, 0)
    better = decide(st, pol, obs(fb(1000, 950), fb(1000, 900)), T0 + 10)
    assert better.action == Action.PROMOTE and better.layout == (Slot(CAND, 100),)
    worse = decide(st, pol, obs(fb(1000, 880), fb(1000, 950)), T0 + 10)
    assert worse.action == Action.ROLLBACK and worse.quarantine is not None
    assert "the stable model is best" in worse.reason
    tie = obs(fb(1000, 900), fb(1000, 901))
    assert decide(st, pol, tie, T0 + 10).action in (Action.HOLD, Action.REALLOCATE)
    late = decide(st, pol, tie, T0 + 601)
    assert (
        late.action == Action.ROLLBACK and late.quarantine is None and "no decision after 600s" in late.reason
    )


def test_a_margin_lets_an_equal_candidate_through() -> None:
    pol = bandit_policy(margin=0.02)
    st = state_for(pol, 0)
    d = decide(st, pol, obs(fb(3000, 2700), fb(3000, 2700)), T0 + 10)
    assert d.action == Action.PROMOTE and "P(candidate >= stable - 0.02)" in d.reason


def test_gates_still_guard_a_bandit() -> None:
    pol = policy(
        "bandit",
        gates=[{"name": "success", "metric": "success_rate", "margin": 0.01}],
        bandit={"min_sample": 100},
    )
    st = state_for(pol, 0)
    failing = PredictorStats(requests=3000, errors=300, feedback=1000, reward=950)
    d = decide(st, pol, obs(failing, PredictorStats(requests=3000, feedback=1000, reward=900)), T0 + 10)
    assert d.action == Action.ROLLBACK and "success" in d.reason
