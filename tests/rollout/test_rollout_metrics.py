"""Metric providers against a real exporter (direct scrape) and a real Prometheus scraping it."""

from __future__ import annotations

import math
import time

import httpx
import pytest
from rollout_exporter import DEPLOYMENT, LOCAL, PRODUCTION, STAGING, Exporter

from rollout.metrics import MetricsError
from rollout.metrics.prometheus import PrometheusProvider
from rollout.metrics.scrape import ScrapeProvider, delta, parse_exposition
from rollout.observations import PredictorStats

A, B = "m-aaaaaaaaaaaa", "m-bbbbbbbbbbbb"


@pytest.mark.timeout(30)
def test_scrape_window_counts_only_the_window(exporter: Exporter) -> None:
    exporter.set(A, requests=10, error_ratio=0.0, feedback=5, reward_ratio=0.8)
    exporter.set(B, requests=10, error_ratio=0.5, latency=0.3, comparisons=10, disagreement_ratio=0.2)
    time.sleep(0.3)  # history before the window must not count
    before = parse_exposition(httpx.get(exporter.url).text, DEPLOYMENT, [A, B])
    obs = ScrapeProvider(exporter.url).observe(DEPLOYMENT, [A, B], window=0.5)
    a, b = obs.of(A), obs.of(B)
    assert 50 <= a.requests <= 150 and a.errors == 0  # ~10 per 50 ms over 0.5 s
    assert a.requests < before[A].requests + a.requests  # window, not totals
    assert b.errors == pytest.approx(b.requests / 2)
    assert a.accuracy() == pytest.approx(0.8)
    assert b.disagreement() == pytest.approx(0.2)
    p99 = b.latency_quantile(0.99)
    assert p99 is not None and 0.25 <= p99 <= 0.5  # the 0.5 s bucket holds 0.3 s requests
    assert obs.stage is None


def test_scrape_parses_other_deployments_out() -> None:
    text = (
        'seldon_api_executor_server_requests_seconds_count{deployment_name="other",predictor_name="x",code="200"} 5\n'
        'seldon_api_executor_server_requests_seconds_count{deployment_name="d",predictor_name="x",code="200"} 7\n'
        'seldon_api_executor_server_requests_seconds_count{deployment_name="d",predictor_name="x",code="503"} 3\n'
    )
    stats = parse_exposition(text, "d", ["x", "y"])
    assert stats["x"].requests == 10 and stats["x"].errors == 3 and stats["y"] == PredictorStats()


def test_counter_reset_counts_from_zero() -> None:
    d = delta(PredictorStats(requests=100, errors=5), PredictorStats(requests=20, errors=1))
    assert d.requests == 20 and d.errors == 1


def test_scrape_errors_are_clear() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503)

    p = ScrapeProvider(
        "http://127.0.0.1:9/metrics", client=httpx.Client(transport=httpx.MockTransport(refuse))
    )
    with pytest.raises(MetricsError, match="HTTP 503"):
        p.observe(DEPLOYMENT, [A], 0)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_prometheus_provider_against_real_prometheus(exporter: Exporter, prometheus: str) -> None:
    exporter.set(A, requests=4, feedback=2, reward_ratio=1.0)
    exporter.set(B, requests=4, error_ratio=0.25, latency=0.3, comparisons=4, disagreement_ratio=0.5)
    provider = PrometheusProvider(prometheus)
    deadline = time.monotonic() + 30
    while True:
        obs = provider.observe(
            DEPLOYMENT,
            [A, B],
            window=5,
            custom={
                "rps": 'sum(rate(seldon_api_executor_server_requests_seconds_count{{namespace="{namespace}",predictor_name="{predictor}"}}[{window}]))'
            },
            since=30,
            namespace=LOCAL,
        )
        if obs.of(A).requests > 50 and obs.of(B).comparisons > 20:
            break
        assert time.monotonic() < deadline, obs
        time.sleep(1)
    a, b = obs.of(A), obs.of(B)
    assert a.errors == 0 and a.accuracy() == pytest.approx(1.0, abs=0.02)
    assert b.success_rate() == pytest.approx(0.75, abs=0.05)
    assert b.disagreement() == pytest.approx(0.5, abs=0.05)
    p99 = b.latency_quantile(0.99)
    assert p99 is not None and 0.25 <= p99 <= 0.5
    assert obs.custom["rps"][A] > 10 and not math.isnan(obs.custom["rps"][B])
    assert obs.stage is not None and obs.stage[A].requests >= a.requests * 0.9


def test_prometheus_errors_are_clear() -> None:
    def bad(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"status": "error", "errorType": "bad_data", "error": "parse error"})

    p = PrometheusProvider("http://prom", client=httpx.Client(transport=httpx.MockTransport(bad)))
    with pytest.raises(MetricsError, match="parse error"):
        p.observe(DEPLOYMENT, [A], 60, namespace=STAGING)


def _recording() -> tuple[PrometheusProvider, list[str]]:
    queries: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        queries.append(request.url.params["query"])
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector", "result": []}})

    return PrometheusProvider(
        "http://prom", client=httpx.Client(transport=httpx.MockTransport(answer))
    ), queries


def test_every_query_selects_the_namespace() -> None:
    provider, queries = _recording()
    custom = {"rps": 'sum(rate(x{{namespace="{namespace}",predictor_name="{predictor}"}}[{window}]))'}
    provider.observe(DEPLOYMENT, [A, B], 60, custom, since=600, namespace=PRODUCTION)
    assert len(queries) > 10
    for q in queries:
        assert f'namespace="{PRODUCTION}"' in q, q


def test_a_query_that_could_read_another_namespace_is_refused() -> None:
    provider, queries = _recording()
    with pytest.raises(MetricsError, match="metadata.namespace"):
        provider.observe(DEPLOYMENT, [A], 60, namespace=None)
    custom = {"rps": 'sum(rate(x{{predictor_name="{predictor}"}}[{window}]))'}
    with pytest.raises(MetricsError, match=r"gate rps: .*namespace"):
        provider.observe(DEPLOYMENT, [A], 60, custom, namespace=PRODUCTION)
    assert queries == []  # refused before anything was asked


def test_a_hostile_namespace_cannot_break_out_of_its_selector() -> None:
    provider, queries = _recording()
    hostile = 'prod"} or vector(1) #'
    custom = {"rps": 'sum(x{{namespace="{namespace}"}})'}
    provider.observe(DEPLOYMENT, [A], 60, custom, namespace=hostile)
    for q in queries:
        assert 'namespace="prod\\"} or vector(1) #"' in q, q


@pytest.mark.timeout(60)
def test_each_environment_reads_only_its_own_namespace(
    two_namespaces: tuple[str, Exporter, Exporter],
) -> None:
    """One real Prometheus scrapes staging's and production's gateways, which export the very same deployment
    and predictor names. Production's gates must see production's traffic only."""
    url, staging, production = two_namespaces
    staging.set(A, requests=4)
    staging.set(B, requests=4, error_ratio=0.5, latency=0.3, comparisons=4, disagreement_ratio=0.5)
    production.set(A, requests=4)
    production.set(B, requests=4, comparisons=4)
    provider = PrometheusProvider(url)
    custom = {
        "errors": 'sum(rate(seldon_api_executor_server_requests_seconds_count{{namespace="{namespace}",predictor_name="{predictor}",code=~"5.."}}[{window}])) or vector(0)'
    }
    deadline = time.monotonic() + 40
    while True:
        prod = provider.observe(DEPLOYMENT, [A, B], 5, custom, namespace=PRODUCTION)
        stag = provider.observe(DEPLOYMENT, [A, B], 5, custom, namespace=STAGING)
        if min(prod.of(B).requests, stag.of(B).requests, prod.of(B).comparisons) > 20:
            break
        assert time.monotonic() < deadline, (prod, stag)
        time.sleep(0.5)
    assert stag.of(B).success_rate() == pytest.approx(0.5, abs=0.1)  # staging's candidate is broken...
    assert prod.of(B).errors == 0 and prod.of(B).success_rate() == 1.0  # ...production's is not
    p99 = prod.of(B).latency_quantile(0.99)
    assert p99 is not None and p99 < 0.1
    assert prod.of(B).disagreement() == 0 and stag.of(B).disagreement() == pytest.approx(0.5, abs=0.1)
    assert prod.custom["errors"][B] == 0 and stag.custom["errors"][B] > 0
    # and the requests counted are production's alone, not the sum of both gateways
    both = provider.value(
        f'sum(increase(seldon_api_executor_server_requests_seconds_count{{predictor_name="{B}"}}[5s]))'
    )
    assert both is not None and prod.of(B).requests < 0.75 * both
