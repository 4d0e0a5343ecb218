"""The predictor's Prometheus metrics: Seldon's names and labels, cumulative histogram buckets, counters."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.http.model_metrics import BUCKETS, ServingMetrics


def _samples(metrics: ServingMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _get(samples: dict, name: str, **labels: str) -> float:
    hits = [v for (n, ls), v in samples.items() if n == name and all((k, v) in ls for k, v in labels.items())]
    assert len(hits) == 1, (name, labels, hits)
    return hits[0]


def test_histogram_buckets_are_cumulative_and_inclusive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SELDON_DEPLOYMENT_ID", "sluice")
    monkeypatch.setenv("PREDICTOR_ID", "m-abc")
    m = ServingMetrics("model", "sha256:abc")
    for seconds in (0.00005, BUCKETS[1], 0.0003, 3.0):
        m.observe("predictions", 200, seconds)
    m.observe("infer", 400, 0.001)
    s = _samples(m)
    ok = {"endpoint": "predictions", "code": "200", "deployment_name": "sluice", "predictor_name": "m-abc"}
    assert _get(s, "sluice_model_request_seconds_bucket", le="0.0001", **ok) == 1
    assert (
        _get(s, "sluice_model_request_seconds_bucket", le="0.00025", **ok) == 2
    )  # a value on a bound counts
    assert _get(s, "sluice_model_request_seconds_bucket", le="0.0005", **ok) == 3
    assert _get(s, "sluice_model_request_seconds_bucket", le="2.5", **ok) == 3
    assert _get(s, "sluice_model_request_seconds_bucket", le="+Inf", **ok) == 4
    assert _get(s, "sluice_model_request_seconds_count", **ok) == 4
    assert _get(s, "sluice_model_request_seconds_sum", **ok) == pytest.approx(
        0.00005 + 0.00025 + 0.0003 + 3.0
    )
    assert _get(s, "sluice_model_requests_total", **ok) == 4
    assert _get(s, "sluice_model_requests_total", endpoint="infer", code="400") == 1


def test_rows_and_feedback_counters() -> None:
    m = ServingMetrics("model", "sha256:abc")
    m.add_rows(3)
    m.add_rows(2)
    m.record_feedback(1.0)
    m.record_feedback(0.25)
    s = _samples(m)
    assert _get(s, "sluice_model_rows_total", model_digest="sha256:abc") == 5
    assert _get(s, "seldon_api_model_feedback_total", model_name="model") == 2
    assert _get(s, "seldon_api_model_feedback_reward_total", model_name="model") == 1.25


def test_registries_are_separate() -> None:
    a, b = ServingMetrics("a", "sha256:a"), ServingMetrics("b", "sha256:b")
    a.add_rows(1)
    assert _get(_samples(b), "sluice_model_rows_total", model_name="b") == 0
