"""`sluice up` with real predictors of a mixed-type model (and a shadow of it) and of a regression: mixed rows
over both protocols through the router, text labels in the shadow comparison, and a regression's feedback
counted as the reward the rollout gates read (1 - |error| / the target's range)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typed_rows import json_rows  # tests/serving
from up_harness import RunningRuntime, metric_samples, predictor, write_manifest

from deployment import metric_names as n
from model.bundle import Bundle

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
PREDICT = "/api/v1.0/predictions"


def _runtime(tmp: Path, predictors: list[dict[str, Any]]) -> RunningRuntime:
    env = tmp / "env"
    env.mkdir()
    write_manifest(env, predictors)
    return RunningRuntime(env, ready_timeout=120).start(timeout=150)  # real predictors: the default command


@pytest.fixture(scope="module")
def mixed_up(mixed_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRuntime]:
    bundle = Bundle.open(mixed_bundle_dir)
    rt = _runtime(
        tmp_path_factory.mktemp("mixed-up"),
        [
            predictor("m-live", 100, bundle.path, bundle.digest),
            predictor("m-shadow", 100, bundle.path, bundle.digest, shadow=True),
        ],
    )
    yield rt
    rt.stop()


def test_mixed_rows_through_the_router_on_both_protocols(
    mixed_up: RunningRuntime, mixed_bundle_dir: Path
) -> None:
    records, typed = json_rows(mixed_bundle_dir, 10)
    expected = Bundle.open(mixed_bundle_dir).load_sklearn().predict(typed).tolist()
    v1 = httpx.post(mixed_up.url + PREDICT, json={"jsonData": records}, timeout=30)
    assert v1.status_code == 200, v1.text
    assert v1.json()["jsonData"]["labels"] == expected
    signature = Bundle.open(mixed_bundle_dir).signature
    datatype = {"numeric": "FP64", "boolean": "BOOL", "categorical": "BYTES"}
    inputs = [
        {
            "name": f.name,
            "shape": [len(records)],
            "datatype": datatype[f.type],
            "data": [r[f.name] for r in records],
        }
        for f in signature.features
    ]
    v2 = httpx.post(f"{mixed_up.url}/v2/models/classifier/infer", json={"inputs": inputs}, timeout=30)
    assert v2.status_code == 200, v2.text
    assert next(o for o in v2.json()["outputs"] if o["name"] == "label")["data"] == expected
    refused = httpx.post(
        mixed_up.url + PREDICT, json={"jsonData": [{**records[0], "island": "Atlantis"}]}, timeout=30
    )
    assert refused.status_code == 400 and "'Atlantis' is not one of its categories" in refused.text
    # The shadow (the same model) read the live answers' text labels: compared, and never disagreeing.
    mixed_up.wait_for(
        lambda: sum(v for _, v in metric_samples(mixed_up.metrics(), n.SHADOW_COMPARISONS + "_total")) >= 2,
        timeout=30,
        what="shadow comparisons",
    )
    assert sum(v for _, v in metric_samples(mixed_up.metrics(), n.SHADOW_DISAGREEMENTS + "_total")) == 0


def test_a_regressions_feedback_is_counted_as_a_scaled_error(
    regression_bundle_dir: Path, tmp_path: Path
) -> None:
    bundle = Bundle.open(regression_bundle_dir)
    low, high = bundle.signature.target_bounds
    rt = _runtime(tmp_path, [predictor("m-reg", 100, bundle.path, bundle.digest)])
    try:
        records, _ = json_rows(regression_bundle_dir, 2)
        answer = httpx.post(rt.url + PREDICT, json={"jsonData": records}, timeout=30)
        assert answer.status_code == 200, answer.text
        predicted = answer.json()["jsonData"]["predictions"]
        truth = [predicted[0] + 20.0, predicted[1] - 40.0]
        feedback = {
            "response": {
                "data": {"names": ["prediction"], "ndarray": [[v] for v in predicted]},
                "meta": answer.json()["meta"],
            },
            "truth": {"data": {"ndarray": [[t] for t in truth]}},
        }
        counted = httpx.post(rt.url + "/api/v1.0/feedback", json=feedback, timeout=30)
        assert counted.status_code == 200, counted.text
        expected = 1 - 30.0 / (high - low)
        assert counted.json()["meta"]["tags"]["reward"] == pytest.approx(expected)
        rewards = metric_samples(rt.metrics(), n.FEEDBACK_REWARD + "_total")
        assert [v for labels, v in rewards if labels[n.PREDICTOR] == "m-reg"] == [pytest.approx(expected)]
    finally:
        rt.stop()
