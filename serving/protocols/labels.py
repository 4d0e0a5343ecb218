"""Read class labels out of answers: the one reader for Seldon v1 and Open Inference Protocol v2 bodies.

Feedback scoring reads the response a client got and its truth with it; the shadow comparison reads the live
and the shadow answers with it. A label output or column is taken when the answer has one (v2 output or v1
column named `label`, `class`, `prediction`...; v1 `jsonData.labels`); otherwise each row's most probable
class, named by `classes` when given, else by the answer's own column names (ours are the class labels),
else by its position. An answer that holds no readable labels raises `RequestError` naming what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from serving.core.validation import MAX_MAGNITUDE, RequestError, check_shape

Label = int | str
LABEL_KEYS = ("label", "labels", "class", "classes", "predict", "prediction", "predictions")


def predicted_labels(
    answer: Any, classes: Sequence[Label] | None = None, where: str = "response"
) -> list[Label]:
    """The predicted class of each row of a v1 or v2 answer (a parsed JSON object)."""
    if not isinstance(answer, Mapping):
        raise RequestError(f"{where}: expected an answer object, got {_type(answer)}")
    outputs = answer.get("outputs")
    if isinstance(outputs, list):
        return _v2(outputs, classes, where)
    data = answer.get("data")
    if isinstance(data, Mapping):
        names = data.get("names")
        names = [str(n) for n in names] if isinstance(names, list) else []
        rows = _v1_rows(data, where)
        lowered = [n.lower() for n in names]
        for key in LABEL_KEYS:
            if key in lowered and rows.ndim == 2 and rows.shape[1] == len(names):
                return _as_labels(rows[:, lowered.index(key)], where)
        return _from_rows(rows, classes or _class_names(names) or None, where)
    json_data = answer.get("jsonData")
    if isinstance(json_data, Mapping):
        for key in LABEL_KEYS:
            if key in json_data:
                value = json_data[key]
                return _as_labels(
                    np.asarray(value if isinstance(value, list) else [value], dtype=object), where
                )
        raise RequestError(f"{where}: jsonData holds no labels (expected one of {', '.join(LABEL_KEYS)})")
    if isinstance(json_data, list):
        return _from_rows(_numbers(json_data, where, labels_ok=True), classes, where)
    raise RequestError(f"{where}: expected outputs (v2), data.ndarray, data.tensor or jsonData (v1)")


def truth_labels(message: Any, classes: Sequence[Label] | None = None, where: str = "truth") -> list[Label]:
    """The true class of each row, from a v1 message: a column or list of labels (not scores).

    With `classes` given, a label that is not one of them is refused (it could never count as right).
    """
    values = _truth_rows(message, where, labels_ok=True)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise RequestError(f"{where}: expected one label per row, got shape {list(values.shape)}")
    found = _as_labels(values, where)
    if classes is not None:
        known = set(classes)
        unknown = next((label for label in found if label not in known), None)
        if unknown is not None:
            shown = ", ".join(repr(c) for c in list(classes)[:10])
            raise RequestError(f"{where}: {unknown!r} is not a class of this model ({shown})")
    return found


def truth_values(message: Any, where: str = "truth") -> list[float]:
    """The true value of each row of a regression, from a v1 message: a column or list of finite numbers."""
    return _one_value_per_row(_truth_rows(message, where, labels_ok=False), where)


def _truth_rows(message: Any, where: str, *, labels_ok: bool) -> np.ndarray:
    """The rows of a truth message: data.ndarray, data.tensor, jsonData.labels, or jsonData itself."""
    if not isinstance(message, Mapping):
        raise RequestError(f"{where}: expected a SeldonMessage object, got {_type(message)}")
    data = message.get("data")
    json_data = message.get("jsonData")
    if isinstance(data, Mapping):
        return _v1_rows(data, where)
    if isinstance(json_data, Mapping) and "labels" in json_data:
        return _numbers(json_data["labels"], where, labels_ok=labels_ok)
    if json_data is not None:
        return _numbers(json_data if isinstance(json_data, list) else [json_data], where, labels_ok=labels_ok)
    raise RequestError(f"{where}: expected data.ndarray, data.tensor or jsonData")


def predicted_values(answer: Any, where: str = "response") -> list[float]:
    """The predicted value of each row of a regression's v1 or v2 answer (its `prediction` column or output,
    or its one column)."""
    if not isinstance(answer, Mapping):
        raise RequestError(f"{where}: expected an answer object, got {_type(answer)}")
    outputs = answer.get("outputs")
    if isinstance(outputs, list):
        named = {o.get("name"): o for o in outputs if isinstance(o, Mapping)}
        output = named.get("prediction") or (next(iter(named.values())) if len(named) == 1 else None)
        if output is None:
            raise RequestError(f"{where}: outputs holds no `prediction` tensor")
        return _one_value_per_row(_v2_data(output, f"{where}: outputs"), where)
    data = answer.get("data")
    if isinstance(data, Mapping):
        return _one_value_per_row(_v1_rows(data, where), where)
    json_data = answer.get("jsonData")
    if isinstance(json_data, Mapping) and "predictions" in json_data:
        value = json_data["predictions"]
        return _one_value_per_row(
            _numbers(value if isinstance(value, list) else [value], where, labels_ok=False), where
        )
    raise RequestError(
        f"{where}: expected outputs (v2), data.ndarray, data.tensor or jsonData.predictions (v1)"
    )


def _one_value_per_row(values: np.ndarray, where: str) -> list[float]:
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or values.dtype.kind not in "fiu":
        raise RequestError(f"{where}: expected one number per row, got shape {list(values.shape)}")
    out = [float(v) for v in values.tolist()]
    if any(abs(v) > MAX_MAGNITUDE for v in out):
        raise RequestError(f"{where}: a value beyond 2**64 ({_sample(values)}): no target is that large")
    return out


# v1 ------------------------------------------------------------------------------------------------
def _v1_rows(data: Mapping[str, Any], where: str) -> np.ndarray:
    if "ndarray" in data:
        return _numbers(data["ndarray"], f"{where}: data.ndarray", labels_ok=True)
    tensor = data.get("tensor")
    if isinstance(tensor, Mapping):
        values = tensor.get("values")
        if not isinstance(values, list):
            raise RequestError(f"{where}: data.tensor.values: expected a list of numbers")
        shape = check_shape(tensor.get("shape"), f"{where}: data.tensor", len(values))
        return _numbers(values, f"{where}: data.tensor", labels_ok=False).reshape(shape)
    raise RequestError(f"{where}: expected data.ndarray or data.tensor")


def _class_names(names: list[str]) -> list[Label]:
    return [int(n) if n.lstrip("-").isdigit() else n for n in names]


# v2 ------------------------------------------------------------------------------------------------
def _v2(outputs: list[Any], classes: Sequence[Label] | None, where: str) -> list[Label]:
    named = {o.get("name"): o for o in outputs if isinstance(o, Mapping)}
    for key in LABEL_KEYS:
        if key in named:
            return _as_labels(_v2_data(named[key], f"{where}: outputs {key!r}").reshape(-1), where)
    if not named:
        raise RequestError(f"{where}: outputs holds no tensor")
    name, output = next(iter(named.items()))  # no label output: the first one holds the scores
    return _from_rows(_v2_data(output, f"{where}: outputs {name!r}"), classes, where)


def _v2_data(output: Mapping[str, Any], where: str) -> np.ndarray:
    data = output.get("data")
    if not isinstance(data, list):
        raise RequestError(f"{where}: data must be a list")
    array = _numbers(data, where, labels_ok=True).reshape(-1)
    shape = output.get("shape")
    if isinstance(shape, list) and shape != [array.size]:
        return array.reshape(check_shape(shape, where, array.size))
    return array


# rows -> labels ----------------------------------------------------------------------------------
def _from_rows(rows: np.ndarray, classes: Sequence[Label] | None, where: str) -> list[Label]:
    """Scores (n, k > 1): the most probable class of each row; one column, or a flat list: the labels."""
    if rows.ndim == 2 and rows.shape[1] > 1:
        if rows.dtype.kind not in "fiu":
            raise RequestError(f"{where}: expected scores (numbers) per class, got {_sample(rows)}")
        best = rows.argmax(axis=1)
        if classes is None:
            return [int(i) for i in best]
        if len(classes) != rows.shape[1]:
            raise RequestError(f"{where}: expected one score per class ({len(classes)}), got {rows.shape[1]}")
        return [classes[i] for i in best]
    if rows.ndim == 2 and rows.shape[1] == 1:
        rows = rows[:, 0]
    if rows.ndim != 1:
        raise RequestError(f"{where}: expected one label or one score per class per row, got {rows.ndim}-D")
    return _as_labels(rows, where)


def _numbers(values: Any, where: str, *, labels_ok: bool) -> np.ndarray:
    """A JSON list -> an array: finite numbers, or (where labels may be text) strings."""
    if not isinstance(values, list):
        raise RequestError(f"{where}: expected a list, got {_type(values)}")
    try:
        array = np.asarray(values)
    except ValueError:
        raise RequestError(f"{where}: rows of different lengths") from None
    if array.size == 0:
        raise RequestError(f"{where}: holds no rows")
    if array.dtype.kind in "fiu":
        if not np.isfinite(array.astype(np.float64, copy=False)).all():
            raise RequestError(f"{where}: expected finite numbers, got {_sample(array)}")
        return array
    if labels_ok and array.dtype.kind == "U":
        return array
    raise RequestError(f"{where}: expected numbers, got {_sample(array)}")


def _as_labels(values: np.ndarray, where: str) -> list[Label]:
    """Class labels as JSON gives them: integers (2.0 is 2) or strings; fractions and booleans are scores."""
    out: list[Label] = []
    for v in values.reshape(-1).tolist():
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, bool) or not isinstance(v, int | float):
            raise RequestError(f"{where}: expected class labels, got {v!r}")
        elif isinstance(v, float) and not (np.isfinite(v) and v.is_integer()):
            raise RequestError(f"{where}: expected class labels (integers), got {v!r}")
        else:
            out.append(int(v))
    if not out:
        raise RequestError(f"{where}: holds no rows")
    return out


def _sample(array: np.ndarray) -> str:
    return str(array.reshape(-1)[:5].tolist())[:80]


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__
