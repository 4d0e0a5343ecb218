"""The Seldon Core v1 component with mixed rows and with a regression: its hooks, then the real wrapper."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from seldon_core.flask_utils import SeldonMicroserviceException
from test_component import running_microservice
from typed_rows import json_rows

from model.bundle import Bundle
from serving.component import Classifier


@pytest.fixture(scope="module")
def mixed(mixed_bundle_dir: Path) -> tuple[Classifier, list[dict[str, Any]], Any]:
    component = Classifier(model_uri=str(mixed_bundle_dir))
    component.load()
    records, typed = json_rows(mixed_bundle_dir)
    return component, records, Bundle.open(mixed_bundle_dir).load_sklearn().predict_proba(typed)


def test_json_records_of_mixed_types(mixed: Any) -> None:
    component, records, expected = mixed
    np.testing.assert_allclose(
        component.predict(records, ["Adelie", "Chinstrap", "Gentoo"]), expected, atol=1e-4
    )
    assert component.class_names() == ["Adelie", "Chinstrap", "Gentoo"]


def test_an_ndarray_numpy_turned_to_text_is_read_back_by_feature_type(mixed: Any) -> None:
    component, records, expected = mixed
    names = list(records[0])
    # What seldon-core hands over for data.ndarray [[39.4, "Dream", true, ...]]: numpy makes it all text.
    complete = [i for i, r in enumerate(records) if None not in r.values()][:5]
    X = np.asarray([[records[i][n] for n in reversed(names)] for i in complete])
    assert X.dtype.kind == "U"
    np.testing.assert_allclose(component.predict(X, list(reversed(names))), expected[complete], atol=1e-4)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"island": "Atlantis"}, "'Atlantis' is not one of its categories"),
        ({"flipper length": "tall"}, "feature 'flipper length': non-numeric value 'tall'"),
        ({"adult": "maybe"}, "feature 'adult': 'maybe' is not a boolean"),
    ],
)
def test_bad_text_rows_are_a_400(mixed: Any, change: dict[str, Any], message: str) -> None:
    component, records, _ = mixed
    row = {**{k: v for k, v in records[0].items() if v is not None}, **change}
    names = list(row)
    with pytest.raises(SeldonMicroserviceException) as err:
        component.predict(np.asarray([[row[n] for n in names]]), names)
    assert err.value.status_code == 400 and message in err.value.message


def test_health_and_metadata_of_a_mixed_model(mixed: Any) -> None:
    component, _, _ = mixed
    assert len(component.health_status()[0]) == 3
    assert component.init_metadata()["outputs"][0]["schema"]["names"] == ["Adelie", "Chinstrap", "Gentoo"]


def test_a_regression_component_answers_values_and_scores_feedback(regression_bundle_dir: Path) -> None:
    component = Classifier(model_uri=str(regression_bundle_dir))
    component.load()
    records, typed = json_rows(regression_bundle_dir, 5)
    expected = Bundle.open(regression_bundle_dir).load_sklearn().predict(typed)
    got = component.predict(records, ["prediction"])
    assert got.shape == (5, 1) and component.class_names() == ["prediction"]
    np.testing.assert_allclose(got[:, 0], expected, rtol=1e-5)
    names = list(records[0])
    X = np.asarray([[r[n] for n in names] for r in records])
    component.send_feedback(X, names, 0.0, np.asarray(expected).reshape(-1, 1))
    assert {m["key"] for m in component.metrics()} == {"sluice_model_feedback"}
    with pytest.raises(SeldonMicroserviceException) as err:
        component.send_feedback(X, names, 0.0, np.asarray([["a"]] * 5))
    assert "truth" in err.value.message


@pytest.fixture(scope="module")
def microservice(mixed_bundle_dir: Path) -> Iterator[list[int]]:
    with running_microservice(mixed_bundle_dir.resolve().as_uri(), None) as ports:
        yield ports


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_mixed_rows_under_seldon_core_microservice(microservice: list[int], mixed: Any) -> None:
    _, records, expected = mixed
    url = f"http://127.0.0.1:{microservice[0]}/api/v1.0/predictions"
    names = list(records[0])
    as_json = httpx.post(url, json={"jsonData": records}, timeout=10)
    assert as_json.status_code == 200, as_json.text
    tensor = as_json.json()["data"]["tensor"]  # the wrapper answers an array as a tensor
    np.testing.assert_allclose(np.reshape(tensor["values"], tensor["shape"]), expected, atol=1e-4)
    complete = [i for i, r in enumerate(records) if None not in r.values()][:5]
    ndarray = {"data": {"names": names, "ndarray": [[records[i][n] for n in names] for i in complete]}}
    as_rows = httpx.post(url, json=ndarray, timeout=10)
    assert as_rows.status_code == 200, as_rows.text
    assert as_rows.json()["data"]["names"] == ["Adelie", "Chinstrap", "Gentoo"]
    np.testing.assert_allclose(as_rows.json()["data"]["ndarray"], expected[complete], atol=1e-4)
    unknown = {
        "data": {
            "names": names,
            "ndarray": [
                [
                    *[records[complete[0]][n] for n in names[:3]],
                    "Atlantis",
                    *[records[complete[0]][n] for n in names[4:]],
                ]
            ],
        }
    }
    refused = httpx.post(url, json=unknown, timeout=10)
    assert refused.status_code == 400 and "'Atlantis' is not one of its categories" in refused.text
