"""Protocol codecs without HTTP: the fast Seldon encoder says exactly what the general one says."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from serving.core.predictor import Prediction, RequestError
from serving.protocols import seldon, v2

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "request_",
    [
        seldon.PredictRequest([[1.0] * 3], None, "ndarray", {}),
        seldon.PredictRequest([[1.0] * 3], None, "ndarray", {"puid": "p1", "tags": {"u": 1}}),
        seldon.PredictRequest([[1.0] * 3], None, "tensor", {}),
        seldon.PredictRequest([{"a": 1.0}], None, "json", {}),
    ],
)
def test_fast_encoder_matches_general_encoder(request_: seldon.PredictRequest) -> None:
    prediction = Prediction(np.array([1, 0]), np.array([[0.25, 0.75], [0.9, 0.1]], dtype=np.float32))
    fast = orjson.loads(seldon.PredictEncoder([0, 1], "m", DIGEST).encode(request_, prediction))
    general = orjson.loads(
        orjson.dumps(
            seldon.encode_predict(request_, prediction, [0, 1], "m", DIGEST),
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
    )
    assert fast == general
    assert fast["meta"]["requestPath"]["m"] == DIGEST


def test_feedback_reward_from_truth_and_response() -> None:
    body = {
        "response": {"data": {"ndarray": [[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]]}},
        "truth": {"data": {"ndarray": [0, 1, 0]}},
    }
    feedback = seldon.decode_feedback(body, [0, 1])
    assert (feedback.correct, feedback.rows, feedback.reward) == (2, 3, pytest.approx(2 / 3))
    assert seldon.decode_feedback({"reward": 0.0}, [0, 1]).reward == 0.0
    with pytest.raises(RequestError, match="integers"):
        seldon.decode_feedback({"truth": {"data": {"ndarray": [0.5]}}, "response": body["response"]}, [0, 1])


def test_v2_columns_and_shapes() -> None:
    names = frozenset({"a", "b"})
    request = v2.decode_infer(
        {
            "inputs": [
                {"name": "a", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]},
                {"name": "b", "shape": [2, 1], "datatype": "INT64", "data": [[3], [4]]},
            ]
        },
        names,
    )
    assert request.rows == {"a": [1.0, 2.0], "b": [3, 4]}
    with pytest.raises(RequestError, match="shape must be a list of non-negative integers"):
        v2.decode_infer(
            {"inputs": [{"name": "x", "shape": [True, 2], "datatype": "FP32", "data": [1, 2]}]}, names
        )
    with pytest.raises(RequestError, match="out of range for INT32"):
        v2.decode_infer(
            {"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [2**40]}]}, names
        )
