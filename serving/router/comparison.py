"""Compare a shadow's answer with the live answer to the same request: do they predict the same classes?

Both answers are read by `serving.protocols.labels`, the reader feedback scoring uses too (Seldon v1
`data.ndarray` / `data.tensor` / `jsonData`, Open Inference Protocol v2 `outputs[]`). An answer we cannot
read is not counted (None), so a gate never sees made-up data.
"""

from __future__ import annotations

from typing import Any

import orjson

from serving.core.validation import RequestError
from serving.protocols.labels import Label, predicted_labels


def decisions(body: bytes | dict[str, Any]) -> list[Label] | None:
    """The predicted class of each row in an answer, or None when the body holds no readable prediction."""
    try:
        doc = orjson.loads(body) if isinstance(body, bytes | bytearray | memoryview) else body
        return predicted_labels(doc)
    except (orjson.JSONDecodeError, RequestError):
        return None


def disagree(live: bytes | dict[str, Any], shadow: bytes | dict[str, Any]) -> bool | None:
    """True when any row's predicted class differs; None when either answer is unreadable."""
    a, b = decisions(live), decisions(shadow)
    if a is None or b is None:
        return None
    return a != b
