"""Seldon Core v1 protocol codec: SeldonMessage JSON to rows for the core, and a prediction back to JSON.

Requests carry `data.ndarray` (with optional `data.names`), `data.tensor` ({shape, values}) or `jsonData`
(records, columns or one record); the answer mirrors the request's form, as Seldon's wrappers do.
Everything emitted stays within the SeldonMessage protobuf schema, so seldon-core's own client parses it.
Feedback (`request`, `response`, `truth`, `reward`) is scored by `serving.core.feedback`: the reward
given (within [0, 1]), or, when only `truth` is given, the share of rows the response got right (for a
regression, how close it came: `score_values`).
An answer holds one column per class (named by its label), or for a regression one column `prediction`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson

from serving.core.feedback import Feedback, score_feedback, score_values
from serving.core.predictor import Prediction
from serving.core.validation import RequestError, check_shape, numeric_array
from serving.protocols import labels
from serving.protocols.labels import Label

Kind = Literal["ndarray", "tensor", "json"]


@dataclass
class PredictRequest:
    rows: Any
    names: list[str] | None
    kind: Kind
    meta: dict[str, Any] = field(default_factory=dict)


def decode_predict(body: Any) -> PredictRequest:
    """A SeldonMessage -> the rows to validate (the core checks counts, names and values)."""
    if not isinstance(body, Mapping):
        raise RequestError(f"expected a SeldonMessage JSON object, got {_type(body)}")
    meta = body.get("meta")
    if meta is None:
        meta = {}
    elif not isinstance(meta, Mapping):
        raise RequestError(f"meta: expected an object, got {_type(meta)}")
    if "data" in body:
        if "jsonData" in body:
            raise RequestError("give data or jsonData, not both")
        data = body["data"]
        if not isinstance(data, Mapping):
            raise RequestError(f"data: expected an object, got {_type(data)}")
        names = _names(data.get("names"), "data.names")
        if "ndarray" in data:
            if "tensor" in data:
                raise RequestError("data: give ndarray or tensor, not both")
            return PredictRequest(data["ndarray"], names, "ndarray", dict(meta))
        if "tensor" in data:
            return PredictRequest(_tensor_rows(data["tensor"]), names, "tensor", dict(meta))
        raise RequestError("data: expected `ndarray` or `tensor` (tftensor is not supported)")
    if "jsonData" in body:
        rows = body["jsonData"]
        if isinstance(rows, Mapping) and "ndarray" in rows:
            return PredictRequest(
                rows["ndarray"], _names(rows.get("names"), "jsonData.names"), "json", dict(meta)
            )
        return PredictRequest(rows, None, "json", dict(meta))
    for unsupported in ("strData", "binData", "customData"):
        if unsupported in body:
            raise RequestError(f"{unsupported} is not supported: send data.ndarray, data.tensor or jsonData")
    raise RequestError("expected one of data.ndarray, data.tensor or jsonData")


def _names(names: Any, where: str) -> list[str] | None:
    """Column names: None or an empty list mean signature order."""
    if names is None:
        return None
    if type(names) is not list or not all(type(n) is str for n in names):
        raise RequestError(f"{where}: expected a list of feature names")
    return names or None


def _tensor_rows(tensor: Any) -> np.ndarray:
    if not isinstance(tensor, Mapping):
        raise RequestError(f"data.tensor: expected an object {{shape, values}}, got {_type(tensor)}")
    values = tensor.get("values")
    if not isinstance(values, list):
        raise RequestError("data.tensor.values: expected a list of numbers")
    shape = check_shape(tensor.get("shape"), "data.tensor", len(values))
    array = numeric_array(values, "data.tensor.values")
    return array.reshape(shape) if values else array


def encode_predict(
    request: PredictRequest,
    prediction: Prediction,
    classes: list[Any],
    model_name: str,
    digest: str,
    *,
    regression: bool = False,
) -> dict[str, Any]:
    """The answer in the request's form: probabilities per class (columns named by class label), or for a
    regression the predicted value (one column `prediction`)."""
    meta = _response_meta(request.meta, model_name, digest)
    probabilities = prediction.probabilities
    names = ["prediction"] if regression else [str(c) for c in classes]
    if request.kind == "json":
        if regression:
            return {"jsonData": {"predictions": prediction.labels}, "meta": meta}
        labels_out = prediction.labels
        return {
            "jsonData": {
                # orjson writes numeric arrays itself; text labels come back from ONNX as an object array
                "labels": labels_out.tolist() if labels_out.dtype.kind == "O" else labels_out,
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

    def __init__(self, classes: list[Any], model_name: str, digest: str, *, regression: bool = False):
        self.classes, self.model_name, self.digest = classes, model_name, digest
        self.regression = regression
        self._names = orjson.dumps(["prediction"] if regression else [str(c) for c in classes])
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
        answer = encode_predict(
            request, prediction, self.classes, self.model_name, self.digest, regression=self.regression
        )
        return orjson.dumps(answer, option=_NUMPY)


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


def decode_feedback(
    body: Any,
    classes: Sequence[Any] | None = None,
    predict: Callable[[PredictRequest], Sequence[Any]] | None = None,
    bounds: tuple[float, float] | None = None,
) -> Feedback:
    """A Seldon Feedback message -> what it counts, by the rules of `serving.core.feedback`.

    A `truth` is scored against the labels of the `response` (read by `serving.protocols.labels`, with
    `classes` naming score columns), or, with no response and no reward, against `predict(request)`.
    With `bounds` (the target range of a regression), truth and response hold values and are scored by
    how close they are. Without a truth, `response` and `request` are not read: they are the client's
    record of the exchange.
    """
    if not isinstance(body, Mapping):
        raise RequestError(f"expected a Feedback JSON object, got {_type(body)}")
    for part in ("request", "response", "truth"):
        if body.get(part) is not None and not isinstance(body[part], Mapping):
            raise RequestError(f"{part}: expected a SeldonMessage object, got {_type(body[part])}")
    truth, response, request = body.get("truth"), body.get("response"), body.get("request")
    reward = body.get("reward")
    if bounds is not None:
        values: list[float] | None = None
        predicted_values: Sequence[float] | None = None
        if truth is not None:
            values = labels.truth_values(truth)
            if response is not None:
                predicted_values = labels.predicted_values(response)
            elif reward is None and request is not None and predict is not None:
                predicted_values = [float(v) for v in predict(decode_predict(request))]
        return score_values(reward, values, predicted_values, bounds)
    truth_rows: list[Label] | None = None
    predicted: Sequence[Label] | None = None
    if truth is not None:
        truth_rows = labels.truth_labels(truth, classes)
        if response is not None:
            predicted = labels.predicted_labels(response, classes)
        elif reward is None and request is not None and predict is not None:
            predicted = predict(decode_predict(request))
    return score_feedback(reward, truth_rows, predicted)


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


_REASONS = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    500: "INTERNAL_ERROR",
}


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__
