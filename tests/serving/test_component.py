"""The Seldon Core v1 component: its hooks directly, then under the real `seldon-core-microservice` process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from testkit.services import free_ports

from model.bundle import Bundle, BundleError
from serving.component import Classifier

REPO = Path(__file__).resolve().parents[2]
MICROSERVICE = Path(sys.executable).parent / "seldon-core-microservice"


@pytest.fixture(scope="module")
def component(bundle_dir: Path) -> Classifier:
    c = Classifier(model_uri=str(bundle_dir), model_digest=Bundle.open(bundle_dir).digest)
    c.load()
    return c


def test_predict_ndarray_with_names(component: Classifier, test_rows: pd.DataFrame, expected: Any) -> None:
    shuffled = test_rows[list(reversed(test_rows.columns))]
    probabilities = component.predict(shuffled.to_numpy(), list(shuffled.columns))
    np.testing.assert_allclose(probabilities, expected[1], atol=1e-4)
    assert component.class_names() == ["0", "1"]
    metrics = {m["key"]: m for m in component.metrics()}
    assert metrics["sluice_model_rows"]["value"] == len(test_rows)
    assert metrics["sluice_model_predict_ms"]["type"] == "TIMER"
    assert component.metrics() == []  # reported once


def test_predict_json_records(component: Classifier, test_rows: pd.DataFrame, expected: Any) -> None:
    records = test_rows.head(3).to_dict(orient="records")
    # The wrapper passes jsonData as parsed JSON and the class names as names: they must be ignored.
    probabilities = component.predict(records, ["0", "1"])
    np.testing.assert_allclose(probabilities, expected[1][:3], atol=1e-4)


@pytest.mark.parametrize(
    ("X", "message"),
    [
        (np.ones((1, 29)), "wrong feature count"),
        (np.asarray([["a"] * 30]), "non-numeric"),
        ([{"colour": 1.0}], "unknown feature 'colour'"),
        (np.full((1, 30), np.nan), "not a finite number"),
        (np.empty((0, 30)), "empty batch"),
    ],
)
def test_bad_input_is_a_400(component: Classifier, X: Any, message: str) -> None:
    from seldon_core.flask_utils import SeldonMicroserviceException

    with pytest.raises(SeldonMicroserviceException) as e:
        component.predict(X, [])
    assert e.value.status_code == 400 and message in e.value.message


def test_digest_pinning(bundle_dir: Path, rf_bundle_dir: Path) -> None:
    with pytest.raises(BundleError, match="does not match the pinned model_digest"):
        Classifier(model_uri=str(bundle_dir), model_digest=Bundle.open(rf_bundle_dir).digest).load()


def test_feedback_scores_truth(component: Classifier, test_rows: pd.DataFrame, expected: Any) -> None:
    X = test_rows.head(4).to_numpy()
    truth = expected[0][:4].copy()
    truth[0] = 1 - truth[0]  # one wrong answer
    assert component.send_feedback(X, list(test_rows.columns), 1.0, truth.reshape(-1, 1)) == []
    metrics = {m["key"]: m["value"] for m in component.metrics()}
    assert metrics == {
        "sluice_model_feedback": 1,
        "sluice_model_feedback_rows": 4,
        "sluice_model_feedback_correct": 3,
    }


@pytest.mark.parametrize(
    ("reward", "truth", "message"),
    [
        (1e12, None, "reward: 1000000000000.0 is outside [0, 1]"),
        (-0.5, None, "reward: -0.5 is outside [0, 1]"),
        (float("nan"), None, "reward: nan is outside"),
        (0.0, np.asarray([[0], [1]]), "truth has 2 rows but the prediction has 1"),
        (0.0, np.asarray([[0.5]]), "expected class labels (integers), got 0.5"),
    ],
)
def test_feedback_out_of_range_is_a_400(
    component: Classifier, reward: float, truth: Any, message: str
) -> None:
    from seldon_core.flask_utils import SeldonMicroserviceException

    with pytest.raises(SeldonMicroserviceException) as e:
        component.send_feedback(np.ones((1, 30)), None, reward, truth)
    assert e.value.status_code == 400 and message in e.value.message


def test_tags_health_and_metadata(component: Classifier, bundle_dir: Path) -> None:
    from seldon_core.metadata import validate_model_metadata

    bundle = Bundle.open(bundle_dir)
    assert component.tags() == {"model_name": bundle.metadata.name, "model_digest": bundle.digest}
    health = component.health_status()
    assert len(health[0]) == 2 and abs(sum(health[0]) - 1) < 1e-5
    metadata = validate_model_metadata(component.init_metadata())
    assert metadata["versions"] == [bundle.short_digest]
    assert metadata["inputs"][0]["schema"]["names"] == bundle.signature.feature_names


# the real wrapper ---------------------------------------------------------------------------------


def _start_microservice(model_uri: str, digest: str | None) -> tuple[subprocess.Popen[bytes], list[int]]:
    http, grpc, metrics = free_ports(3)
    parameters = [{"name": "model_uri", "type": "STRING", "value": model_uri}]
    if digest:
        parameters.append({"name": "model_digest", "type": "STRING", "value": digest})
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "PREDICTIVE_UNIT_PARAMETERS": json.dumps(parameters),
        "SELDON_DEBUG": "false",
    }
    command = [
        str(MICROSERVICE),
        "serving.component.Classifier",
        "--service-type", "MODEL",
        "--http-port", str(http),
        "--grpc-port", str(grpc),
        "--metrics-port", str(metrics),
        "--workers", "1",
        "--log-level", "WARNING",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    return process, [http, grpc, metrics]


def _stop(process: subprocess.Popen[bytes]) -> None:
    """The wrapper forks gunicorn, a metrics server and a gRPC server: stop the whole session we started."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(3)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(5)


@contextlib.contextmanager
def running_microservice(model_uri: str, digest: str | None) -> Iterator[list[int]]:
    """`seldon-core-microservice` serving `model_uri`, ready; its ports (http, grpc, metrics)."""
    process, ports = _start_microservice(model_uri, digest)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read().decode()[-2000:]  # type: ignore[union-attr]
            try:
                if httpx.get(f"http://127.0.0.1:{ports[0]}/health/ping", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "seldon-core-microservice did not start"
            time.sleep(0.2)
        yield ports
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def microservice(bundle_dir: Path) -> Iterator[list[int]]:
    with running_microservice(bundle_dir.resolve().as_uri(), Bundle.open(bundle_dir).digest) as ports:
        yield ports


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_under_seldon_core_microservice(
    microservice: list[int], test_rows: pd.DataFrame, expected: Any, bundle_dir: Path
) -> None:
    from seldon_core.seldon_client import SeldonClient
    from seldon_core.utils import grpc_datadef_to_array

    http, _, metrics_port = microservice
    endpoint = f"127.0.0.1:{http}"
    client = SeldonClient(gateway="seldon", transport="rest", gateway_endpoint=endpoint)
    X = test_rows.to_numpy()
    result = client.predict(
        data=X, payload_type="ndarray", names=list(test_rows.columns), client_return_type="proto"
    )
    assert result.success, result.msg
    np.testing.assert_allclose(grpc_datadef_to_array(result.response.data), expected[1], atol=1e-4)
    assert result.response.meta.tags["model_digest"].string_value == Bundle.open(bundle_dir).digest

    direct = client.microservice(
        method="predict",
        microservice_endpoint=endpoint,
        data=X[:3],
        payload_type="tensor",
        names=list(test_rows.columns),
    )
    assert direct.success, direct.msg
    np.testing.assert_allclose(grpc_datadef_to_array(direct.response.data), expected[1][:3], atol=1e-4)

    bad = client.predict(data=X[:, :5], payload_type="ndarray")
    assert not bad.success and bad.msg.startswith("400")

    feedback = client.feedback(
        prediction_request=result.request,
        prediction_response=result.response,
        reward=1.0,
        client_return_type="dict",
    )
    assert feedback.success, feedback.msg
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    assert "seldon_api_model_feedback_reward_total" in text
    assert "sluice_model_rows_total" in text


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_microservice_refuses_a_digest_mismatch(bundle_dir: Path, rf_bundle_dir: Path) -> None:
    process, ports = _start_microservice(str(bundle_dir), Bundle.open(rf_bundle_dir).digest)
    try:
        # The wrapper calls load() in its worker: the worker fails to boot and nothing ever answers.
        deadline = time.monotonic() + 30
        output = b""
        while time.monotonic() < deadline and process.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{ports[0]}/health/ping", timeout=1).status_code
                assert status != 200, "a mismatched bundle must not serve"
            except httpx.TransportError:
                pass
            time.sleep(0.5)
    finally:
        _stop(process)
        output = process.stdout.read() if process.stdout else b""
    assert b"does not match the pinned model_digest" in output
