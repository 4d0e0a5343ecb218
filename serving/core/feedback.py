"""Feedback scoring: the one rule set for what a feedback message counts, wherever it is counted.

Gates read accuracy on feedback as the sum of rewards over the number of messages
(`seldon_api_model_feedback_reward_total / seldon_api_model_feedback_total`), so a reward is a share of
right answers and lies in [0, 1]: anything outside is refused, never clipped, so one message cannot carry
the weight of many. A message gives its reward, or a truth scored against the labels the model predicted; neither counts 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from serving.core.validation import RequestError, short_repr

REWARD_RANGE = (0.0, 1.0)


@dataclass(frozen=True)
class Feedback:
    reward: float
    rows: int
    correct: int | None  # rows whose truth matched the prediction, when both were given
    error: float | None = None  # a regression: the mean absolute error of the rows, when both were given


def check_reward(value: Any) -> float | None:
    """A feedback message's `reward` field: None when absent, else a number within `REWARD_RANGE`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(f"reward: expected a number, got {short_repr(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        number = math.inf
    low, high = REWARD_RANGE
    if not low <= number <= high:  # NaN fails too
        raise RequestError(
            f"reward: {short_repr(value)} is outside [{low:g}, {high:g}] (a reward is the share of right answers)"
        )
    return number


def score_feedback(reward: Any, truth: Sequence[Any] | None, predicted: Sequence[Any] | None) -> Feedback:
    """The reward to count: the one given (checked), else the share of rows whose truth was predicted.

    No reward and no truth counts 0, as Seldon does: its clients drop a zero reward from the JSON they send.
    """
    given = check_reward(reward)
    correct: int | None = None
    rows = len(truth) if truth is not None else 1
    if truth is not None and predicted is not None:
        if len(truth) != len(predicted):
            raise RequestError(
                f"truth has {len(truth)} rows but the prediction has {len(predicted)}: they must match"
            )
        correct = sum(1 for t, p in zip(truth, predicted, strict=True) if t == p)
    score = None if correct is None else correct / rows
    return Feedback(reward=_settle(given, truth is not None, score), rows=rows, correct=correct)


def _settle(given: float | None, has_truth: bool, score: float | None) -> float:
    """The reward counted: the one given, else the truth's score; no reward and no truth counts 0."""
    if given is not None:
        return given
    if not has_truth:
        return 0.0  # Seldon's Feedback is a protobuf: its JSON form drops a zero reward
    if score is None:
        raise RequestError("truth: scoring it needs the `response` (or the `request`) it is about")
    return score


def score_values(
    reward: Any,
    truth: Sequence[float] | None,
    predicted: Sequence[float] | None,
    bounds: tuple[float, float],
) -> Feedback:
    """Feedback on a regression: the reward given (checked), else how close the prediction came.

    A row scores 1 - |truth - prediction| / (high - low) with the target's physical range from the contract
    (`bounds`), at least 0: a reward in [0, 1] like a classifier's share of right answers, so the gates
    that read accuracy on feedback (`reward_total / feedback_total`) read one minus the mean error, scaled.
    The mean absolute error itself is reported too.
    """
    given = check_reward(reward)
    low, high = bounds
    span = high - low
    if not (math.isfinite(span) and span > 0):
        raise ValueError(f"a regression's target bounds must be a range, got {bounds}")
    error: float | None = None
    score: float | None = None
    rows = len(truth) if truth is not None else 1
    if truth is not None and predicted is not None:
        if len(truth) != len(predicted):
            raise RequestError(
                f"truth has {len(truth)} rows but the prediction has {len(predicted)}: they must match"
            )
        errors = [abs(t - p) for t, p in zip(truth, predicted, strict=True)]
        error = sum(errors) / rows
        score = sum(max(0.0, 1.0 - e / span) for e in errors) / rows
    return Feedback(reward=_settle(given, truth is not None, score), rows=rows, correct=None, error=error)
