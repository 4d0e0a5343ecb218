"""Seldon Core v1 protocol codec: SeldonMessage JSON to rows for the core, and a prediction back to JSON.

Requests carry `data.ndarray` (with optional `data.names`), `data.tensor` ({shape, values}) or `jsonData`
(records, columns or one record); the answer mirrors the request's form, as Seldon's wrappers do.
Everything emitted stays within the SeldonMessage protobuf schema, so seldon-core's own client parses it.
Feedback (`request`, `response`, `truth`, `reward`) is turned into a reward: the one given, or, when only
`truth` is given, the share of rows the response got right.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field

from serving.core.predictor import Prediction, RequestError

Kind = Literal["ndarray", "tensor", "json"]


@dataclass
class PredictRequest:
    rows: Any
    names: list[str] | None
    kind: Kind
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Feedback:
    reward: float
    rows: int
    correct: int | None  # rows whose truth matched the response, when both were given


def decode_predict(body: Any) -> PredictRequest:
    """A SeldonMessage -> the rows to validate (the core checks counts, names and values)."""
    if not isinstance(body, Mapping):
        raise RequestError(f"expected a SeldonMessage JSON object, got {_type(body)}")
    meta = body.get("meta") or {}
    if not isinstance(meta, Mapping):
        raise RequestError(f"meta: expected an object, got {_type(meta)}")
    if "data" in body:
        data = body["data"]
        if not isinstance(data, Mapping):
            raise RequestError(f"data: expected an object, got {_type(data)}")
        names = data.get("names")
        if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
            raise RequestError("data.names: expected a list of feature names")
        names = names or None
        if "ndarray" in data:
            return PredictRequest(data["ndarray"], names, "ndarray", dict(meta))
        if "tensor" in data:
            return PredictRequest(_tensor_rows(data["tensor"]), names, "tensor", dict(meta))
        raise RequestError("data: expected `ndarray` or `tensor` (tftensor is not supported)")
    if "jsonData" in body:
        rows = body["jsonData"]
        if isinstance(rows, Mapping) and "ndarray" in rows:
            return PredictRequest(rows["ndarray"], rows.get("names") or None, "json", dict(meta))
        if isinstance(rows, Mapping) and rows and not any(isinstance(v, list) for v in rows.values()):
            rows = [rows]  # one record {feature: value}
        return PredictRequest(rows, None, "json", dict(meta))
    for unsupported in ("strData", "binData", "customData"):
        if unsupported in body:
            raise RequestError(f"{unsupported} is not supported: send data.ndarray, data.tensor or jsonData")
    raise RequestError("expected one of data.ndarray, data.tensor or jsonData")


def _tensor_rows(tensor: Any) -> np.ndarray:
    if not isinstance(tensor, Mapping):
        raise RequestError(f"data.tensor: expected an object {{shape, values}}, got {_type(tensor)}")
    shape, values = tensor.get("shape"), tensor.get("values")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise RequestError("data.tensor.shape: expected a list of non-negative integers")
    if not isinstance(values, list):
        raise RequestError("data.tensor.values: expected a list of numbers")
    if math.prod(shape) != len(values):
        raise RequestError(
            f"data.tensor: shape {shape} holds {math.prod(shape)} values but {len(values)} were given"
        )
    array = np.asarray(values)
    if array.dtype.kind not in "fiu":
        raise RequestError("data.tensor.values: non-numeric value in the request")
    return array.reshape(shape) if values else array


def encode_predict(
    request: PredictRequest, prediction: Prediction, classes: list[int], model_name: str, digest: str
) -> dict[str, Any]:
    """The answer in the request's form: probabilities per class (columns named by class label)."""
    meta = _response_meta(request.meta, model_name, digest)
    probabilities = prediction.probabilities
    names = [str(c) for c in classes]
    if request.kind == "json":
        return {
            "jsonData": {
                "labels": prediction.labels,
                "probabilities": probabilities,
                "classes": classes,
            },
            "meta": meta,
        }
    if request.kind == "tensor":
        data: dict[str, Any] = {
            "names": names,
            "tensor": {"shape": list(probabilities.shape), "values": probabilities.reshape(-1)},
        }
    else:
        data = {"names": names, "ndarray": probabilities}
    return {"data": data, "meta": meta}


class PredictEncoder:
    """`encode_predict` to JSON bytes, with the parts that never change for a model serialized once.

    The common request (an ndarray without meta) is answered by joining bytes: no dict to build, no meta
    to serialize again; anything else goes through `encode_predict`.
    """

    def __init__(self, classes: list[int], model_name: str, digest: str):
        self.classes, self.model_name, self.digest = classes, model_name, digest
        self._names = orjson.dumps([str(c) for c in classes])
        self._meta = orjson.dumps(_response_meta({}, model_name, digest))

    def encode(self, request: PredictRequest, prediction: Prediction) -> bytes:
        if request.kind == "ndarray" and not request.meta:
            probabilities = orjson.dumps(np.ascontiguousarray(prediction.probabilities), option=_NUMPY)
            return (
                b'{"data":{"names":'
                + self._names
                + b',"ndarray":'
                + probabilities
                + b'},"meta":'
                + self._meta
                + b"}"
            )
        return orjson.dumps(
            encode_predict(request, prediction, self.classes, self.model_name, self.digest), option=_NUMPY
        )


_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def _response_meta(meta: Mapping[str, Any], model_name: str, digest: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(meta.get("puid"), str):
        out["puid"] = meta["puid"]
    tags = meta.get("tags")
    out["tags"] = {
        **(tags if isinstance(tags, Mapping) else {}),
        "model_name": model_name,
        "model_digest": digest,
    }
    routing = meta.get("routing")
    if isinstance(routing, Mapping):
        out["routing"] = dict(routing)
    path = meta.get("requestPath")
    out["requestPath"] = {**(path if isinstance(path, Mapping) else {}), model_name: digest}
    return out


def decode_feedback(body: Any, classes: list[int]) -> Feedback:
    """A Seldon Feedback message -> the reward to count (given, or accuracy of `response` against `truth`)."""
    if not isinstance(body, Mapping):
        raise RequestError(f"expected a Feedback JSON object, got {_type(body)}")
    reward = body.get("reward")
    if reward is not None and (isinstance(reward, bool) or not isinstance(reward, int | float)):
        raise RequestError(f"reward: expected a number, got {reward!r}")
    if reward is not None and not (np.isfinite(reward) and reward >= 0):
        raise RequestError(f"reward: {reward} is not a finite number >= 0 (rewards add up in a counter)")
    truth = _labels(body.get("truth"), "truth", classes, probabilities=False)
    predicted = _labels(body.get("response"), "response", classes, probabilities=True)
    correct: int | None = None
    rows = len(truth) if truth is not None else 1
    if truth is not None and predicted is not None:
        if len(truth) != len(predicted):
            raise RequestError(
                f"truth has {len(truth)} rows but the response has {len(predicted)}: they must match"
            )
        correct = int(sum(int(t == p) for t, p in zip(truth, predicted, strict=True)))
    if reward is None:
        if correct is None:
            raise RequestError("feedback needs a `reward`, or a `truth` together with the `response`")
        reward = correct / rows
    return Feedback(reward=float(reward), rows=rows, correct=correct)


def _labels(message: Any, where: str, classes: list[int], *, probabilities: bool) -> list[int] | None:
    """Class labels from a SeldonMessage: a column of labels, or (for a response) rows of probabilities."""
    if message is None:
        return None
    if not isinstance(message, Mapping):
        raise RequestError(f"{where}: expected a SeldonMessage object, got {_type(message)}")
    json_data = message.get("jsonData")
    if isinstance(json_data, Mapping) and "labels" in json_data:
        values: Any = json_data["labels"]
    elif json_data is not None and "data" not in message:
        values = json_data
    else:
        data = message.get("data")
        if not isinstance(data, Mapping):
            raise RequestError(f"{where}: expected data.ndarray, data.tensor or jsonData")
        values = data["ndarray"] if "ndarray" in data else _tensor_rows(data.get("tensor")).tolist()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise RequestError(f"{where}: expected numbers, got {str(values)[:80]}") from None
    if not np.isfinite(array).all():
        raise RequestError(f"{where}: expected finite numbers, got {str(values)[:80]}")
    if array.ndim == 2 and array.shape[1] == len(classes) and probabilities:
        return [classes[i] for i in array.argmax(axis=1)]
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1 or array.size == 0:
        raise RequestError(f"{where}: expected one label per row, got shape {list(array.shape)}")
    if not (array == np.round(array)).all():
        raise RequestError(f"{where}: expected class labels (integers), got {str(values)[:80]}")
    return [int(v) for v in array]


def error_body(status: int, message: str) -> dict[str, Any]:
    """A SeldonMessage carrying only a failure status, as Seldon's wrapper answers errors."""
    return {
        "status": {
            "code": status,
            "info": message,
            "reason": _REASONS.get(status, "ERROR"),
            "status": "FAILURE",
        }
    }


_REASONS = {400: "BAD_REQUEST", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE"}


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# Schemas for the OpenAPI document (the codec above parses by hand: faster, and its errors name the field).
class DefaultData(BaseModel):
    model_config = ConfigDict(extra="allow")
    names: list[str] | None = Field(None, description="Feature names of the ndarray columns, in any order.")
    ndarray: list[list[float]] | None = Field(None, description="Rows of feature values.")
    tensor: Tensor | None = None


class Tensor(BaseModel):
    shape: list[int] = Field(examples=[[1, 30]])
    values: list[float]


class Meta(BaseModel):
    model_config = ConfigDict(extra="allow")
    puid: str | None = None
    tags: dict[str, Any] | None = None
    routing: dict[str, int] | None = None
    requestPath: dict[str, str] | None = None


class SeldonMessage(BaseModel):
    """A Seldon v1 request or response: `data` (ndarray or tensor) or `jsonData`."""

    data: DefaultData | None = None
    jsonData: Any = Field(
        None, description="Records [{feature: value}], columns {feature: [values]} or one record."
    )
    meta: Meta | None = None


class Status(BaseModel):
    code: int
    info: str
    reason: str
    status: str


class SeldonError(BaseModel):
    status: Status


class FeedbackMessage(BaseModel):
    """Seldon v1 feedback: the request, the response it got, and the truth and/or a reward."""

    request: SeldonMessage | None = None
    response: SeldonMessage | None = None
    truth: SeldonMessage | None = None
    reward: float | None = None


DefaultData.model_rebuild()
