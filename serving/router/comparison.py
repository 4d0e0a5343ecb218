"""Compare a shadow's answer with the live answer to the same request: do they predict the same classes?

Works on the JSON bodies of both protocols: Seldon v1 (`data.ndarray` / `data.tensor` / `jsonData`) and the
Open Inference Protocol v2 (`outputs[]`). A label output is compared when there is one; otherwise each row's
most probable class. An answer we cannot read is not counted (None), so a gate never sees made-up data.
"""

from __future__ import annotations

from typing import Any

import orjson

LABEL_KEYS = ("label", "labels", "class", "classes", "predict", "prediction", "predictions")


def decisions(body: bytes | dict[str, Any]) -> list[Any] | None:
    """The predicted class of each row in an answer, or None when the body holds no readable prediction."""
    try:
        doc = orjson.loads(body) if isinstance(body, bytes | bytearray | memoryview) else body
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    if isinstance(doc.get("outputs"), list):
        return _v2(doc["outputs"])
    data = doc.get("data")
    if isinstance(data, dict):
        if "ndarray" in data:
            return _rows(data["ndarray"], data.get("names"))
        tensor = data.get("tensor")
        if isinstance(tensor, dict) and isinstance(tensor.get("values"), list):
            return _shaped(tensor["values"], tensor.get("shape"))
        return None
    json_data = doc.get("jsonData")
    if isinstance(json_data, dict):
        for key in LABEL_KEYS:
            if key in json_data:
                value = json_data[key]
                return value if isinstance(value, list) else [value]
        return None
    return None


def disagree(live: bytes | dict[str, Any], shadow: bytes | dict[str, Any]) -> bool | None:
    """True when any row's predicted class differs; None when either answer is unreadable."""
    a, b = decisions(live), decisions(shadow)
    if a is None or b is None:
        return None
    return a != b


def _v2(outputs: list[Any]) -> list[Any] | None:
    named = {o.get("name"): o for o in outputs if isinstance(o, dict)}
    for key in LABEL_KEYS:
        if key in named and isinstance(named[key].get("data"), list):
            return _flat(named[key]["data"])
    for o in named.values():
        if isinstance(o.get("data"), list):
            return _shaped(_flat(o["data"]), o.get("shape"))
    return None


def _rows(rows: Any, names: Any) -> list[Any] | None:
    if not isinstance(rows, list):
        return None
    if isinstance(names, list) and names:
        lowered = [str(n).lower() for n in names]
        for key in LABEL_KEYS:
            if key in lowered:
                i = lowered.index(key)
                return [r[i] if isinstance(r, list) and len(r) > i else r for r in rows]
    out = []
    for r in rows:
        if isinstance(r, list):
            if not r:
                return None
            out.append(_argmax(r) if len(r) > 1 else r[0])
        else:
            out.append(r)
    return out


def _shaped(values: list[Any], shape: Any) -> list[Any] | None:
    if isinstance(shape, list) and len(shape) == 2 and shape[1] > 1 and shape[0] * shape[1] == len(values):
        width = int(shape[1])
        return [_argmax(values[i : i + width]) for i in range(0, len(values), width)]
    return values


def _flat(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    for d in data:
        if isinstance(d, list):
            out.extend(_flat(d))
        else:
            out.append(d)
    return out


def _argmax(row: list[Any]) -> int | None:
    try:
        return max(range(len(row)), key=lambda i: float(row[i]))
    except (TypeError, ValueError):
        return None
