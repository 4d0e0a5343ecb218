"""Open Inference Protocol (v2) codec: an inference request to rows for the core, a prediction to outputs.

Inputs: one tensor of shape [rows, features] (or [features] for one row), or one tensor per feature named
after it (shape [rows] or [rows, 1]). Datatypes FP32, FP64, INT32 and INT64; `data` flat or nested, its
length checked against `shape`. Outputs: `label` (INT64, [rows]) and `probabilities` (FP32, [rows, classes]),
or the subset the request names. Plain JSON only (tritonclient with `binary_data=False`).
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
OUTPUTS = ("label", "probabilities")


@dataclass
class InferRequest:
    id: str | None
    rows: Any  # a 2-D array, or columns {feature: values}
    outputs: list[str]


def decode_infer(body: Any, feature_names: Collection[str]) -> InferRequest:
    """An inference request -> rows for the core; `feature_names` as a set makes the name checks cheap."""
    if not isinstance(body, Mapping):
        raise RequestError(f"expected an inference request JSON object, got {_type(body)}")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(f"id: expected a string, got {short_repr(request_id)}")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("inputs: expected a non-empty list of tensors")
    tensors = [_tensor(i, t) for i, t in enumerate(inputs)]
    known = feature_names
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
    outputs = _outputs(body.get("outputs"))
    return InferRequest(request_id, rows, outputs)


def _tensor(index: int, tensor: Any) -> tuple[str, np.ndarray]:
    where = f"inputs[{index}]"
    if not isinstance(tensor, Mapping):
        raise RequestError(f"{where}: expected a tensor object {{name, shape, datatype, data}}")
    name = tensor.get("name")
    if not isinstance(name, str):
        raise RequestError(f"{where}.name: expected a string")
    where = f"{where} {short_repr(name)}"
    datatype = tensor.get("datatype")
    if type(datatype) is not str or datatype not in DATATYPES:
        raise RequestError(
            f"{where}: datatype {short_repr(datatype)} is not supported (use {', '.join(DATATYPES)})"
        )
    data = tensor.get("data")
    if not isinstance(data, list):
        raise RequestError(f"{where}: data must be a list, got {_type(data)}")
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
        typed = flat.astype(DATATYPES[datatype], copy=False)
    except OverflowError:
        raise RequestError(f"{where}: value out of range for {datatype}") from None
    if not np.array_equal(typed, flat):
        raise RequestError(f"{where}: value out of range for {datatype}")
    return name, typed.reshape(shape)


def _integers(data: list[Any], where: str, datatype: str) -> np.ndarray:
    """Numbers that numpy read as floats for an INT tensor: integral ones (JSON's 3.0 is 3) kept exactly."""
    values = np.asarray(data, dtype=object).reshape(-1).tolist()  # the client's numbers, not numpy's floats
    if not all(type(v) is int or v.is_integer() for v in values):
        raise RequestError(f"{where}: datatype {datatype} but data holds non-integer numbers")
    # From the original numbers, not the floats: 9223372036854775807 next to 3.0 must not round to 2**63.
    return np.asarray([int(v) for v in values], dtype=object)


def _outputs(requested: Any) -> list[str]:
    if requested is None:
        return list(OUTPUTS)
    if not isinstance(requested, list):
        raise RequestError("outputs: expected a list of {name}")
    names = []
    for i, output in enumerate(requested):
        name = output.get("name") if isinstance(output, Mapping) else None
        if name not in OUTPUTS:
            raise RequestError(
                f"outputs[{i}]: unknown output {short_repr(name)} (this model gives {', '.join(OUTPUTS)})"
            )
        names.append(name)
    return names or list(OUTPUTS)


def encode_infer(
    request: InferRequest, prediction: Prediction, model_name: str, version: str
) -> dict[str, Any]:
    outputs = []
    for name in request.outputs:
        if name == "label":
            labels = prediction.labels.astype(np.int64, copy=False)
            outputs.append({"name": "label", "shape": [len(labels)], "datatype": "INT64", "data": labels})
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


def model_metadata(
    model_name: str, version: str, input_name: str, n_features: int, n_classes: int, platform: str
) -> dict[str, Any]:
    return {
        "name": model_name,
        "versions": [version],
        "platform": platform,
        "inputs": [{"name": input_name, "datatype": "FP64", "shape": [-1, n_features]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, n_classes]},
        ],
    }


def error_body(message: str) -> dict[str, str]:
    return {"error": message}


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__
