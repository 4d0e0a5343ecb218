"""The drift panel: model monitoring's figures read from a real `sluice monitor`-style exporter (the monitor's own
registry, served over HTTP on loopback the way `sluice monitor --watch --metrics-port` serves it), shown per
predictor with each feature against the alert threshold; an unreachable monitor is a problem on the page, not
a crash; and a feature name carrying markup is shown as text."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from dashboard_fixtures import CANDIDATE_NAME, ENV, STABLE_NAME, run, serving, source, wait_until
from testkit.services import free_port

from dashboard.board import Board, read
from dashboard.drift import ScrapeDrift
from dashboard.monitoring import DRIFT_THRESHOLD
from dashboard.views import drift_view

NAMESPACE, DEPLOYMENT = "sluice", "sluice-classifier"  # initial_manifest()'s
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
RAN_AT = 1_700_000_000.0


def _drift(feature: str, score: float):  # type: ignore[no-untyped-def]
    from monitor.drift import Drift

    return Drift(feature, "numeric", 500, score, 0.5, None, (), (), (), drifted=score > DRIFT_THRESHOLD)


def _assessments():  # type: ignore[no-untyped-def]
    from monitor.assess import Assessment

    def a(namespace: str, deployment: str, predictor: str, **kw):  # type: ignore[no-untyped-def]
        return Assessment(namespace, deployment, predictor, None, 500, 0.0, 1.0, enough=True, **kw)

    return [
        a(
            NAMESPACE,
            DEPLOYMENT,
            STABLE_NAME,
            drifts=[_drift("age", 0.05), _drift("income", 0.35), _drift(HOSTILE, 0.5), _drift("zip", 0.0)],
            prediction=_drift("prediction", 0.25),
            accuracy=0.91,
            labelled=80,
        ),
        a(NAMESPACE, DEPLOYMENT, CANDIDATE_NAME, drifts=[_drift("age", 0.01)], error=0.3),
        # the same names elsewhere: another environment's namespace, another deployment
        a("production", DEPLOYMENT, STABLE_NAME, drifts=[_drift("age", 9.0)]),
        a(NAMESPACE, "other-model", "m-999999999999", drifts=[_drift("age", 9.0)]),
    ]


@contextmanager
def monitor_exporter() -> Iterator[str]:
    """The monitor's registry of one run, served as `sluice monitor --metrics-port` serves it."""
    from prometheus_client import start_http_server

    from monitor.metrics import registry_of
    from monitor.records import LabelCounts

    registry = registry_of(_assessments(), LabelCounts(joined=80), RAN_AT)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _unreachable() -> str:
    return f"http://127.0.0.1:{free_port()}/metrics"  # a free port: nothing listens


def test_the_view_shows_each_predictors_features_against_the_threshold(repo: Path) -> None:
    state = read(source(repo), 0, 10, time.time()).state
    with monitor_exporter() as url:
        reading = ScrapeDrift(url, DRIFT_THRESHOLD).read(DEPLOYMENT, NAMESPACE)
    assert reading.problem is None and reading.computed_at == RAN_AT
    view = drift_view(reading, DRIFT_THRESHOLD, state)
    assert view.configured and view.problem is None and view.threshold == DRIFT_THRESHOLD
    assert [p.predictor for p in view.predictors] == [
        STABLE_NAME,
        CANDIDATE_NAME,
    ]  # not other namespaces' series
    stable, candidate = view.predictors
    assert stable.role == "stable"
    assert [(f.feature, f.score, f.over) for f in stable.features] == [
        (HOSTILE, 0.5, True),
        ("income", 0.35, True),
        ("age", 0.05, False),
        ("zip", 0.0, False),
    ]
    assert stable.drifted == 2
    assert stable.prediction_drift == pytest.approx(0.25) and stable.prediction_over
    assert stable.accuracy == pytest.approx(0.91) and stable.error is None
    assert candidate.drifted == 0 and candidate.prediction_drift is None
    assert candidate.error == pytest.approx(0.3) and candidate.accuracy is None
    assert f"{STABLE_NAME}: 2" in view.detail
    # a higher threshold flags fewer features: the flag is the view's, from the scores
    assert drift_view(reading, 0.4, state).predictors[0].drifted == 1


def test_without_monitoring_the_panel_says_how_to_configure_it(repo: Path) -> None:
    board = Board([source(repo)])
    run(board.refresh(ENV))
    view = board.environment(ENV).drift
    assert not view.configured and "--monitor-url" in view.detail and not view.predictors


def test_the_page_and_the_api_show_drift_from_the_monitor(repo: Path) -> None:
    s = source(repo)
    with monitor_exporter() as url:
        s.drift = ScrapeDrift(url, DRIFT_THRESHOLD)
        with serving(Board([s], figures_every=0.2)) as served:
            served.board.drift_every = 0.2

            def drift() -> dict | None:
                d = served.get(f"/api/environments/{ENV}").json()["drift"]
                return d if d["predictors"] else None

            d = wait_until(drift, 20, "the drift figures on the API")
            html = served.get("/").text
    assert d["configured"] and d["source"] == f"scrape {url}"
    assert [f["feature"] for f in d["predictors"][0]["features"]][:2] == [HOSTILE, "income"]
    assert 'class="drift-bars"' in html and 'class="threshold"' in html
    assert html.count('<g class="over">') == 2 and html.count('<g class="under">') == 3
    assert "live accuracy 91.0%" in html


def test_a_feature_name_with_markup_is_shown_as_text(repo: Path) -> None:
    from dashboard.render import fragment

    board = Board([source(repo)])
    board.envs[ENV].source.drift = ScrapeDrift("unused", DRIFT_THRESHOLD)
    run(board.refresh(ENV))
    with monitor_exporter() as url:
        board.envs[ENV].drift = ScrapeDrift(url, DRIFT_THRESHOLD).read(DEPLOYMENT, NAMESPACE)
    html = fragment(board, ENV, "state")
    assert "<script" not in html and "<img" not in html  # no element of the label's making
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html  # shown, as text


def test_an_unreachable_monitor_is_shown_as_a_problem(repo: Path) -> None:
    url = _unreachable()
    reading = ScrapeDrift(url, DRIFT_THRESHOLD).read(DEPLOYMENT, NAMESPACE)
    assert reading.problem is not None and url.split("/metrics")[0] in reading.problem
    s = source(repo)
    s.drift = ScrapeDrift(url, DRIFT_THRESHOLD)
    with serving(Board([s])) as served:
        served.board.drift_every = 0.2
        d = wait_until(
            lambda: served.get(f"/api/environments/{ENV}").json()["drift"]["problem"], 20, "the problem"
        )
        page = served.get("/")
    assert url.split("/metrics")[0] in d
    assert page.status_code == 200 and "could not be read" in page.text


def test_a_body_that_is_not_prometheus_text_is_a_problem_too(repo: Path) -> None:
    with serving(Board([source(repo)])) as served:  # the dashboard's own page: HTML, not metrics
        reading = ScrapeDrift(served.url + "/", DRIFT_THRESHOLD).read(DEPLOYMENT, NAMESPACE)
    assert reading.problem is not None and "not Prometheus text" in reading.problem
    assert not reading.predictors


@pytest.mark.parametrize(("policy_threshold", "flagged"), [(0.4, 1), (0.1, 2)])
def test_the_threshold_is_the_environment_policy_s_unless_one_is_given(
    repo: Path, policy_threshold: float, flagged: int
) -> None:
    """What the panel flags is what `sluice monitor` alerts and `sluice loop` retrains on: the environment
    policy's monitoring.drift_threshold, read from Git with the rest of the policy."""
    import yaml
    from rollout_gitops import git

    path = repo / "policies" / f"{ENV}.yaml"
    policy = yaml.safe_load(path.read_text())
    policy["monitoring"] = {"drift_threshold": policy_threshold}
    path.write_text(yaml.safe_dump(policy))
    git(repo, "commit", "-qam", "policy: monitoring")
    with monitor_exporter() as url:
        board = Board([source(repo)])
        board.envs[ENV].source.drift = ScrapeDrift(url)
        run(board.refresh(ENV))
        board.envs[ENV].drift = ScrapeDrift(url).read(DEPLOYMENT, NAMESPACE)
        view = board.environment(ENV).drift
        assert view.threshold == policy_threshold
        # the stable predictor's features score 0.5, 0.35, 0.05 and 0
        assert view.predictors[0].drifted == flagged
        board.envs[ENV].source.drift = ScrapeDrift(url, 0.01)  # `sluice ui --drift-threshold 0.01`
        assert board.environment(ENV).drift.threshold == 0.01
