"""The streaming worker on a real Redis with mixed rows (text, booleans, nulls) and with a regression."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from model.bundle import Bundle
from serving.core.predictor import Predictor
from serving.stream.redis_streams import RedisStreamsBroker
from serving.stream.worker import StreamWorker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/serving: the typed rows helper
from typed_rows import json_rows

pytestmark = pytest.mark.timeout(60)


def _run(client, predictor: Predictor, records: list) -> tuple[list[dict[str, str]], dict[str, str]]:  # type: ignore[no-untyped-def]
    broker = RedisStreamsBroker(client, "in", "out", "g", consumer="c1")
    broker.ensure_group()
    ids = [client.xadd("in", {"data": json.dumps(r)}).decode() for r in records]
    StreamWorker(predictor, broker, batch=8).run(max_idle_s=0.2, block_ms=50)
    out = {
        f[b"input_id"].decode(): {k.decode(): v.decode() for k, v in f.items()}
        for _, f in client.xrange("out")
    }
    dead = {f[b"input_id"].decode(): f[b"reason"].decode() for _, f in client.xrange("in:dead")}
    return [out[i] for i in ids if i in out], {i: dead[i] for i in ids if i in dead}


def test_mixed_records_are_answered_and_bad_ones_dead_lettered(redis_client, mixed_bundle_dir: Path) -> None:  # type: ignore[no-untyped-def]
    records, typed = json_rows(mixed_bundle_dir)
    model = Bundle.open(mixed_bundle_dir).load_sklearn()
    bad = [{**records[0], "island": "Atlantis"}, {**records[1], "flipper length": None}]
    out, dead = _run(redis_client, Predictor(Bundle.open(mixed_bundle_dir)), [*records, *bad])
    assert [json.loads(o["prediction"]) for o in out] == model.predict(typed).tolist()
    np.testing.assert_allclose(
        [json.loads(o["probabilities"]) for o in out], model.predict_proba(typed), atol=1e-5
    )
    reasons = list(dead.values())
    assert len(reasons) == 2
    assert "feature 'island': 'Atlantis' is not one of its categories" in reasons[0]
    assert "feature 'flipper length': missing (null)" in reasons[1]


def test_a_regression_answers_its_value(redis_client, regression_bundle_dir: Path) -> None:  # type: ignore[no-untyped-def]
    records, typed = json_rows(regression_bundle_dir, 10)
    expected = Bundle.open(regression_bundle_dir).load_sklearn().predict(typed)
    out, dead = _run(redis_client, Predictor(Bundle.open(regression_bundle_dir)), records)
    assert not dead and all("probabilities" not in o for o in out)
    np.testing.assert_allclose([json.loads(o["prediction"]) for o in out], expected, rtol=1e-5)
