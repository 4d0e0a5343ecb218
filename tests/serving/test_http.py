"""`sluice serve`'s HTTP app over a real socket: both protocols, feedback, metrics, docs, and bad input."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from model.bundle import Bundle


@pytest.fixture(scope="module")
def http(live: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=10) as client:
        yield client


def _v1(rows: Any, names: list[str] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"ndarray": rows}
    if names is not None:
        data["names"] = names
    return {"data": data}


# Seldon v1 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/api/v1.0/predictions", "/predict"])
def test_v1_ndarray_matches_sklearn(
    http: httpx.Client, path: str, test_rows: pd.DataFrame, expected: Any
) -> None:
    labels, probabilities = expected
    r = http.post(path, json=_v1(test_rows.to_numpy().tolist()))
    assert r.status_code == 200, r.text
    body = r.json()
    got = np.asarray(body["data"]["ndarray"])
    assert body["data"]["names"] == ["0", "1"]
    np.testing.assert_allclose(got, probabilities, atol=1e-4)
    np.testing.assert_array_equal(got.argmax(axis=1), labels)


def test_v1_meta_names_the_model(http: httpx.Client, live: Any, test_rows: pd.DataFrame) -> None:
    request = _v1(test_rows.head(1).to_numpy().tolist())
    request["meta"] = {"puid": "abc", "tags": {"user": "u1"}, "requestPath": {"router": "x"}}
    meta = http.post("/api/v1.0/predictions", json=request).json()["meta"]
    predictor = live.app.predictor
    assert meta["puid"] == "abc"
    assert meta["tags"]["user"] == "u1"
    assert meta["tags"]["model_digest"] == predictor.digest
    assert meta["requestPath"] == {"router": "x", predictor.name: predictor.digest}


def test_v1_names_reorder_columns(http: httpx.Client, test_rows: pd.DataFrame, expected: Any) -> None:
    shuffled = test_rows[list(reversed(test_rows.columns))]
    r = http.post("/api/v1.0/predictions", json=_v1(shuffled.to_numpy().tolist(), list(shuffled.columns)))
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["data"]["ndarray"], expected[1], atol=1e-4)


def test_v1_tensor(http: httpx.Client, test_rows: pd.DataFrame, expected: Any) -> None:
    X = test_rows.head(3).to_numpy()
    r = http.post(
        "/api/v1.0/predictions",
        json={"data": {"tensor": {"shape": list(X.shape), "values": X.ravel().tolist()}}},
    )
    assert r.status_code == 200, r.text
    tensor = r.json()["data"]["tensor"]
    assert tensor["shape"] == [3, 2]
    np.testing.assert_allclose(np.reshape(tensor["values"], (3, 2)), expected[1][:3], atol=1e-4)


@pytest.mark.parametrize("form", ["records", "columns", "record"])
def test_v1_json_data(http: httpx.Client, form: str, test_rows: pd.DataFrame, expected: Any) -> None:
    rows = test_rows.head(4)
    payload: Any = {
        "records": rows.to_dict(orient="records"),
        "columns": rows.to_dict(orient="list"),
        "record": rows.iloc[0].to_dict(),
    }[form]
    r = http.post("/api/v1.0/predictions", json={"jsonData": payload})
    assert r.status_code == 200, r.text
    out = r.json()["jsonData"]
    n = 1 if form == "record" else 4
    assert out["labels"] == expected[0][:n].tolist()
    np.testing.assert_allclose(out["probabilities"], expected[1][:n], atol=1e-4)


# Open Inference Protocol v2 ----------------------------------------------------------------------
@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_v2_infer(
    http: httpx.Client, live: Any, datatype: str, test_rows: pd.DataFrame, expected: Any
) -> None:
    X = test_rows.to_numpy()
    body = {
        "id": "r1",
        "inputs": [{"name": "input", "shape": list(X.shape), "datatype": datatype, "data": X.tolist()}],
    }
    r = http.post(f"/v2/models/{live.app.name}/infer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "r1" and out["model_name"] == live.app.name
    assert out["model_version"] == live.app.predictor.short_digest
    by_name = {o["name"]: o for o in out["outputs"]}
    assert by_name["label"]["data"] == expected[0].tolist()
    assert by_name["probabilities"]["shape"] == [len(X), 2]
    np.testing.assert_allclose(np.reshape(by_name["probabilities"]["data"], (-1, 2)), expected[1], atol=1e-4)


def test_v2_int64_flat_data_and_versions_path(http: httpx.Client, live: Any, bundle_dir: Any) -> None:
    X = np.round(np.asarray([[14.0] * 30, [20.0] * 30])).astype(int)
    estimator = Bundle.open(bundle_dir).load_sklearn()
    frame = pd.DataFrame(X.astype(float), columns=live.app.predictor.feature_names)
    body = {
        "inputs": [{"name": "input", "shape": [2, 30], "datatype": "INT64", "data": X.ravel().tolist()}],
        "outputs": [{"name": "label"}],
    }
    r = http.post(f"/v2/models/{live.app.name}/versions/{live.app.version}/infer", json=body)
    assert r.status_code == 200, r.text
    outputs = r.json()["outputs"]
    assert [o["name"] for o in outputs] == ["label"]
    assert outputs[0]["data"] == estimator.predict(frame).tolist()


def test_v2_one_input_per_feature(
    http: httpx.Client, live: Any, test_rows: pd.DataFrame, expected: Any
) -> None:
    rows = test_rows.head(3)
    inputs = [
        {"name": c, "shape": [3, 1], "datatype": "FP64", "data": rows[c].tolist()} for c in rows.columns
    ]
    r = http.post(f"/v2/models/{live.app.name}/infer", json={"inputs": inputs})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == expected[0][:3].tolist()


def test_v2_metadata_and_health(http: httpx.Client, live: Any) -> None:
    name = live.app.name
    meta = http.get(f"/v2/models/{name}").json()
    assert meta["name"] == name and meta["versions"] == [live.app.version]
    assert meta["inputs"][0]["shape"] == [-1, 30]
    assert {o["name"] for o in meta["outputs"]} == {"label", "probabilities"}
    assert http.get(f"/v2/models/{name}/versions/{live.app.version}").json() == meta
    assert http.get(f"/v2/models/{name}/ready").json()["ready"] is True
    assert http.get("/v2/health/live").status_code == 200
    assert http.get("/v2/health/ready").status_code == 200
    assert http.get("/health/ping").text == "pong"
    status = http.get("/health/status")
    assert status.status_code == 200 and status.json()["jsonData"]["status"] == "ok"


# feedback and metrics ------------------------------------------------------------------------------
def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_feedback_counts_reward_and_truth(http: httpx.Client) -> None:
    before = http.get("/metrics").text
    n0 = _metric(before, "seldon_api_model_feedback_total")
    r0 = _metric(before, "seldon_api_model_feedback_reward_total")
    assert http.post("/api/v1.0/feedback", json={"reward": 0.5}).status_code == 200
    scored = http.post(
        "/api/v1.0/feedback",
        json={
            "request": _v1([[1.0] * 30, [2.0] * 30]),
            "response": {"data": {"names": ["0", "1"], "ndarray": [[0.9, 0.1], [0.2, 0.8]]}},
            "truth": {"data": {"ndarray": [[0], [0]]}},
        },
    )
    assert scored.status_code == 200, scored.text
    assert scored.json()["meta"]["tags"]["reward"] == 0.5  # one of two rows right
    after = http.get("/metrics").text
    assert _metric(after, "seldon_api_model_feedback_total") == n0 + 2
    assert _metric(after, "seldon_api_model_feedback_reward_total") == pytest.approx(r0 + 1.0)


def test_feedback_truth_with_the_request_only_is_scored_against_this_model(
    http: httpx.Client, test_rows: pd.DataFrame, expected: Any
) -> None:
    rows = test_rows.head(4)
    truth = expected[0][:4].copy()
    truth[0] = 1 - truth[0]  # one of four wrong
    r = http.post(
        "/api/v1.0/feedback",
        json={"request": _v1(rows.to_numpy().tolist()), "truth": {"data": {"ndarray": truth.tolist()}}},
    )
    assert r.status_code == 200, r.text
    assert r.json()["meta"]["tags"]["reward"] == 0.75 and r.json()["meta"]["tags"]["correct"] == 3
    # Seldon's clients drop a zero reward from the JSON: no reward and no truth counts 0, as under Seldon.
    assert (
        http.post("/api/v1.0/feedback", json={"request": _v1([[1.0] * 30])}).json()["meta"]["tags"]["reward"]
        == 0
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"truth": {"data": {"ndarray": [[1]]}}}, "truth: scoring it needs the `response`"),
        ({"response": [0.1, 0.9], "reward": 1}, "response: expected a SeldonMessage object"),
        ({"reward": "high"}, "reward: expected a number"),
        ({"reward": -1}, "reward: -1 is outside [0, 1]"),
        # One message may not outweigh many: accuracy on feedback is reward / messages, within [0, 1].
        ({"reward": 1e12}, "reward: 1000000000000.0 is outside [0, 1]"),
        ({"reward": 1.5}, "reward: 1.5 is outside [0, 1]"),
        ({"reward": 10**400}, "reward: inf is outside [0, 1]"),
        (
            {"truth": {"data": {"ndarray": [[7]]}}, "response": {"data": {"ndarray": [[0.1, 0.9]]}}},
            "truth: 7 is not a class of this model (0, 1)",
        ),
        (
            {
                "truth": {"data": {"ndarray": [[1]]}},
                "response": {"data": {"ndarray": [[0.1, 0.9], [0.2, 0.8]]}},
            },
            "must match",
        ),
        (
            {"truth": {"data": {"ndarray": [["x"]]}}, "response": {"data": {"ndarray": [[0.1, 0.9]]}}},
            "truth: 'x' is not a class of this model",
        ),
        ([1, 2], "expected a Feedback JSON object"),
    ],
)
def test_bad_feedback_is_400(http: httpx.Client, body: Any, message: str) -> None:
    r = http.post("/api/v1.0/feedback", json=body)
    assert r.status_code == 400
    assert message in r.json()["status"]["info"]


def test_metrics_count_requests_by_code(http: httpx.Client, live: Any) -> None:
    before = http.get("/metrics").text
    ok0 = _metric(before, "sluice_model_requests_total", endpoint="predictions", code="200")
    bad0 = _metric(before, "sluice_model_requests_total", endpoint="predictions", code="400")
    infer0 = _metric(before, "sluice_model_request_seconds_count", endpoint="infer", code="200")
    http.post("/api/v1.0/predictions", json=_v1([[1.0] * 30]))
    http.post("/api/v1.0/predictions", json=_v1([[1.0] * 29]))
    http.post(
        f"/v2/models/{live.app.name}/infer",
        json={"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": [1.0] * 30}]},
    )
    r = http.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    after = r.text
    assert _metric(after, "sluice_model_requests_total", endpoint="predictions", code="200") == ok0 + 1
    assert _metric(after, "sluice_model_requests_total", endpoint="predictions", code="400") == bad0 + 1
    assert _metric(after, "sluice_model_request_seconds_count", endpoint="infer", code="200") == infer0 + 1
    assert f'model_digest="{live.app.predictor.digest}"' in after


def test_openapi_says_what_the_model_takes(http: httpx.Client, live: Any) -> None:
    doc = http.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    for path in ("/api/v1.0/predictions", "/api/v1.0/feedback", "/v2/models/{name}/infer", "/health/ping"):
        assert path in doc["paths"]
    schemas = doc["components"]["schemas"]
    features = live.app.predictor.feature_names
    record = schemas["PredictRequest"]["properties"]["jsonData"]["anyOf"][1]
    assert record["required"] == features and record["additionalProperties"] is False
    row = schemas["PredictRequest"]["properties"]["data"]["properties"]["ndarray"]["anyOf"][1]
    assert row["minItems"] == row["maxItems"] == len(features)
    assert row["items"]["maximum"] == 2.0**64  # products of two values still fit the float32 model
    assert schemas["FeedbackRequest"]["properties"]["reward"]["maximum"] == 1
    for path, ops in doc["paths"].items():  # every operation that takes input declares its 4xx answers
        for op in ops.values():
            if "requestBody" in op or op.get("parameters"):
                assert any(code.startswith("4") for code in op["responses"]), path


def test_docs_are_served_offline(http: httpx.Client) -> None:
    page = http.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "http" not in page.text.replace("http-equiv", "")  # nothing fetched from another host
    assets = re.findall(r'(?:href|src)="(docs/[^"]+)"', page.text)
    assert {"docs/swagger-ui.css", "docs/swagger-ui-bundle.js"} <= set(assets)
    for asset in assets:
        r = http.get("/" + asset)
        assert r.status_code == 200 and len(r.content) > 500, asset
    assert "SwaggerUIBundle" in http.get("/docs/swagger-ui-bundle.js").text


# bad input: always a 4xx naming the problem, never a 500 ---------------------------------------------
V1 = "/api/v1.0/predictions"


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        (V1, _v1([[1.0] * 29]), 400, "wrong feature count: got 29"),
        (V1, _v1([[1.0] * 30], ["nope", *["f"] * 29]), 400, "unknown feature 'nope'"),
        (V1, {"jsonData": [{"colour": 1.0}]}, 400, "unknown feature 'colour'"),
        (V1, _v1([[1.0] * 29 + ["abc"]]), 400, "non-numeric value in the request: 'abc'"),
        (V1, _v1([[1.0] * 29 + [None]]), 400, "non-numeric"),
        (V1, _v1([]), 400, "empty batch"),
        (V1, {"jsonData": []}, 400, "empty batch"),
        (
            V1,
            {"data": {"tensor": {"shape": [2, 30], "values": [1.0] * 30}}},
            400,
            "needs 60 values, data holds 30",
        ),
        (V1, {"data": {}}, 400, "expected `ndarray` or `tensor`"),
        (V1, {"strData": "hello"}, 400, "strData is not supported"),
        (V1, {}, 400, "expected one of data.ndarray"),
        (V1, [1, 2, 3], 400, "expected a SeldonMessage JSON object"),
        (
            "/v2/models/{m}/infer",
            {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "BYTES", "data": ["a"] * 30}]},
            400,
            "datatype 'BYTES' is not supported",
        ),
        (
            "/v2/models/{m}/infer",
            {"inputs": [{"name": "input", "shape": [2, 30], "datatype": "FP32", "data": [1.0] * 30}]},
            400,
            "shape [2, 30] needs 60 values, data holds 30",
        ),
        (
            "/v2/models/{m}/infer",
            {"inputs": [{"name": "input", "shape": [1, 29], "datatype": "FP32", "data": [1.0] * 29}]},
            400,
            "wrong feature count",
        ),
        (
            "/v2/models/{m}/infer",
            {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "INT64", "data": [1.5] * 30}]},
            400,
            "non-integer",
        ),
        (
            "/v2/models/{m}/infer",
            {"inputs": [{"name": "input", "shape": [0, 30], "datatype": "FP32", "data": []}]},
            400,
            "empty batch",
        ),
        ("/v2/models/{m}/infer", {"inputs": []}, 400, "inputs: expected a non-empty list"),
        (
            "/v2/models/{m}/infer",
            {
                "inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": [1.0] * 30}],
                "outputs": [{"name": "logits"}],
            },
            400,
            "unknown output 'logits'",
        ),
        ("/v2/models/nope/infer", {"inputs": []}, 404, "unknown model 'nope'"),
        ("/v2/models/{m}/versions/999/infer", {"inputs": []}, 404, "has no version '999'"),
        ("/v2/models/{m}/explain", {}, 404, "no such endpoint"),
        ("/no/such/path", {}, 404, "no such endpoint"),
    ],
)
def test_bad_request(http: httpx.Client, live: Any, path: str, body: Any, status: int, message: str) -> None:
    r = http.post(path.replace("{m}", live.app.name), json=body)
    assert r.status_code == status, r.text
    text = r.json()["error"] if path.startswith("/v2") else r.json()["status"]["info"]
    assert message in text


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"data": {"ndarray": [[1.0, 2.0', "malformed JSON"),
        (b"", "body is empty"),
        (b"not json", "malformed JSON"),
        # Python's json.dumps writes NaN/Infinity for non-finite floats: say which feature holds one.
        (json.dumps({"data": {"ndarray": [[math.nan] + [1.0] * 29]}}).encode(), "not a finite number"),
        (json.dumps({"data": {"ndarray": [[1.0] * 29 + [math.inf]]}}).encode(), "not a finite number"),
        (b'{"data": {"ndarray": [[1e999' + b", 1.0" * 29 + b"]]}}", "not a finite number"),
    ],
)
def test_malformed_body_is_400(http: httpx.Client, raw: bytes, message: str) -> None:
    r = http.post(V1, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert message in r.json()["status"]["info"]


def test_body_too_large_is_413_and_server_keeps_serving(http: httpx.Client, live: Any) -> None:
    big = json.dumps(_v1([[1.0] * 30] * 20_000)).encode()
    assert len(big) > live.app.max_body_bytes
    r = http.post(V1, content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert "too large" in r.json()["status"]["info"]

    def chunks() -> Iterator[bytes]:  # no content-length: the cap applies while reading
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    r = http.post(V1, content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert http.post(V1, json=_v1([[1.0] * 30])).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", V1, "POST, OPTIONS"),
        ("TRACE", V1, "POST, OPTIONS"),
        ("PUT", "/api/v1.0/feedback", "POST, OPTIONS"),
        ("POST", "/health/ping", "GET, HEAD, OPTIONS"),
        ("TRACE", "/metrics", "GET, HEAD, OPTIONS"),
        ("DELETE", "/v2/models/{m}/infer", "POST, OPTIONS"),
        ("TRACE", "/v2/models/{m}/versions/{v}/ready", "GET, HEAD, OPTIONS"),
        ("PATCH", "/seldon/ns/dep/api/v1.0/predictions", "POST, OPTIONS"),
    ],
)
def test_undeclared_methods_get_405_with_allow(
    http: httpx.Client, live: Any, method: str, path: str, allow: str
) -> None:
    path = path.replace("{m}", live.app.name).replace("{v}", live.app.version)
    r = http.request(method, path)
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == allow
    assert method in (r.json().get("error") or r.json()["status"]["info"])
    options = http.request("OPTIONS", path)
    assert options.status_code == 204 and options.headers["allow"] == allow


def test_head_answers_like_get_without_a_body(http: httpx.Client) -> None:
    got, head = http.get("/v2/health/ready"), http.head("/v2/health/ready")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"]


def test_ingress_paths_and_the_deployment_they_name(bundle_dir: Any, serve: Any) -> None:
    from serving.core.predictor import Predictor
    from serving.http.app import PredictorApp
    from serving.http.model_metrics import ServingMetrics

    predictor = Predictor.load(bundle_dir)
    metrics = ServingMetrics(predictor.name, predictor.digest, deployment_name="sluice")
    server = serve(PredictorApp(predictor, metrics=metrics))  # under Seldon: SELDON_DEPLOYMENT_ID=sluice
    body = _v1([[1.0] * 30])
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.post("/seldon/production/sluice/api/v1.0/predictions", json=body).status_code == 200
        assert c.post("/seldon/sluice/api/v1.0/predictions", json=body).status_code == 200  # no namespace
        infer = f"/seldon/production/sluice/v2/models/{predictor.name}/infer"
        v2_body = {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP64", "data": [1.0] * 30}]}
        assert c.post(infer, json=v2_body).status_code == 200
        other = c.post("/seldon/production/other/api/v1.0/predictions", json=body)
        assert other.status_code == 404
        assert "no deployment 'other' here: this predictor serves 'sluice'" in other.json()["status"]["info"]
        assert c.post("/seldon/x", json=body).status_code == 404


@pytest.mark.parametrize(
    ("content_type", "body", "status", "message"),
    [
        ("application/x-www-form-urlencoded", b"json=%7B%7D", 400, "expected one of data.ndarray"),
        ("application/x-www-form-urlencoded", b"data=1", 400, "exactly one field json="),
        ("application/x-www-form-urlencoded", b"json=1&json=2", 400, "exactly one field json="),
        ("application/x-www-form-urlencoded", b"json=%ff%fe", 400, "malformed"),
        ("application/x-www-form-urlencoded; charset=utf-8", b"\xff=1", 400, "malformed form body"),
        ("multipart/form-data; boundary=x", b"--x--", 415, "multipart/form-data is not supported"),
    ],
)
def test_seldon_form_bodies(
    http: httpx.Client, content_type: str, body: bytes, status: int, message: str
) -> None:
    r = http.post("/predict", content=body, headers={"content-type": content_type})
    assert r.status_code == status, r.text
    assert message in r.json()["status"]["info"]
