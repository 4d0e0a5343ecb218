"""Each gate kind as a statistical decision: pass, fail and hold from the interval and the margin, the
evidence every result carries, and every no-data rule."""

from __future__ import annotations

import math

import pytest
from rollout_factories import CAND, STABLE, healthy, obs

from rollout.gates import SAMPLE_SUFFIX, GateContext, custom_queries, evaluate
from rollout.observations import Observations, PredictorStats, histogram_quantile
from rollout.policy import Gate

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, math.inf)


def ctx(shadow: bool = False, stable_traffic: bool = True, in_stage: float = 0) -> GateContext:
    return GateContext(CAND, STABLE, shadow, stable_traffic, in_stage)


def gate(**kw: object) -> Gate:
    return Gate.model_validate({"name": "g", **kw})


def rate(n: float, good: float) -> PredictorStats:
    """n prediction requests of which `good` succeeded, and as many feedbacks with `good` rewarded."""
    return PredictorStats(requests=n, errors=n - good, feedback=n, reward=good)


def latency(n: float, scale: float = 1.0) -> PredictorStats:
    """A histogram of n requests: the same shape, every latency multiplied by `scale`."""
    shape = {0.001: 0.05, 0.0025: 0.45, 0.005: 0.85, 0.01: 0.97, 0.025: 0.995, 0.05: 1.0}

    def cdf(x: float) -> float:
        below = [(le, c) for le, c in shape.items() if le * scale <= x]
        return max((c for _, c in below), default=0.0)

    return PredictorStats(
        requests=n, buckets=tuple((le, n * cdf(le) if le != math.inf else n) for le in BUCKETS)
    )


def test_relative_success_rate_passes_holds_and_fails_by_margin() -> None:
    g = gate(metric="success_rate", margin=0.01)
    same = evaluate(g, obs(rate(5000, 4995), rate(20000, 19980)), ctx())
    assert same.verdict == "pass" and same.conclusive
    assert same.low is not None and same.low > -0.01  # the whole interval is above stable - margin
    few = evaluate(g, obs(rate(100, 100), rate(900, 899)), ctx())
    assert few.verdict == "hold" and few.low is not None and few.low < -0.01 < few.high  # type: ignore[operator]
    worse = evaluate(g, obs(rate(5000, 4850), rate(20000, 19980)), ctx())  # 3 points worse, margin 1
    assert worse.verdict == "fail" and worse.high is not None and worse.high < -0.01
    assert "worse than the margin" in worse.detail


def test_the_evidence_of_a_result() -> None:
    g = gate(metric="accuracy", margin=0.02, confidence=0.9)
    r = evaluate(g, obs(rate(4000, 3800), rate(12000, 11400)), ctx())
    assert (r.n_candidate, r.n_stable) == (4000, 12000)
    assert r.value == pytest.approx(0.95) and r.baseline == pytest.approx(0.95)
    assert r.estimate == pytest.approx(0.0) and r.limit == -0.02 and r.margin == 0.02
    assert r.confidence == 0.9 and "mSPRT" in r.method and r.threshold == ">= -0.02"
    gate_, metric, n, estimate, interval, acceptable, verdict = r.row()
    assert metric == "accuracy"
    assert (gate_, n, estimate, acceptable, verdict) == ("g", "4000 / 12000", "+0", ">= -0.02", "pass")
    assert interval.startswith("[-0.0") and interval.endswith("]")


def test_a_higher_confidence_needs_more_evidence() -> None:
    data = obs(rate(1500, 1425), rate(6000, 5700))
    loose = evaluate(gate(metric="accuracy", margin=0.03, confidence=0.8), data, ctx())
    strict = evaluate(gate(metric="accuracy", margin=0.03, confidence=0.999), data, ctx())
    assert loose.verdict == "pass" and strict.verdict == "hold"
    assert strict.low is not None and loose.low is not None and strict.low < loose.low


def test_latency_quantile_ratio() -> None:
    g = gate(metric="latency", quantile=0.95, margin=0.5)
    assert g.comparison == "ratio" and g.min_sample == 110  # the p95's minimum at confidence 0.95
    same = evaluate(g, obs(latency(3000), latency(12000)), ctx())
    assert same.verdict == "pass" and same.estimate == pytest.approx(1.0, abs=0.05)
    assert "order-statistic" in same.method and same.threshold == "<= 1.5x"
    # the p95 lies in a bucket twice as wide as the margin allows: the evidence says so
    assert "wider than the margin of 0.5: inside it the seconds are interpolated" in same.detail
    coarse_ok = evaluate(
        gate(metric="latency", quantile=0.95, margin=1.5), obs(latency(3000), latency(12000)), ctx()
    )
    assert "interpolated" not in coarse_ok.detail
    slow = evaluate(g, obs(latency(3000, scale=3.0), latency(12000)), ctx())
    assert slow.verdict == "fail" and slow.low is not None and slow.low > 1.5
    # a p95 from 60 requests is not a p95: no data, whatever the values say
    tiny = evaluate(g, obs(latency(60, scale=3.0), latency(12000)), ctx())
    assert tiny.verdict == "hold" and "no data" in tiny.detail


def test_latency_upper_bound_needs_enough_requests() -> None:
    """Near the quantile's minimum sample the upper bound is the slowest requests seen: the gate cannot pass
    on a lucky few; with more requests the bound tightens to the p99 itself."""
    g = gate(metric="latency", quantile=0.99, max=0.035)
    assert g.comparison == "absolute" and g.min_sample == 473
    early = evaluate(g, obs(latency(480)), ctx())
    assert early.verdict == "hold" and early.high is not None and early.high > 0.035
    later = evaluate(g, obs(latency(2000)), ctx())
    assert later.verdict == "pass" and later.high is not None and later.high < 0.035 < early.high


def test_disagreement_is_one_sided_and_exact() -> None:
    g = gate(metric="disagreement", margin=0.05)
    assert evaluate(g, obs(PredictorStats(comparisons=500)), ctx(shadow=False)).verdict == "skip"
    agree = evaluate(g, obs(PredictorStats(comparisons=200, disagreements=0)), ctx(shadow=True))
    assert agree.verdict == "pass" and agree.n_stable is None and "beta-binomial" in agree.method
    differ = evaluate(g, obs(PredictorStats(comparisons=400, disagreements=60)), ctx(shadow=True))
    assert differ.verdict == "fail" and differ.low is not None and differ.low > 0.05
    edge = evaluate(g, obs(PredictorStats(comparisons=400, disagreements=20)), ctx(shadow=True))
    assert edge.verdict == "hold"


def test_accuracy_is_not_measured_on_a_shadow() -> None:
    g = gate(metric="accuracy", margin=0.02)
    assert evaluate(g, obs(rate(0, 0), rate(500, 480)), ctx(shadow=True)).verdict == "skip"


def test_absolute_success_rate() -> None:
    g = gate(metric="success_rate", min=0.99)
    assert g.comparison == "absolute"
    assert evaluate(g, obs(healthy(2000, 0)), ctx()).verdict == "pass"
    r = evaluate(g, obs(healthy(2000, 100)), ctx())
    assert r.verdict == "fail" and r.value == pytest.approx(0.95) and r.threshold == ">= 0.99"
    assert evaluate(g, obs(healthy(200, 0)), ctx()).verdict == "hold"  # 200 clean requests prove < 99 %? no


def test_promql_mean_with_its_sample() -> None:
    g = gate(
        metric="promql",
        query="conversion{{predictor='{predictor}'}}",
        sample_query="visits{{predictor='{predictor}'}}",
        margin=0.02,
        better="higher",
    )
    assert custom_queries([g]) == {"g": g.query, "g" + SAMPLE_SUFFIX: g.sample_query}

    def data(cand: float, n: float) -> Observations:
        return Observations(
            10, custom={"g": {CAND: cand, STABLE: 0.3}, "g" + SAMPLE_SUFFIX: {CAND: n, STABLE: 4 * n}}
        )

    assert evaluate(g, data(0.3, 20000), ctx()).verdict == "pass"
    assert evaluate(g, data(0.2, 20000), ctx()).verdict == "fail"
    missing = evaluate(g, Observations(10, custom={"g": {CAND: 0.3, STABLE: 0.3}}), ctx())
    assert missing.verdict == "hold" and "no data" in missing.detail  # no sample: no evidence


def test_relative_gate_skipped_when_stable_idle() -> None:
    g = gate(metric="latency", margin=0.5)
    assert evaluate(g, obs(latency(1000)), ctx(stable_traffic=False)).verdict == "skip"


def test_gates_judge_the_stage_not_the_window() -> None:
    g = gate(metric="success_rate", margin=0.01)
    window = {CAND: rate(50, 50), STABLE: rate(450, 450)}
    stage = {CAND: rate(5000, 4995), STABLE: rate(20000, 19985)}
    r = evaluate(g, Observations(5, window, stage=stage), ctx())
    assert r.n_candidate == 5000 and r.verdict == "pass"


@pytest.mark.parametrize(
    ("rule", "in_stage", "verdict"),
    [("hold", 10, "hold"), ("hold", 61, "fail"), ("fail", 0, "fail"), ("pass", 0, "no-data-pass")],
)
def test_no_data_rules(rule: str, in_stage: float, verdict: str) -> None:
    g = gate(metric="success_rate", min=0.99, min_sample=50, no_data=rule, no_data_deadline=60)
    r = evaluate(g, obs(healthy(10)), ctx(in_stage=in_stage))  # 10 < min_sample
    assert r.verdict == verdict and "no data" in r.detail and not r.conclusive


@pytest.mark.parametrize(("in_stage", "verdict"), [(30, "hold"), (61, "fail")])
def test_undecided_past_the_deadline_fails_but_not_on_evidence(in_stage: float, verdict: str) -> None:
    g = gate(metric="accuracy", margin=0.02, no_data_deadline=60)
    r = evaluate(g, obs(rate(300, 285), rate(300, 285)), ctx(in_stage=in_stage))
    assert r.verdict == verdict and not r.conclusive and "undecided" in r.detail


def test_no_baseline_is_no_data() -> None:
    g = gate(metric="success_rate", margin=0.01, no_data="fail")
    assert evaluate(g, obs(healthy(1000)), ctx()).verdict == "fail"


def test_histogram_quantile_matches_prometheus_interpolation() -> None:
    b = ((0.1, 50.0), (0.2, 100.0), (math.inf, 100.0))
    assert histogram_quantile(0.5, b) == pytest.approx(0.1)
    assert histogram_quantile(0.75, b) == pytest.approx(0.15)
    assert histogram_quantile(0.99, ((0.1, 0.0), (math.inf, 10.0))) == pytest.approx(0.1)
    assert histogram_quantile(0.5, ()) is None
