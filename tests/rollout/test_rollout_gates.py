"""Each gate metric, absolute and relative, and every no-data rule."""

from __future__ import annotations

import math

import pytest
from rollout_factories import CAND, STABLE, healthy, obs

from rollout.gates import GateContext, evaluate
from rollout.observations import Observations, PredictorStats, histogram_quantile
from rollout.policy import Gate


def ctx(shadow: bool = False, stable_traffic: bool = True, in_stage: float = 0) -> GateContext:
    return GateContext(CAND, STABLE, shadow, stable_traffic, in_stage)


def gate(**kw: object) -> Gate:
    return Gate.model_validate({"name": "g", **kw})


def test_success_rate_absolute() -> None:
    g = gate(metric="success_rate", min=0.99, min_sample=10)
    assert evaluate(g, obs(healthy(100, 0)), ctx()).verdict == "pass"
    r = evaluate(g, obs(healthy(100, 5)), ctx())
    assert r.verdict == "fail" and r.value == pytest.approx(0.95) and r.threshold == "value >= 0.99"


def test_latency_quantile_ratio_to_stable() -> None:
    g = gate(metric="latency", quantile=0.99, compare="ratio", max=1.5, min_sample=10)
    slow = PredictorStats(requests=100, buckets=((0.01, 0), (0.1, 10), (1.0, 100), (math.inf, 100)))
    r = evaluate(g, obs(slow, healthy()), ctx())
    assert (
        r.verdict == "fail" and r.baseline is not None and r.value is not None and r.value > r.baseline * 1.5
    )
    assert evaluate(g, obs(healthy(), healthy()), ctx()).verdict == "pass"


def test_accuracy_difference() -> None:
    g = gate(metric="accuracy", compare="difference", min=-0.02, min_sample=50)
    good = PredictorStats(feedback=100, reward=90)
    assert evaluate(g, obs(PredictorStats(feedback=100, reward=89), good), ctx()).verdict == "pass"
    r = evaluate(g, obs(PredictorStats(feedback=100, reward=80), good), ctx())
    assert r.verdict == "fail" and r.baseline == pytest.approx(0.9)


def test_disagreement_only_for_shadows() -> None:
    g = gate(metric="disagreement", max=0.05, min_sample=10)
    s = PredictorStats(comparisons=100, disagreements=10)
    assert evaluate(g, obs(s), ctx(shadow=False)).verdict == "skip"
    assert evaluate(g, obs(s), ctx(shadow=True)).verdict == "fail"
    assert (
        evaluate(g, obs(PredictorStats(comparisons=100, disagreements=1)), ctx(shadow=True)).verdict == "pass"
    )


def test_promql_range_and_relative() -> None:
    g = gate(metric="promql", query="x", min=0.2, max=0.8)
    o = Observations(10, custom={"g": {CAND: 0.5}})
    assert evaluate(g, o, ctx()).verdict == "pass"
    assert evaluate(g, Observations(10, custom={"g": {CAND: 0.9}}), ctx()).verdict == "fail"
    rel = gate(metric="promql", query="x", compare="ratio", max=1.1)
    assert evaluate(rel, Observations(10, custom={"g": {CAND: 2.0, STABLE: 1.0}}), ctx()).verdict == "fail"


def test_relative_gate_skipped_when_stable_idle() -> None:
    g = gate(metric="latency", compare="ratio", max=1.5)
    assert evaluate(g, obs(healthy()), ctx(stable_traffic=False)).verdict == "skip"


@pytest.mark.parametrize(
    ("rule", "in_stage", "verdict"),
    [("hold", 10, "hold"), ("hold", 61, "fail"), ("fail", 0, "fail"), ("pass", 0, "no-data-pass")],
)
def test_no_data_rules(rule: str, in_stage: float, verdict: str) -> None:
    g = gate(metric="success_rate", min=0.99, min_sample=50, no_data=rule, no_data_deadline=60)
    r = evaluate(g, obs(healthy(10)), ctx(in_stage=in_stage))  # 10 < min_sample
    assert r.verdict == verdict and "no data" in r.detail


def test_no_baseline_is_no_data() -> None:
    g = gate(metric="success_rate", compare="difference", min=-0.01, min_sample=10, no_data="fail")
    assert evaluate(g, obs(healthy(100)), ctx()).verdict == "fail"


def test_histogram_quantile_matches_prometheus_interpolation() -> None:
    b = ((0.1, 50.0), (0.2, 100.0), (math.inf, 100.0))
    assert histogram_quantile(0.5, b) == pytest.approx(0.1)
    assert histogram_quantile(0.75, b) == pytest.approx(0.15)
    assert histogram_quantile(0.99, ((0.1, 0.0), (math.inf, 10.0))) == pytest.approx(0.1)
    assert histogram_quantile(0.5, ()) is None
