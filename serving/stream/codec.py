"""The wire format of the stream: how an input record, a result and a dead letter look as message fields.

Input: field `data`, a JSON object `{feature: value}` or a JSON list of values in signature order.
Result: `input_id`, `prediction`, `probabilities` (JSON list, class order of the signature), `model_digest`,
`consumer`. Dead letter: `input_id`, `reason`, and the input's fields as they came (`data`, ...).
Kafka carries the same fields as one JSON object in the message value, keyed by the input id.
"""

from __future__ import annotations

import json
from typing import Any

from serving.stream.broker import Message, Outgoing

DATA_FIELD = "data"


class MalformedMessage(ValueError):
    """An input message that is not a record the model could take; the message says why."""


def decode_input(message: Message) -> Any:
    raw = message.fields.get(DATA_FIELD)
    if raw is None:
        fields = ", ".join(sorted(message.fields)) or "none"
        raise MalformedMessage(f"no {DATA_FIELD!r} field (fields: {fields})")
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MalformedMessage(f"field {DATA_FIELD!r} is not valid JSON ({e})") from None
    if not isinstance(value, dict | list):
        raise MalformedMessage(
            f"field {DATA_FIELD!r}: expected a JSON object or list, got {type(value).__name__}"
        )
    return value


def encode_result(
    message: Message, label: Any, probabilities: list[float], digest: str, consumer: str
) -> Outgoing:
    return Outgoing(
        message.id,
        {
            "input_id": message.id,
            "prediction": json.dumps(label),
            "probabilities": json.dumps(probabilities),
            "model_digest": digest,
            "consumer": consumer,
        },
    )


def encode_dead_letter(message: Message, reason: str, consumer: str) -> Outgoing:
    fields = {
        k: v.decode("utf-8", "replace") for k, v in message.fields.items() if k not in ("input_id", "reason")
    }
    return Outgoing(message.id, {**fields, "input_id": message.id, "reason": reason, "consumer": consumer})
