"""Feedback attribution: which predictor answered the request a feedback is about, read from what the answer
carried, never from one router replica's memory.

In order: the answer's `meta.tags.sluice_predictor` (the router puts it in every Seldon v1 answer), the
`x-seldon-route` header the caller sends back, and the predictor named in a puid the router made (the
answer's `meta.puid`, or the `seldon-puid` header). A feedback that names none is sent to the one live
predictor when there is only one, and refused otherwise: guessing by weight would credit the stable model
with the candidate's feedback.

The reward must be a finite number inside the accuracy metric's range [0, 1]: one message with a reward of
1e12 would otherwise pass any accuracy gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from deployment import wire
from serving.core.feedback import check_reward
from serving.core.validation import RequestError
from serving.router import puid as puids


class FeedbackError(ValueError):
    """A feedback the router refuses (always the caller's mistake: a 4xx)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class FeedbackClaim:
    """What a feedback says: the predictor it names (None: it names none), how it named it, the reward."""

    predictor: str | None
    source: str
    reward: float


def reward_of(doc: dict[str, Any]) -> float:
    """The feedback's reward under the one feedback rule (serving.core.feedback); absent: 0, as in Seldon."""
    try:
        reward = check_reward(doc.get("reward"))
    except RequestError as e:
        raise FeedbackError(400, f"field {e}") from None
    return 0.0 if reward is None else reward


def read_claim(body: bytes, route_header: str | None, puid_header: str | None) -> FeedbackClaim:
    """Parse a Seldon v1 feedback body and say which predictor it is about."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise FeedbackError(400, f"feedback body is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise FeedbackError(400, "feedback body must be a JSON object with request, response, reward, truth")
    reward = reward_of(doc)
    response = doc.get("response")
    meta = response.get("meta") if isinstance(response, dict) else None
    if meta is not None and not isinstance(meta, dict):
        raise FeedbackError(400, f"field response.meta: expected an object, got {type(meta).__name__}")
    tags = meta.get("tags") if meta else None
    named = tags.get(wire.PREDICTOR_TAG) if isinstance(tags, dict) else None
    if named is not None:
        if not isinstance(named, str):
            raise FeedbackError(
                400, f"field response.meta.tags.{wire.PREDICTOR_TAG}: expected a string, got {named!r}"
            )
        return FeedbackClaim(named, f"response.meta.tags.{wire.PREDICTOR_TAG}", reward)
    if route_header:
        return FeedbackClaim(route_header, f"header {wire.SELDON_ROUTE_HEADER}", reward)
    for value, where in ((meta.get("puid") if meta else None, "response.meta.puid"), (puid_header, "")):
        if isinstance(value, str):
            found = puids.predictor_of(value)
            if found is not None:
                return FeedbackClaim(found, where or f"header {wire.PUID_HEADER}", reward)
    return FeedbackClaim(None, "", reward)
