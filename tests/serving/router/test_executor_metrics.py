"""`RouterMetrics.take` and `merge`: what another process observed, summed and added here, gives the same
series as observing it here one by one (the mirror worker reports the shadow's copies this way)."""

from __future__ import annotations

import random

import orjson
import pytest

from serving.router.executor_metrics import PredictorLabels, RouterMetrics, dropped_in

SHADOWS = [
    PredictorLabels("staging", "sd", "m-shadow", "v1", "classifier", "img", "1"),
    PredictorLabels("staging", "sd", "m-shadow", "v2", "classifier", "img", "2"),
    PredictorLabels("prod", "sd", "m-other", "", "classifier", "img", "1"),
]


def _observe(m: RouterMetrics, rng: random.Random) -> int:
    """One random observation on `m`; returns the copies it dropped (0 or 1)."""
    p = rng.choice(SHADOWS)
    seconds = rng.randrange(0, 20_000) / 1024  # binary fractions: sums are exact in any order
    code = rng.choice([200, 200, 200, 502, 504, 500])
    kind = rng.randrange(6)
    if kind == 0:
        m.observe_server(p, "predictions", "POST", code, seconds)
    elif kind == 1:
        m.observe_client(p, "predictions", "POST", code, seconds)
    elif kind == 2:
        m.count_comparison(p, rng.random() < 0.3)
    elif kind == 3:
        m.count_feedback(p, rng.randrange(0, 3) / 2)
    elif kind == 4:
        m.count_retry(p, "m-live")
    else:
        m.count_dropped(p)
        return 1
    return 0


@pytest.mark.parametrize("seed", range(5))
def test_sums_taken_in_batches_and_merged_equal_every_observation_made_here(seed: int) -> None:
    rng = random.Random(seed)
    here, there, merged = RouterMetrics(), RouterMetrics(), RouterMetrics()
    dropped_here = dropped_merged = 0
    for _ in range(rng.randrange(1, 40)):  # reports of any size, empty ones included
        for _ in range(rng.randrange(0, 200)):
            state = rng.getstate()
            dropped_here += _observe(here, rng)
            rng.setstate(state)
            _observe(there, rng)
        delta = orjson.loads(orjson.dumps(there.take()))  # as it crosses the socket
        dropped_merged += dropped_in(delta)
        merged.merge(delta)
    assert merged.exposition() == here.exposition()
    assert dropped_merged == dropped_here
    assert there.take() == {}  # what was taken is gone: a second take reports nothing twice


def test_a_take_counts_each_observation_once() -> None:
    there, merged = RouterMetrics(), RouterMetrics()
    p = SHADOWS[0]
    there.observe_server(p, "predictions", "POST", 200, 0.001)
    there.count_comparison(p, True)
    merged.merge(there.take())
    there.observe_server(p, "predictions", "POST", 200, 0.001)
    merged.merge(there.take())
    merged.merge(there.take())  # nothing new since
    text = merged.exposition().decode()
    assert "seldon_api_executor_server_requests_seconds_count{" in text
    counts = [
        line
        for line in text.splitlines()
        if line.startswith("seldon_api_executor_server_requests_seconds_count")
    ]
    assert len(counts) == 1 and counts[0].endswith(" 2.0")
    assert any(
        line.startswith("sluice_shadow_disagreements_total") and line.endswith(" 1.0")
        for line in text.splitlines()
    )


def test_a_report_with_the_wrong_bucket_count_is_refused() -> None:
    there = RouterMetrics()
    there.observe_server(SHADOWS[0], "predictions", "POST", 200, 0.001)
    delta = there.take()
    delta["server"][0][1] = delta["server"][0][1][:-1]
    with pytest.raises(ValueError, match="buckets"):
        RouterMetrics().merge(delta)
