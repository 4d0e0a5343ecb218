"""One feedback rule set: a reward within [0, 1] (the range of the accuracy gates read), or truth scored."""

from __future__ import annotations

import math
from typing import Any

import pytest

from serving.core.feedback import REWARD_RANGE, check_reward, score_feedback
from serving.core.validation import RequestError


def test_reward_given_or_truth_scored() -> None:
    assert score_feedback(0.25, None, None).reward == 0.25
    scored = score_feedback(None, [0, 1, 1, 0], [0, 1, 0, 0])
    assert (scored.reward, scored.rows, scored.correct) == (0.75, 4, 3)
    both = score_feedback(1.0, [1], [0])  # a reward given is the reward counted; correctness is reported
    assert (both.reward, both.correct) == (1.0, 0)
    assert check_reward(None) is None
    assert check_reward(1) == 1.0 and REWARD_RANGE == (0.0, 1.0)


@pytest.mark.parametrize(
    ("reward", "message"),
    [
        (1e12, "reward: 1000000000000.0 is outside [0, 1]"),
        (1.0000001, "is outside [0, 1]"),
        (-1e-9, "is outside [0, 1]"),
        (math.nan, "reward: nan is outside"),
        (math.inf, "reward: inf is outside"),
        pytest.param(10**5000, "reward: <int too long to show> is outside", id="huge-int"),
        (True, "reward: expected a number, got True"),
        ("1.0", "reward: expected a number, got '1.0'"),
    ],
)
def test_rewards_outside_the_metric_range_are_refused(reward: Any, message: str) -> None:
    with pytest.raises(RequestError, match=message.replace("[", r"\[")):
        score_feedback(reward, None, None)


def test_truth_and_prediction_must_agree_in_length_and_truth_needs_a_prediction() -> None:
    with pytest.raises(RequestError, match="truth has 2 rows but the prediction has 1"):
        score_feedback(None, [0, 1], [0])
    with pytest.raises(RequestError, match="truth: scoring it needs the `response`"):
        score_feedback(None, [0, 1], None)
    assert score_feedback(None, None, None).reward == 0.0  # Seldon clients drop a zero reward
