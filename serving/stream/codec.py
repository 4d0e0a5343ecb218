"""The wire format of the stream: how an input record, a result and a dead letter look as message fields.

Input: field `data`, a JSON object `{feature: value}` or a JSON list of values in signature order.
Result: `input_id`, `prediction` (a class label, or a regression's value), `probabilities` (JSON list,
class order of the signature; a classifier's only), `model_digest`, `consumer`. Dead letter: `input_id`, `reason`, and the input's fields as they came (`data`, ...).
Kafka carries the same fields as one JSON object in the message value, keyed by the input id.

Decoding never raises anything but `MalformedMessage`: a record is one row (a flat object or list of
scalars) of at most `MAX_RECORD_BYTES`, and JSON that is nested too deeply or holds an integer beyond
Python's 4300-digit conversion limit is refused with its reason like any other malformed input.
"""

from __future__ import annotations

import json
from typing import Any

from serving.stream.broker import Message, Outgoing

DATA_FIELD = "data"
MAX_RECORD_BYTES = 1 << 20
_SCALARS = (int, float, str, bool, type(None))
_FLOAT_LIMIT = 2**1024  # the smallest integer a float64 cannot hold


class MalformedMessage(ValueError):
    """An input message that is not a record the model could take; the message says why."""


def decode_input(message: Message) -> Any:
    raw = message.fields.get(DATA_FIELD)
    if raw is None:
        fields = ", ".join(sorted(message.fields)) or "none"
        raise MalformedMessage(f"no {DATA_FIELD!r} field (fields: {fields})")
    if len(raw) > MAX_RECORD_BYTES:
        raise MalformedMessage(
            f"field {DATA_FIELD!r} is {len(raw)} bytes, more than a record may have ({MAX_RECORD_BYTES})"
        )
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MalformedMessage(f"field {DATA_FIELD!r} is not valid JSON ({e})") from None
    except RecursionError:
        raise MalformedMessage(f"field {DATA_FIELD!r}: JSON nested too deeply to be a record") from None
    except ValueError as e:  # e.g. an integer longer than the 4300-digit conversion limit
        raise MalformedMessage(f"field {DATA_FIELD!r} cannot be read ({str(e)[:200]})") from None
    if not isinstance(value, dict | list):
        raise MalformedMessage(
            f"field {DATA_FIELD!r}: expected a JSON object or list, got {type(value).__name__}"
        )
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        where = f"feature {key!r}" if isinstance(value, dict) else f"value {key}"
        if not isinstance(item, _SCALARS):
            raise MalformedMessage(
                f"field {DATA_FIELD!r}: {where} is a {type(item).__name__}; a record is one row of values"
            )
        if type(item) is int and not -_FLOAT_LIMIT < item < _FLOAT_LIMIT:
            raise MalformedMessage(
                f"field {DATA_FIELD!r}: {where} is an integer of {len(str(abs(item)))} digits, beyond any number "
                "a model takes"
            )
    return value


def encode_result(
    message: Message, label: Any, probabilities: list[float] | None, digest: str, consumer: str
) -> Outgoing:
    fields = {"input_id": message.id, "prediction": json.dumps(label)}
    if probabilities is not None:  # a regression answers its value alone
        fields["probabilities"] = json.dumps(probabilities)
    return Outgoing(message.id, {**fields, "model_digest": digest, "consumer": consumer})


def encode_dead_letter(message: Message, reason: str, consumer: str) -> Outgoing:
    """The input's fields as they came (bytes that are not UTF-8 shown with replacement characters; Kafka
    dead letters keep the original value bytes, see kafka.py), with the reason and who refused it."""
    fields = {
        k: v.decode("utf-8", "replace")
        for k, v in message.fields.items()
        if k not in ("input_id", "reason", "consumer")
    }
    return Outgoing(message.id, {**fields, "input_id": message.id, "reason": reason, "consumer": consumer})
