"""The Grafana panels, the alert rules and `sluice ui`'s Prometheus figures against a real Prometheus (Debian's)
scraping the router's series and a real reconciler's own metrics: every expression is accepted by Prometheus'
query API, and the panels an on-call engineer reads first return the numbers the traffic implies."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dashboard_fixtures import (
    CANDIDATE,
    CANDIDATE_NAME,
    STABLE_NAME,
    environment,
    make_environment_repo,
    wait_until,
)
from testkit.services import running_prometheus

from dashboard import monitoring
from dashboard.figures import PrometheusFigures
from deployment import metric_names as n
from rollout.reconciler import start
from rollout.run import run
from rollout.telemetry import ReconcilerMetrics

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
NAMESPACE = "sluice"  # initial_manifest()'s namespace, which Prometheus puts on the target's series
DEPLOYMENT = "sluice-classifier"
MACROS = {"$__rate_interval": "15s", "$__interval": "5s", "$namespace": NAMESPACE, "$deployment": DEPLOYMENT}


class Router:
    """The router's series (names and labels of serving/router), driven at a known rate, on a loopback port."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

        self.registry = CollectorRegistry()
        labels = [n.DEPLOYMENT, n.PREDICTOR, n.SERVICE, n.CODE]
        self.requests = Histogram(n.SERVER_REQUESTS, "requests", labels, registry=self.registry)
        fb = [n.DEPLOYMENT, n.PREDICTOR]
        self.feedback = Counter(n.FEEDBACK, "feedback", fb, registry=self.registry)
        self.reward = Counter(n.FEEDBACK_REWARD, "reward", fb, registry=self.registry)
        self.server, self.thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        self._stop = threading.Event()
        self._driver = threading.Thread(target=self._drive, daemon=True)

    def _drive(self) -> None:
        while not self._stop.wait(0.05):
            for predictor, errors, latency, right in (
                (STABLE_NAME, 0, 0.004, 9),
                (CANDIDATE_NAME, 2, 0.03, 7),
            ):
                for i in range(10):
                    code = "500" if i < errors else "200"
                    self.requests.labels(DEPLOYMENT, predictor, n.SERVICE_PREDICTIONS, code).observe(latency)
                self.requests.labels(DEPLOYMENT, predictor, n.SERVICE_FEEDBACK, "200").observe(0.001)
                self.feedback.labels(DEPLOYMENT, predictor).inc(10)
                self.reward.labels(DEPLOYMENT, predictor).inc(right)

    def __enter__(self) -> Router:
        self._driver.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._driver.join(timeout=5)
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[str, Router, ReconcilerMetrics]]:
    repo = make_environment_repo(tmp_path)
    with Router() as router:
        # a real reconciler ticking on a real rollout, its metrics on the router's port (one scrape target)
        env = environment(repo, router.url)
        start(env, "file:///c", "file:///c", CANDIDATE)
        telemetry = ReconcilerMetrics("local", registry=router.registry)
        run(
            env,
            max_ticks=20,
            sleep=lambda _: time.sleep(0.1),
            on_tick=telemetry.record,
            until=lambda r: r.wrote,
        )
        with running_prometheus(tmp_path, {NAMESPACE: router.port}) as url:
            yield url, router, telemetry


def query(url: str, expr: str) -> list[dict]:
    r = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", (expr, body)
    return list(body["data"]["result"])


def by_predictor(result: list[dict]) -> dict[str, float]:
    return {s["metric"].get(n.PREDICTOR, ""): float(s["value"][1]) for s in result}


def test_every_panel_and_rule_runs_on_prometheus_and_reads_the_traffic(world) -> None:  # type: ignore[no-untyped-def]
    from dashboard import promql

    url, _, _ = world
    s = promql.Scope(NAMESPACE, DEPLOYMENT)
    # wait for a few scrapes: rate() over 15 s needs two samples in the range
    wait_until(lambda: len(by_predictor(query(url, promql.requests_per_second(s, "15s")))) == 2, 60, "rates")
    for _, expr in monitoring.expressions(monitoring.grafana_dashboard()):
        for macro, value in MACROS.items():
            expr = expr.replace(macro, value)
        query(url, expr)  # accepted by Prometheus' own parser and engine
    for rule in monitoring.rules():
        query(url, rule["expr"])
    rps = by_predictor(query(url, promql.requests_per_second(s, "15s")))
    assert rps[STABLE_NAME] > 10 and rps[STABLE_NAME] == pytest.approx(rps[CANDIDATE_NAME], rel=0.05)
    errors = by_predictor(query(url, promql.error_ratio(s, "15s")))
    # 2 of 10 predictions fail; the feedback requests beside them (all 200) are not counted: 0.2, not 2/11
    assert errors[STABLE_NAME] == 0 and errors[CANDIDATE_NAME] == pytest.approx(0.2, abs=0.005)
    accuracy = by_predictor(query(url, promql.accuracy(s, "15s")))
    assert accuracy[STABLE_NAME] == pytest.approx(0.9, abs=0.02)
    assert accuracy[CANDIDATE_NAME] == pytest.approx(0.7, abs=0.02)
    p99 = by_predictor(query(url, promql.latency_quantile(s, 0.99, "15s")))
    assert p99[STABLE_NAME] <= 0.005 < 0.025 <= p99[CANDIDATE_NAME] <= 0.05
    # the reconciler's side: its gates failed the candidate (a fifth of its answers are errors) and it rolled
    # back: the weights as Git has them now, no stage, a rollback counted, the failing-gate alert's expression
    # naming the gate, and a heartbeat
    assert by_predictor(query(url, promql.weights(s))) == {STABLE_NAME: 100.0}
    assert query(url, promql.stage(s)) == []
    decisions = {r["metric"][n.ACTION]: float(r["value"][1]) for r in query(url, promql.decisions(s, "5m"))}
    assert set(decisions) == {"rollback"}
    failing = next(r["expr"] for r in monitoring.rules() if r["alert"] == "SluiceGateFailing")
    assert {r["metric"][n.GATE] for r in query(url, failing)} == {"success"}
    assert 0 <= float(query(url, promql.since_last_tick(s))[0]["value"][1]) < 120
    # and the page's own Prometheus figures
    figures = PrometheusFigures(url, window=15, keep=60, points=10).read(
        DEPLOYMENT, NAMESPACE, [STABLE_NAME, CANDIDATE_NAME]
    )
    assert figures.problem is None
    assert figures.predictors[CANDIDATE_NAME].error_ratio == pytest.approx(0.2, abs=0.02)
    assert figures.predictors[STABLE_NAME].accuracy == pytest.approx(0.9, abs=0.02)
    assert figures.history[STABLE_NAME] and all(t <= time.time() for t, _ in figures.history[STABLE_NAME])
    # another environment's namespace sees none of it
    other = promql.Scope("sluice-production", DEPLOYMENT)
    assert query(url, promql.requests_per_second(other, "15s")) == []


def test_the_drift_panel_reads_the_monitors_series_through_prometheus(world) -> None:  # type: ignore[no-untyped-def]
    """`sluice monitor`'s registry scraped by Prometheus: the page's Prometheus drift reading, with the query the
    drift alert and the Grafana panel use, finds each feature's score in this environment's namespace only."""
    from dashboard.drift import PrometheusDrift
    from monitor.assess import Assessment
    from monitor.drift import Drift
    from monitor.metrics import registry_of
    from monitor.records import LabelCounts

    url, router, _ = world

    def drift(feature: str, score: float) -> Drift:
        return Drift(feature, "numeric", 500, score, 0.5, None, (), (), ())

    monitored = registry_of(
        [
            Assessment(
                NAMESPACE,
                DEPLOYMENT,
                STABLE_NAME,
                None,
                500,
                0.0,
                1.0,
                drifts=[drift("age", 0.05), drift("income", 0.35)],
                prediction=drift("prediction", 0.1),
                accuracy=0.9,
            )
        ],
        LabelCounts(),
    )

    class Monitor:  # the monitor's series on the scraped port, as `sluice monitor --metrics-port` serves them
        def collect(self):  # type: ignore[no-untyped-def]
            yield from monitored.collect()

    router.registry.register(Monitor())
    source = PrometheusDrift(url, monitoring.DRIFT_THRESHOLD)
    # the reading's four queries share one evaluation time, but a scrape stamped before it can finish ingesting
    # between two of them: wait for a reading that saw the whole scrape (the features and the prediction)
    reading = wait_until(
        lambda: (
            (r := source.read(DEPLOYMENT, NAMESPACE)).predictors
            and all(p.features and p.accuracy is not None for p in r.predictors.values())
            and r
        ),
        60,
        "drift series in Prometheus",
    )
    assert reading.problem is None
    stable = reading.predictors[STABLE_NAME]
    assert stable.features == {"age": pytest.approx(0.05), "income": pytest.approx(0.35)}
    assert stable.prediction == pytest.approx(0.1) and stable.accuracy == pytest.approx(0.9)
    assert not source.read(DEPLOYMENT, "sluice-production").predictors
    assert PrometheusDrift("http://127.0.0.1:9", 0.2).read(DEPLOYMENT, NAMESPACE).problem
