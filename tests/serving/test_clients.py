"""Off-the-shelf clients against `sluice serve`: tritonclient (Open Inference Protocol v2) and seldon-core's own."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tritonclient_http(live: Any, dtype: Any, test_rows: pd.DataFrame, expected: Any) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=f"127.0.0.1:{live.port}")
    try:
        name = live.app.name
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(name)
        metadata = client.get_model_metadata(name)
        assert metadata["inputs"][0]["shape"] == [-1, 30]

        X = test_rows.to_numpy(dtype=dtype)
        tensor = triton.InferInput("input", list(X.shape), "FP32" if dtype == np.float32 else "FP64")
        tensor.set_data_from_numpy(X, binary_data=False)
        outputs = [
            triton.InferRequestedOutput("label", binary_data=False),
            triton.InferRequestedOutput("probabilities", binary_data=False),
        ]
        result = client.infer(name, [tensor], outputs=outputs, request_id="t1")
        np.testing.assert_array_equal(result.as_numpy("label"), expected[0])
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected[1], atol=1e-4)
        assert result.get_response()["id"] == "t1"

        # No outputs named: tritonclient asks for binary outputs; plain JSON comes back and still parses.
        plain = client.infer(name, [tensor], model_version=live.app.version)
        np.testing.assert_array_equal(plain.as_numpy("label"), expected[0])

        with pytest.raises(triton.InferenceServerException, match="unknown model"):
            client.infer("not-a-model", [tensor], outputs=outputs)
    finally:
        client.close()


@pytest.mark.parametrize("payload_type", ["ndarray", "tensor"])
def test_seldon_client(live: Any, payload_type: str, test_rows: pd.DataFrame, expected: Any) -> None:
    from seldon_core.seldon_client import SeldonClient
    from seldon_core.utils import grpc_datadef_to_array

    client = SeldonClient(gateway="seldon", transport="rest", gateway_endpoint=f"127.0.0.1:{live.port}")
    X = test_rows.to_numpy()
    result = client.predict(
        data=X, payload_type=payload_type, names=list(test_rows.columns), client_return_type="proto"
    )
    assert result.success, result.msg
    # Parsed into the SeldonMessage protobuf (None if our JSON broke its schema).
    response = result.response
    assert response is not None
    data = response.data
    probabilities = grpc_datadef_to_array(data)
    np.testing.assert_allclose(probabilities, expected[1], atol=1e-4)
    assert list(data.names) == ["0", "1"]
    assert response.meta.requestPath[live.app.name] == live.app.predictor.digest

    as_dict = client.predict(data=X[:2], payload_type="ndarray", client_return_type="dict")
    assert as_dict.success
    np.testing.assert_allclose(as_dict.response["data"]["ndarray"], expected[1][:2], atol=1e-4)

    bad = client.predict(data=X[:, :5], payload_type="ndarray")
    assert not bad.success and bad.msg.startswith("400")


def test_seldon_client_json_data_and_feedback(live: Any, test_rows: pd.DataFrame, expected: Any) -> None:
    from seldon_core.seldon_client import SeldonClient

    client = SeldonClient(gateway="seldon", transport="rest", gateway_endpoint=f"127.0.0.1:{live.port}")
    records = test_rows.head(3).to_dict(orient="records")
    result = client.predict(json_data=records, client_return_type="dict")
    assert result.success, result.msg
    assert result.response["jsonData"]["labels"] == expected[0][:3].tolist()
    feedback = client.feedback(
        prediction_request=result.request, prediction_response=None, reward=1.0, client_return_type="dict"
    )
    assert feedback.success, feedback.msg
    assert feedback.response["meta"]["tags"]["reward"] == 1.0


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


@pytest.mark.parametrize("gateway", ["seldon", "istio"])
def test_seldon_client_gateway_modes_with_feedback(
    live: Any, gateway: str, test_rows: pd.DataFrame, expected: Any
) -> None:
    """`istio` is what clients use through an ingress: /seldon/<namespace>/<deployment>/api/v1.0/..."""
    import httpx
    from seldon_core.seldon_client import SeldonClient
    from seldon_core.utils import grpc_datadef_to_array, json_to_seldon_message

    client = SeldonClient(
        gateway=gateway,
        transport="rest",
        gateway_endpoint=f"127.0.0.1:{live.port}",
        namespace="production",
        deployment_name="sluice",
    )
    X = test_rows.head(4).to_numpy()
    result = client.predict(
        data=X, payload_type="ndarray", names=list(test_rows.columns), client_return_type="proto"
    )
    assert result.success, result.msg
    np.testing.assert_allclose(grpc_datadef_to_array(result.response.data), expected[1][:4], atol=1e-4)

    before = httpx.get(f"{live.url}/metrics").text
    truth = expected[0][:4].copy()
    truth[0] = 1 - truth[0]  # one of four wrong
    scored = client.feedback(
        prediction_request=result.request,
        prediction_response=result.response,
        prediction_truth=json_to_seldon_message({"data": {"ndarray": truth.reshape(-1, 1).tolist()}}),
        reward=0,  # a protobuf drops a zero: the JSON carries no reward, so the truth is scored
        client_return_type="dict",
    )
    assert scored.success, scored.msg
    assert scored.response["meta"]["tags"]["reward"] == 0.75
    given = client.feedback(
        prediction_request=result.request,
        prediction_response=result.response,
        reward=1.0,
        client_return_type="dict",
    )
    assert given.success, given.msg
    after = httpx.get(f"{live.url}/metrics").text
    assert (
        _metric(after, "seldon_api_model_feedback_total")
        == _metric(before, "seldon_api_model_feedback_total") + 2
    )
    assert _metric(after, "seldon_api_model_feedback_reward_total") == pytest.approx(
        _metric(before, "seldon_api_model_feedback_reward_total") + 1.75
    )
    hostile = client.feedback(prediction_request=result.request, reward=1e12, client_return_type="dict")
    assert not hostile.success and hostile.msg.startswith("400")


@pytest.mark.parametrize("payload_type", ["ndarray", "tensor"])
def test_seldon_client_microservice_mode_with_feedback(
    live: Any, payload_type: str, test_rows: pd.DataFrame, expected: Any
) -> None:
    """Microservice mode posts the form field json= to /predict and /send-feedback, as to Seldon's wrapper."""
    from seldon_core.seldon_client import SeldonClient
    from seldon_core.utils import grpc_datadef_to_array

    client = SeldonClient(microservice_endpoint=f"127.0.0.1:{live.port}")
    X = test_rows.head(3).to_numpy()
    result = client.microservice(
        method="predict", data=X, payload_type=payload_type, names=list(test_rows.columns)
    )
    assert result.success, result.msg
    np.testing.assert_allclose(grpc_datadef_to_array(result.response.data), expected[1][:3], atol=1e-4)
    assert result.response.meta.requestPath[live.app.name] == live.app.predictor.digest

    bad = client.microservice(method="predict", data=X[:, :5], payload_type=payload_type)
    assert not bad.success and bad.response is not None  # the 400's body is a SeldonMessage too
    assert "wrong feature count" in bad.response.status.info

    feedback = client.microservice_feedback(
        prediction_request=result.request, prediction_response=result.response, reward=0.5
    )
    assert feedback.success, feedback.msg
    assert feedback.response.meta.tags["reward"].number_value == 0.5
