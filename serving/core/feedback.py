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
    if given is None:
        if truth is None:
            given = 0.0  # Seldon's Feedback is a protobuf: its JSON form drops a zero reward
        elif correct is None:
            raise RequestError("truth: scoring it needs the `response` (or the `request`) it is about")
        else:
            given = correct / rows
    return Feedback(reward=given, rows=rows, correct=correct)
