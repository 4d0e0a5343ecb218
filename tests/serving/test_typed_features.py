"""Mixed rows and regressions over both protocols: text, boolean and missing values; values for a regressor.

A real server (uvicorn on loopback) serves a multiclass bundle whose features are numeric, categorical and
boolean, each with missing values, and a regression bundle; every answer is checked against scikit-learn
itself on the bundle's test split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from typed_rows import json_rows

from model.bundle import Bundle

V1 = "/api/v1.0/predictions"


@pytest.fixture(scope="module")
def mixed_rows(mixed_bundle_dir: Path) -> tuple[list[dict[str, Any]], pd.DataFrame, Any]:
    records, typed = json_rows(mixed_bundle_dir)
    model = Bundle.open(mixed_bundle_dir).load_sklearn()
    return records, typed, model


def test_the_test_split_holds_every_kind_of_value(mixed_rows: Any) -> None:
    records, _, _ = mixed_rows
    seen = {type(v).__name__ for r in records for v in r.values()}
    assert seen == {"float", "str", "bool", "NoneType"}


def test_v1_ndarray_of_mixed_rows_matches_sklearn(mixed_live: Any, mixed_rows: Any) -> None:
    records, typed, model = mixed_rows
    names = list(records[0])
    r = httpx.post(
        mixed_live.url + V1, json={"data": {"names": names, "ndarray": [list(x.values()) for x in records]}}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["data"]["names"] == ["Adelie", "Chinstrap", "Gentoo"]
    np.testing.assert_allclose(body["data"]["ndarray"], model.predict_proba(typed), atol=1e-4)


def test_v1_json_records_answer_text_labels(mixed_live: Any, mixed_rows: Any) -> None:
    records, typed, model = mixed_rows
    r = httpx.post(mixed_live.url + V1, json={"jsonData": records})
    assert r.status_code == 200, r.text
    assert r.json()["jsonData"]["labels"] == model.predict(typed).tolist()
    assert r.json()["jsonData"]["classes"] == ["Adelie", "Chinstrap", "Gentoo"]


def _v2_inputs(records: list[dict[str, Any]], signature: Any) -> list[dict[str, Any]]:
    datatype = {"numeric": "FP64", "boolean": "BOOL", "categorical": "BYTES"}
    return [
        {
            "name": f.name,
            "shape": [len(records)],
            "datatype": datatype[f.type],
            "data": [r[f.name] for r in records],
        }
        for f in signature.features
    ]


def test_v2_one_tensor_per_feature_with_bytes_bool_and_nulls(
    mixed_live: Any, mixed_rows: Any, mixed_bundle_dir: Path
) -> None:
    records, typed, model = mixed_rows
    signature = Bundle.open(mixed_bundle_dir).signature
    r = httpx.post(
        f"{mixed_live.url}/v2/models/{mixed_live.app.name}/infer",
        json={"inputs": _v2_inputs(records, signature)},
    )
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    assert outputs["label"]["datatype"] == "BYTES"
    assert outputs["label"]["data"] == model.predict(typed).tolist()
    got = np.asarray(outputs["probabilities"]["data"]).reshape(outputs["probabilities"]["shape"])
    np.testing.assert_allclose(got, model.predict_proba(typed), atol=1e-4)


def test_v2_metadata_lists_each_feature_with_its_datatype(mixed_live: Any) -> None:
    meta = httpx.get(f"{mixed_live.url}/v2/models/{mixed_live.app.name}").json()
    inputs = {i["name"]: i["datatype"] for i in meta["inputs"]}
    assert inputs["island"] == "BYTES" and inputs["adult"] == "BOOL" and inputs["body_mass_g"] == "FP64"
    assert {o["name"]: o["datatype"] for o in meta["outputs"]}["label"] == "BYTES"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"island": "Atlantis"},
            "row 0, feature 'island': 'Atlantis' is not one of its categories ('Biscoe', 'Dream', 'Torgersen')",
        ),
        ({"flipper length": None}, "row 0, feature 'flipper length': missing (null), and it may not be"),
        ({"adult": "yes"}, "row 0, feature 'adult': 'yes' is not a boolean"),
        ({"island": 3}, "row 0, feature 'island': 3 is not a category (expected text)"),
        ({"body_mass_g": "heavy"}, "row 0, feature 'body_mass_g': non-numeric value 'heavy'"),
    ],
)
def test_a_row_the_contract_refuses_is_a_400_on_both_protocols(
    mixed_live: Any, mixed_rows: Any, mixed_bundle_dir: Path, change: dict[str, Any], message: str
) -> None:
    records, _, _ = mixed_rows
    row = {**records[0], **change}
    v1 = httpx.post(mixed_live.url + V1, json={"jsonData": [row]})
    assert v1.status_code == 400 and message in v1.json()["status"]["info"]
    signature = Bundle.open(mixed_bundle_dir).signature
    inputs = _v2_inputs([row], signature)
    for tensor in inputs:  # a hostile client may send any datatype: the validator decides
        value = tensor["data"][0]
        tensor["datatype"] = "BYTES" if isinstance(value, str) else tensor["datatype"]
        if isinstance(value, int) and not isinstance(value, bool):
            tensor["datatype"] = "INT64"
    v2 = httpx.post(f"{mixed_live.url}/v2/models/{mixed_live.app.name}/infer", json={"inputs": inputs})
    assert v2.status_code == 400 and message in v2.json()["error"]


def test_v2_a_typed_model_takes_one_tensor_per_feature(mixed_live: Any) -> None:
    body = {"inputs": [{"name": "input", "shape": [1, 6], "datatype": "FP64", "data": [1.0] * 6}]}
    r = httpx.post(f"{mixed_live.url}/v2/models/{mixed_live.app.name}/infer", json=body)
    assert r.status_code == 400 and "this model takes one input per feature" in r.json()["error"]


def test_health_probe_and_feedback_with_text_labels(mixed_live: Any, mixed_rows: Any) -> None:
    assert httpx.get(mixed_live.url + "/health/status").json()["jsonData"]["probe_label"] in (
        "Adelie",
        "Chinstrap",
        "Gentoo",
    )
    records, typed, model = mixed_rows
    truth = model.predict(typed)[:4].tolist()
    feedback = {"request": {"jsonData": records[:4]}, "truth": {"data": {"ndarray": [[t] for t in truth]}}}
    r = httpx.post(mixed_live.url + "/api/v1.0/feedback", json=feedback)
    assert r.status_code == 200, r.text
    assert r.json()["meta"]["tags"]["reward"] == 1.0
    wrong = {**feedback, "truth": {"data": {"ndarray": [["Emperor"]] * 4}}}
    r = httpx.post(mixed_live.url + "/api/v1.0/feedback", json=wrong)
    assert r.status_code == 400 and "'Emperor' is not a class of this model" in r.json()["status"]["info"]


# regression ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def regression_rows(regression_bundle_dir: Path) -> tuple[list[dict[str, Any]], np.ndarray]:
    records, typed = json_rows(regression_bundle_dir)
    return records, Bundle.open(regression_bundle_dir).load_sklearn().predict(typed)


def test_a_regression_answers_its_values_on_both_protocols(
    regression_live: Any, regression_rows: Any
) -> None:
    records, expected = regression_rows
    names = list(records[0])
    v1 = httpx.post(
        regression_live.url + V1,
        json={"data": {"names": names, "ndarray": [list(r.values()) for r in records]}},
    )
    assert v1.status_code == 200, v1.text
    assert v1.json()["data"]["names"] == ["prediction"]
    np.testing.assert_allclose(np.asarray(v1.json()["data"]["ndarray"])[:, 0], expected, rtol=1e-5)
    json_form = httpx.post(regression_live.url + V1, json={"jsonData": records}).json()["jsonData"]
    np.testing.assert_allclose(json_form["predictions"], expected, rtol=1e-5)

    matrix = [[r[n] for n in names] for r in records]
    body = {
        "inputs": [{"name": "input", "shape": [len(records), len(names)], "datatype": "FP64", "data": matrix}]
    }
    v2 = httpx.post(f"{regression_live.url}/v2/models/{regression_live.app.name}/infer", json=body)
    assert v2.status_code == 200, v2.text
    (output,) = v2.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("prediction", "FP64", [len(records)])
    np.testing.assert_allclose(output["data"], expected, rtol=1e-5)
    meta = httpx.get(f"{regression_live.url}/v2/models/{regression_live.app.name}").json()
    assert meta["outputs"] == [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
    label = httpx.post(
        f"{regression_live.url}/v2/models/{regression_live.app.name}/infer",
        json={**body, "outputs": [{"name": "label"}]},
    )
    assert label.status_code == 400 and "this model gives prediction" in label.json()["error"]


def test_regression_feedback_scores_the_error_against_the_target_range(
    regression_live: Any, regression_bundle_dir: Path
) -> None:
    low, high = Bundle.open(regression_bundle_dir).signature.target_bounds
    response = {"data": {"names": ["prediction"], "ndarray": [[100.0], [200.0]]}}
    truth = {"data": {"ndarray": [[110.0], [140.0]]}}
    r = httpx.post(regression_live.url + "/api/v1.0/feedback", json={"response": response, "truth": truth})
    assert r.status_code == 200, r.text
    tags = r.json()["meta"]["tags"]
    assert tags["mean_abs_error"] == pytest.approx(35.0)
    assert tags["reward"] == pytest.approx(1 - 35.0 / (high - low))
    bad = httpx.post(
        regression_live.url + "/api/v1.0/feedback",
        json={"response": response, "truth": {"data": {"ndarray": [["a"], ["b"]]}}},
    )
    assert bad.status_code == 400 and "truth" in bad.json()["status"]["info"]


def test_an_int64_beyond_its_range_is_refused_though_json_reads_it_as_a_float(regression_live: Any) -> None:
    # orjson reads -9223372036854775809 as the float -2.0**63, INT64's minimum: found by schemathesis.
    body = b'{"inputs": [{"name": "x", "shape": [10], "datatype": "INT64", "data": [[-9223372036854775809, 0, 0, 0, 0, 0, 0, 0, 0, 0]]}]}'
    r = httpx.post(
        f"{regression_live.url}/v2/models/{regression_live.app.name}/infer",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and "value out of range for INT64" in r.json()["error"]


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        ({"datatype": "BYTES", "data": [{"a": 1}]}, "data holds an object"),
        ({"datatype": "BYTES", "data": [[["Dream"]]]}, "data nested deeper than [rows, 1]"),
        ({"datatype": "BYTES", "data": [3]}, "datatype BYTES but data holds 3"),
        ({"datatype": "BOOL", "data": ["true"]}, "datatype BOOL but data holds 'true'"),
        ({"datatype": "FP64", "data": [None, "x"]}, "datatype FP64 but data holds 'x'"),
        ({"datatype": "BYTES", "data": ["Dream", "Biscoe"]}, "shape [1] needs 1 values, data holds 2"),
        ({"datatype": "BYTES", "data": ["x" * 100_000]}, "is not one of its categories"),
    ],
)
def test_hostile_typed_tensors_are_a_400_naming_the_input(
    mixed_live: Any, mixed_rows: Any, mixed_bundle_dir: Path, tensor: dict[str, Any], message: str
) -> None:
    records, _, _ = mixed_rows
    inputs = _v2_inputs(records[:1], Bundle.open(mixed_bundle_dir).signature)
    island = next(i for i in inputs if i["name"] == "island")
    island.update(tensor)
    r = httpx.post(f"{mixed_live.url}/v2/models/{mixed_live.app.name}/infer", json={"inputs": inputs})
    assert r.status_code == 400, r.text
    assert message in r.json()["error"] and len(r.json()["error"]) < 1000  # a huge value is not echoed whole
