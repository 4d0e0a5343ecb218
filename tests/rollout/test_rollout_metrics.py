"""Metric providers against a real exporter (direct scrape) and a real Prometheus scraping it."""

from __future__ import annotations

import math
import time

import httpx
import pytest
from rollout_exporter import DEPLOYMENT, LOCAL, PERIOD, PRODUCTION, STAGING, Exporter

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
    expected = 10 * 0.5 / PERIOD  # 10 per traffic tick over 0.5 s
    assert expected / 2 <= a.requests <= expected * 1.5 and a.errors == 0
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
    exporter.set(
        B, requests=4, error_ratio=0.25, latency=0.3, comparisons=4, disagreement_ratio=0.5, feedback=4
    )
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
    assert b.success_rate() == pytest.approx(0.75, abs=0.05)  # feedback POSTs would make it 0.875
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


# Feedback out of the serving figures --------------------------------------------------------------------------
def _router_exposition(service_predict: str, service_feedback: str) -> str:
    """The repro, through the router's own metric registry: a 50 % split, a candidate failing 1.5 % of its
    predictions, and one feedback POST (answered 200) per prediction on both predictors."""
    from serving.router.executor_metrics import PredictorLabels, RouterMetrics

    m = RouterMetrics()
    labels = {p: PredictorLabels(LOCAL, DEPLOYMENT, p, model_name="classifier") for p in (A, B)}
    for p, failing in ((A, 0), (B, 150)):
        for i in range(10_000):
            m.observe_server(labels[p], service_predict, "POST", 500 if i < failing else 200, 0.002)
            m.observe_server(labels[p], service_feedback, "POST", 200, 0.001)
            m.count_feedback(labels[p], 1.0)
    return m.exposition().decode()


def test_feedback_requests_never_count_as_served_requests() -> None:
    from deployment import metric_names as names
    from rollout.gates import GateContext, evaluate
    from rollout.observations import Observations
    from rollout.policy import Gate

    text = _router_exposition(names.SERVICE_PREDICTIONS, names.SERVICE_FEEDBACK)
    stats = parse_exposition(text, DEPLOYMENT, [A, B])
    assert stats[B].requests == 10_000 and stats[B].errors == 150  # not 20,000 requests
    assert stats[B].success_rate() == pytest.approx(0.985)  # counting feedback read 0.9925
    assert stats[B].buckets[-1][1] == 10_000 and stats[B].feedback == 10_000
    ctx = GateContext(B, A, False, True, 0.0)
    observed = Observations(10, stats)
    absolute = Gate.model_validate({"name": "sr", "metric": "success_rate", "min": 0.99})
    relative = Gate.model_validate({"name": "sr", "metric": "success_rate", "margin": 0.005})
    assert evaluate(absolute, observed, ctx).verdict == "fail"
    assert evaluate(relative, observed, ctx).verdict == "fail"


# Counts since the stage began ---------------------------------------------------------------------------------
def test_increase_sums_the_scrapes_inside_the_stage_across_a_reset() -> None:
    from rollout.metrics.scrape import increase

    snaps = [
        (t, PredictorStats(requests=r, errors=e))
        for t, r, e in [(1, 100, 1), (5, 150, 2), (6, 20, 0), (9, 50, 3)]
    ]
    assert increase(snaps, 5).requests == 20 + 30 and increase(snaps, 5).errors == 0 + 3  # reset at t=6
    assert increase(snaps, 0).requests == 50 + 20 + 30
    assert increase(snaps, 10) == PredictorStats()


@pytest.mark.timeout(30)
def test_the_stage_counts_every_request_since_it_began_and_none_before(exporter: Exporter) -> None:
    exporter.set(A, requests=5)
    exporter.set(B, requests=5, error_ratio=0.2)
    time.sleep(0.5)  # traffic before the stage: never counted
    provider = ScrapeProvider(exporter.url)
    began = time.time()
    first = provider.observe(DEPLOYMENT, [A, B], window=0.3, since=0.0)
    assert first.stage is not None and first.stage[B].requests == first.of(B).requests
    time.sleep(0.3)
    second = provider.observe(DEPLOYMENT, [A, B], window=0.3, since=time.time() - began)
    assert second.stage is not None
    stage_b = second.stage[B]
    # the stage spans both windows and the gap between the ticks
    assert stage_b.requests >= first.of(B).requests + second.of(B).requests
    total = parse_exposition(httpx.get(exporter.url).text, DEPLOYMENT, [B])[B].requests
    assert stage_b.requests < total * 0.8  # the half second before the stage is not in it
    assert stage_b.errors == pytest.approx(0.2 * stage_b.requests, abs=5)
    # a new stage starts from nothing
    third = provider.observe(DEPLOYMENT, [A, B], window=0.3, since=0.0)
    assert third.stage is not None and third.stage[B].requests == third.of(B).requests


@pytest.mark.timeout(60)
def test_ab_arms_count_from_the_start_of_the_test(
    exporter: Exporter,
    tmp_path,
    bundle_dir,
    rf_bundle_dir,  # type: ignore[no-untyped-def]
) -> None:
    """The stable model's counter has run long before the test: only what it served since counts."""
    from rollout_gitops import fast_policy, make_env, make_repo

    from model.bundle import Bundle
    from rollout.reconciler import start, tick

    stable_b, cand_b = Bundle.open(bundle_dir), Bundle.open(rf_bundle_dir)
    stable, cand = "m-" + stable_b.short_digest, "m-" + cand_b.short_digest
    exporter.set(stable, requests=5, feedback=5)
    time.sleep(1.0)  # about 1,250 requests and feedbacks before the test
    repo = make_repo(tmp_path, stable_b.digest)
    env = make_env(repo, fast_policy("ab", gates=[]), exporter.url)
    exporter.set(cand, requests=5, feedback=5)
    start(env, str(rf_bundle_dir), rf_bundle_dir.as_uri(), cand_b.digest)
    began = time.time()
    res = tick(env)
    elapsed = time.time() - began
    ab = next(g for g in res.decision.gates if g.gate == "a/b test")
    assert ab.n_stable is not None
    per_second = 5 / 0.02
    assert ab.n_stable <= per_second * elapsed * 1.5  # since the start only, not since the exporter began
    assert ab.n_stable == pytest.approx(ab.n_candidate, rel=0.5)


@pytest.mark.timeout(30)
def test_ticks_in_separate_processes_add_up_through_the_history_file(exporter: Exporter, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`reconcile --once` from cron: each tick is a new provider; the history file carries the stage."""
    exporter.set(A, requests=5)
    history = tmp_path / "scrapes.json"
    began = time.time()
    first = ScrapeProvider(exporter.url, history=history).observe(DEPLOYMENT, [A], 0.3, since=0.0)
    time.sleep(0.3)
    second = ScrapeProvider(exporter.url, history=history).observe(
        DEPLOYMENT, [A], 0.3, since=time.time() - began
    )
    assert first.stage is not None and second.stage is not None
    assert second.stage[A].requests >= first.of(A).requests + second.of(A).requests
    alone = ScrapeProvider(exporter.url).observe(DEPLOYMENT, [A], 0.3, since=time.time() - began)
    assert (
        alone.stage is not None and alone.stage[A].requests < second.stage[A].requests
    )  # no memory: window only


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        '{"series": [{"deployment": 1}]}',
        "[]",
        '{"series": [{"deployment": "d", "predictor": "p", "scrapes": [[1, "x"]]}]}',
    ],
)
def test_an_unreadable_history_file_is_ignored(exporter: Exporter, tmp_path, content: str) -> None:  # type: ignore[no-untyped-def]
    exporter.set(A, requests=5)
    history = tmp_path / "scrapes.json"
    history.write_text(content)
    obs = ScrapeProvider(exporter.url, history=history).observe(DEPLOYMENT, [A], 0.2, since=0.0)
    assert obs.stage is not None and obs.stage[A].requests == obs.of(A).requests
    assert '"series"' in history.read_text()  # rewritten whole


@pytest.mark.parametrize(
    "line",
    [
        'seldon_api_executor_server_requests_seconds_bucket{deployment_name="d",predictor_name="x",le="soon"} 5',
        'seldon_api_executor_server_requests_seconds_bucket{deployment_name="d",predictor_name="x"} 5',
        'seldon_api_executor_server_requests_seconds_count{deployment_name="d",predictor_name="x",code="500"} -40',
        'seldon_api_model_feedback_total{deployment_name="d",predictor_name="x"} NaN',
    ],
)
def test_a_hostile_exposition_is_an_error_not_a_crash_or_a_count(line: str) -> None:
    """Whatever a /metrics endpoint serves, the reconciler gets a MetricsError (no data), never a crash or a
    negative error count that would lift a success rate above 1."""
    with pytest.raises(MetricsError, match="unreadable /metrics"):
        parse_exposition(line + "\n", "d", ["x"])


def test_a_promql_gate_reads_its_value_and_its_sample_over_the_stage() -> None:
    """Both of a custom gate's queries run, over the time in the stage (not the tick's window), and only
    prediction requests count in the built-in request queries."""
    from rollout.gates import custom_queries
    from rollout.policy import Gate

    gate = Gate.model_validate(
        {
            "name": "conversion",
            "metric": "promql",
            "query": 'rate_of{{namespace="{namespace}",predictor_name="{predictor}"}}[{window}]',
            "sample_query": 'count_of{{namespace="{namespace}",predictor_name="{predictor}"}}[{window}]',
            "margin": 0.02,
            "better": "higher",
        }
    )
    provider, queries = _recording()
    provider.observe(DEPLOYMENT, [A, B], 5, custom_queries([gate]), since=600, namespace=PRODUCTION)
    assert (
        sum(q.startswith("rate_of") for q in queries) == 2
        and sum(q.startswith("count_of") for q in queries) == 2
    )
    assert all("[600s]" in q for q in queries if q.startswith(("rate_of", "count_of")))
    request_queries = [q for q in queries if "requests_seconds_count" in q or "requests_seconds_bucket" in q]
    assert request_queries and all('service=~"|predictions"' in q for q in request_queries)
