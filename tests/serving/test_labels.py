"""One reader of labels for feedback scoring and the shadow comparison: our own answers read back exactly."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import orjson
import pytest

from serving.core.predictor import Prediction
from serving.core.validation import RequestError
from serving.protocols import seldon, v2
from serving.protocols.labels import predicted_labels, truth_labels
from serving.router.comparison import decisions, disagree

DIGEST = "sha256:" + "cd" * 32
PREDICTION = Prediction(np.array([1, 0, 1]), np.array([[0.2, 0.8], [0.9, 0.1], [0.4, 0.6]], dtype=np.float32))


@pytest.mark.parametrize("kind", ["ndarray", "tensor", "json"])
@pytest.mark.parametrize("meta", [{}, {"puid": "p"}])
def test_seldon_answers_read_back(kind: Any, meta: dict[str, Any]) -> None:
    request = seldon.PredictRequest([[1.0]], None, kind, meta)
    body = orjson.loads(seldon.PredictEncoder([0, 1], "m", DIGEST).encode(request, PREDICTION))
    assert predicted_labels(body) == [1, 0, 1]  # column names are the class labels
    assert predicted_labels(body, classes=[0, 1]) == [1, 0, 1]


@pytest.mark.parametrize("outputs", [["label", "probabilities"], ["probabilities"], ["label"]])
def test_v2_answers_read_back(outputs: list[str]) -> None:
    request = v2.InferRequest("r", [[1.0]], outputs)
    body = orjson.loads(
        orjson.dumps(v2.encode_infer(request, PREDICTION, "m", "1"), option=orjson.OPT_SERIALIZE_NUMPY)
    )
    assert predicted_labels(body, classes=[0, 1]) == [1, 0, 1]


@pytest.mark.parametrize(
    ("answer", "classes", "labels"),
    [
        ({"data": {"names": ["cat", "dog"], "ndarray": [[0.1, 0.9]]}}, None, ["dog"]),
        ({"data": {"names": ["proba", "label"], "ndarray": [[0.7, 3]]}}, None, [3]),
        ({"data": {"ndarray": [[0.1, 0.9]]}}, [4, 7], [7]),
        ({"data": {"ndarray": [[0.1, 0.9]]}}, None, [1]),  # no names, no classes: the position
        ({"data": {"ndarray": [[2], [5.0]]}}, None, [2, 5]),
        ({"jsonData": {"prediction": "spam"}}, None, ["spam"]),
        (
            {
                "outputs": [
                    {"name": "scores", "shape": [2, 2], "datatype": "FP32", "data": [0.9, 0.1, 0.3, 0.7]}
                ]
            },
            [5, 6],
            [5, 6],
        ),
    ],
)
def test_other_answer_forms(answer: Any, classes: Any, labels: list[Any]) -> None:
    assert predicted_labels(answer, classes) == labels


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ([1, 2], "expected an answer object"),
        ({"status": {"code": 500}}, "expected outputs (v2), data.ndarray"),
        ({"data": {"ndarray": [[0.1, None]]}}, "expected numbers"),
        ({"data": {"ndarray": [[float("nan"), 0.1]]}}, "expected finite numbers"),
        ({"data": {"ndarray": [[0.5]]}}, "expected class labels (integers), got 0.5"),
        ({"data": {"tensor": {"shape": [10**30, 10**30], "values": [1.0, 2.0]}}}, "needs more than 2 values"),
        ({"jsonData": {"probabilities": [0.5]}}, "jsonData holds no labels"),
        ({"outputs": []}, "outputs holds no tensor"),
    ],
)
def test_unreadable_answers_are_refused_by_name(answer: Any, message: str) -> None:
    with pytest.raises(RequestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        predicted_labels(answer)


def test_truth_is_labels_of_the_model() -> None:
    assert truth_labels({"data": {"ndarray": [[0], [1]]}}, [0, 1]) == [0, 1]
    assert truth_labels({"data": {"ndarray": [1.0, 0]}}, [0, 1]) == [1, 0]
    assert truth_labels({"jsonData": [1, 1]}) == [1, 1]
    with pytest.raises(RequestError, match="expected one label per row, got shape"):
        truth_labels({"data": {"ndarray": [[0.1, 0.9]]}})
    with pytest.raises(RequestError, match="truth: 2 is not a class of this model"):
        truth_labels({"data": {"ndarray": [2]}}, [0, 1])


def test_a_shape_of_huge_integers_is_refused_at_once() -> None:
    """The product of a client's shape is never computed past the number of values it must describe."""
    shape = [10**4000 + 7] * 400
    started = time.process_time()
    with pytest.raises(RequestError, match="shape has 400 dimensions"):
        predicted_labels({"data": {"tensor": {"shape": shape, "values": [0.1, 0.9]}}})
    with pytest.raises(RequestError, match="needs more than 2 values"):
        predicted_labels({"data": {"tensor": {"shape": shape[:8], "values": [0.1, 0.9]}}})
    assert time.process_time() - started < 1.0


def test_comparison_reads_answers_with_the_same_reader() -> None:
    request = seldon.PredictRequest([[1.0]], None, "ndarray", {})
    live = seldon.PredictEncoder([0, 1], "m", DIGEST).encode(request, PREDICTION)
    shadow_v2 = orjson.dumps(
        v2.encode_infer(v2.InferRequest(None, [], ["label"]), PREDICTION, "m", "1"),
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    assert decisions(live) == [1, 0, 1]
    assert disagree(live, shadow_v2) is False  # the two protocols, one verdict
    flipped = Prediction(np.array([1, 1, 1]), np.array([[0.2, 0.8], [0.1, 0.9], [0.4, 0.6]]))
    assert disagree(live, seldon.PredictEncoder([0, 1], "m", DIGEST).encode(request, flipped)) is True
    assert disagree(live, b"not json") is None
    assert disagree(live, b'{"status": {"code": 400}}') is None
