"""Open Inference Protocol (v2) codec: an inference request to rows for the core, a prediction to outputs.

Inputs: one tensor of shape [rows, features] (or [features] for one row), or one tensor per feature named
after it (shape [rows] or [rows, 1]). Datatypes FP32, FP64, INT32 and INT64; BYTES (text) and BOOL for a
model with categorical and boolean features, which takes one tensor per feature; `data` flat or nested, its
length checked against `shape`; a null in a feature's data is a missing value (taken where the feature is
nullable). Outputs: `label` (INT64, or BYTES for text labels; [rows]) and `probabilities` (FP32,
[rows, classes]), or for a regression `prediction` (FP64, [rows]); or the subset the request names.
Plain JSON only (tritonclient with `binary_data=False`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.core.predictor import Prediction
from serving.core.validation import RequestError, check_shape, numeric_array, short_repr

DATATYPES: dict[str, type[np.generic]] = {
    "FP32": np.float32,
    "FP64": np.float64,
    "INT32": np.int32,
    "INT64": np.int64,
}
# Taken as they are and checked by the validator against the feature's type: text and truth values.
TYPED = ("BYTES", "BOOL")
OUTPUTS = ("label", "probabilities")
REGRESSION_OUTPUTS = ("prediction",)


@dataclass
class InferRequest:
    id: str | None
    rows: Any  # a 2-D array, or columns {feature: values}
    outputs: list[str]


def decode_infer(
    body: Any, feature_names: Collection[str], outputs: tuple[str, ...] = OUTPUTS, *, typed: bool = False
) -> InferRequest:
    """An inference request -> rows for the core; `feature_names` as a set makes the name checks cheap;
    `outputs` are the ones the model gives. A `typed` model (features that are not all plain numbers)
    takes one tensor per feature, and BYTES, BOOL and nulls in them."""
    if not isinstance(body, Mapping):
        raise RequestError(f"expected an inference request JSON object, got {_type(body)}")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(f"id: expected a string, got {short_repr(request_id)}")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("inputs: expected a non-empty list of tensors")
    tensors = [_tensor(i, t, typed) for i, t in enumerate(inputs)]
    known = feature_names
    if typed and (len(tensors) != len(known) or any(name not in known for name, _ in tensors)):
        stray = next((name for name, _ in tensors if name not in known), None)
        raise RequestError(
            "this model takes one input per feature, named after it"
            + (f": {short_repr(stray)} is not a feature" if stray is not None else f" ({len(known)} in all)")
        )
    if len(tensors) == 1 and tensors[0][0] not in known:
        name, array = tensors[0]
        if array.ndim == 1:
            array = array.reshape(1, -1)
        if array.ndim != 2:
            raise RequestError(
                f"inputs[0] {name!r}: expected shape [rows, features], got {list(array.shape)}"
            )
        rows: Any = array
    else:
        columns: dict[str, Any] = {}
        for i, (name, array) in enumerate(tensors):
            if name not in known:
                raise RequestError(
                    f"inputs[{i}] {name!r}: with one input per feature, each must be named after a feature"
                )
            if array.ndim == 2 and array.shape[1] == 1:
                array = array[:, 0]
            if array.ndim != 1:
                raise RequestError(f"inputs[{i}] {name!r}: expected shape [rows], got {list(array.shape)}")
            columns[name] = array.tolist()
        rows = columns
    return InferRequest(request_id, rows, _outputs(body.get("outputs"), outputs))


def _tensor(index: int, tensor: Any, typed: bool = False) -> tuple[str, np.ndarray]:
    where = f"inputs[{index}]"
    if not isinstance(tensor, Mapping):
        raise RequestError(f"{where}: expected a tensor object {{name, shape, datatype, data}}")
    name = tensor.get("name")
    if not isinstance(name, str):
        raise RequestError(f"{where}.name: expected a string")
    where = f"{where} {short_repr(name)}"
    datatype = tensor.get("datatype")
    supported = [*DATATYPES, *TYPED] if typed else list(DATATYPES)
    if type(datatype) is not str or datatype not in supported:
        raise RequestError(
            f"{where}: datatype {short_repr(datatype)} is not supported (use {', '.join(supported)})"
        )
    data = tensor.get("data")
    if not isinstance(data, list):
        raise RequestError(f"{where}: data must be a list, got {_type(data)}")
    if typed and (datatype in TYPED or _holds_null(data)):
        values = _typed(data, where, datatype)
        return name, values.reshape(check_shape(tensor.get("shape"), where, values.size))
    flat = numeric_array(data, f"{where}: data").reshape(-1) if data else np.asarray([], dtype=np.float64)
    shape = check_shape(tensor.get("shape"), where, flat.size)
    if flat.size == 0:
        raise RequestError("empty batch: the request holds no rows")
    if datatype.startswith("INT") and flat.dtype.kind == "f":
        flat = _integers(data, where, datatype)
    if not datatype.startswith("INT"):
        # Kept in float64: the validator names a value too large for the model; a cast to FP32 here would
        # turn it into an anonymous infinity.
        try:
            return name, flat.astype(np.float64, copy=False).reshape(shape)
        except OverflowError:  # integers beyond any float
            raise RequestError(f"{where}: value out of range for {datatype}") from None
    try:
        ints = flat.astype(DATATYPES[datatype], copy=False)
    except OverflowError:
        raise RequestError(f"{where}: value out of range for {datatype}") from None
    if not np.array_equal(ints, flat):
        raise RequestError(f"{where}: value out of range for {datatype}")
    return name, ints.reshape(shape)


def _holds_null(data: list[Any]) -> bool:
    return None in data or any(type(d) is list and None in d for d in data)


def _typed(data: list[Any], where: str, datatype: str) -> np.ndarray:
    """BYTES, BOOL, or numbers with nulls: a flat object array of the values as sent (one level of nesting,
    [[v], [v]], as for shape [rows, 1]); the validator checks each against its feature's type."""
    values: list[Any] = []
    for item in data:
        if type(item) is list:
            if any(type(v) in (list, dict) for v in item):
                raise RequestError(f"{where}: data nested deeper than [rows, 1]")
            values.extend(item)
        elif type(item) is dict:
            raise RequestError(f"{where}: data holds an object, expected values")
        else:
            values.append(item)
    kind = {"BYTES": str, "BOOL": bool}.get(datatype)
    for v in values:
        if v is None:
            continue
        if kind is not None and type(v) is not kind:
            raise RequestError(f"{where}: datatype {datatype} but data holds {short_repr(v)}")
        if kind is None and (type(v) is bool or not isinstance(v, int | float)):
            raise RequestError(f"{where}: datatype {datatype} but data holds {short_repr(v)}")
    if not values:
        raise RequestError("empty batch: the request holds no rows")
    flat = np.empty(len(values), dtype=object)
    flat[:] = values
    return flat


def _integers(data: list[Any], where: str, datatype: str) -> np.ndarray:
    """Numbers that numpy read as floats for an INT tensor: integral ones (JSON's 3.0 is 3) kept exactly."""
    values = np.asarray(data, dtype=object).reshape(-1).tolist()  # the client's numbers, not numpy's floats
    if not all(type(v) is int or v.is_integer() for v in values):
        raise RequestError(f"{where}: datatype {datatype} but data holds non-integer numbers")
    # The JSON parser reads an integer beyond 64 bits as a float: -9223372036854775809 arrives as -2.0**63,
    # which would pass for INT64's minimum. A float that large cannot be told from its neighbours: refused.
    if any(type(v) is float and abs(v) >= 2.0**63 for v in values):
        raise RequestError(f"{where}: value out of range for {datatype}")
    # From the original numbers, not the floats: 9223372036854775807 next to 3.0 must not round to 2**63.
    return np.asarray([int(v) for v in values], dtype=object)


def _outputs(requested: Any, available: tuple[str, ...]) -> list[str]:
    if requested is None:
        return list(available)
    if not isinstance(requested, list):
        raise RequestError("outputs: expected a list of {name}")
    names = []
    for i, output in enumerate(requested):
        name = output.get("name") if isinstance(output, Mapping) else None
        if name not in available:
            raise RequestError(
                f"outputs[{i}]: unknown output {short_repr(name)} (this model gives {', '.join(available)})"
            )
        names.append(name)
    return names or list(available)


def encode_infer(
    request: InferRequest, prediction: Prediction, model_name: str, version: str
) -> dict[str, Any]:
    outputs = []
    for name in request.outputs:
        if name == "label":
            labels = prediction.labels
            if labels.dtype.kind in "OUS":  # text labels
                data: Any = [str(label) for label in labels.tolist()]
                outputs.append({"name": "label", "shape": [len(data)], "datatype": "BYTES", "data": data})
            else:
                labels = labels.astype(np.int64, copy=False)
                outputs.append({"name": "label", "shape": [len(labels)], "datatype": "INT64", "data": labels})
        elif name == "prediction":
            values = prediction.labels.astype(np.float64, copy=False)
            outputs.append({"name": "prediction", "shape": [len(values)], "datatype": "FP64", "data": values})
        else:
            probabilities = np.ascontiguousarray(prediction.probabilities)
            datatype = "FP32" if probabilities.dtype == np.float32 else "FP64"
            outputs.append(
                {
                    "name": "probabilities",
                    "shape": list(probabilities.shape),
                    "datatype": datatype,
                    "data": probabilities.reshape(-1),
                }
            )
    response: dict[str, Any] = {"model_name": model_name, "model_version": version, "outputs": outputs}
    if request.id is not None:
        response["id"] = request.id
    return response


FEATURE_DATATYPES = {"numeric": "FP64", "boolean": "BOOL", "categorical": "BYTES"}


def model_metadata(
    model_name: str,
    version: str,
    input_name: str,
    n_features: int,
    n_classes: int,
    platform: str,
    *,
    features: list[tuple[str, str]] | None = None,
    text_labels: bool = False,
    regression: bool = False,
) -> dict[str, Any]:
    """`features` (name, type) for a model that takes one tensor per feature (one with text features)."""
    inputs = (
        [{"name": name, "datatype": FEATURE_DATATYPES[kind], "shape": [-1]} for name, kind in features]
        if features
        else [{"name": input_name, "datatype": "FP64", "shape": [-1, n_features]}]
    )
    outputs = (
        [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
        if regression
        else [
            {"name": "label", "datatype": "BYTES" if text_labels else "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, n_classes]},
        ]
    )
    return {
        "name": model_name,
        "versions": [version],
        "platform": platform,
        "inputs": inputs,
        "outputs": outputs,
    }


def error_body(message: str) -> dict[str, str]:
    return {"error": message}


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__
