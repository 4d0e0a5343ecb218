"""What `sluice ui` shows, read from a real repository and a real exporter: the stable model and when it became
stable, the rollout (stage, weights, gates with a sentence each, what happens next), the manifest's history
with every kind of commit marked, and live figures per predictor."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from dashboard_fixtures import (
    CANDIDATE,
    CANDIDATE_NAME,
    ENV,
    OTHER,
    STABLE,
    STABLE_NAME,
    environment,
    git,
    run,
    source,
    wait_until,
)
from rollout_exporter import Exporter

from dashboard.board import Board, read
from dashboard.figures import ScrapeFigures
from dashboard.history import promoted
from rollout.decision import Action
from rollout.reconciler import abort, start, tick


def ticks_until(env, action: Action, limit: int = 40):  # type: ignore[no-untyped-def]
    for _ in range(limit):
        result = tick(env)
        if result.wrote and result.decision.action == action:
            return result
    raise AssertionError(f"no {action} in {limit} ticks")


def test_history_marks_every_kind_of_commit_and_when_the_stable_model_became_stable(
    repo: Path, exporter: Exporter
) -> None:
    exporter.set(STABLE_NAME, requests=5)
    exporter.set(CANDIDATE_NAME, requests=5)
    env = environment(repo, exporter.url)
    start(env, "file:///candidate", "file:///candidate", CANDIDATE)
    ticks_until(env, Action.PROMOTE)
    start(env, "file:///other", "file:///other", OTHER)
    abort(env, "alice via sluice ui")

    s = source(repo)
    points = s.history.points(ENV, 50)
    assert [p.kind for p in points] == ["init", "start", "advance", "promote", "start", "abort"]
    assert points[0].weights == {STABLE_NAME: 100}
    assert points[1].weights == {STABLE_NAME: 90, CANDIDATE_NAME: 10}
    assert points[3].weights == {CANDIDATE_NAME: 100}
    assert points[5].weights == {CANDIDATE_NAME: 100} and points[5].note == "aborted by alice via sluice ui"
    assert [p.action for p in points[1:]] == ["advance", "advance", "promote", "advance", "rollback"]
    # the candidate became stable with its promotion, and stays so through the aborted rollout after it
    assert promoted(points, CANDIDATE_NAME) == points[3]
    assert promoted(points, STABLE_NAME) is None
    # a limit keeps the newest commits
    assert [p.sha for p in s.history.points(ENV, 2)] == [p.sha for p in points[-2:]]
    log = git(
        repo, "log", "--first-parent", "--format=%H", "main", "--", f"gitops/environments/{ENV}"
    ).split()
    assert [p.sha for p in points] == list(reversed(log))


def test_the_environment_view_has_the_stable_model_the_rollout_and_its_gates(
    repo: Path, exporter: Exporter
) -> None:
    exporter.set(STABLE_NAME, requests=5)
    exporter.set(CANDIDATE_NAME, requests=5, error_ratio=0.4)  # fails the success gate (min 0.95)
    env = environment(repo, exporter.url)
    start(env, "file:///candidate", "file:///candidate", CANDIDATE)
    init_commit = git(repo, "rev-list", "--max-parents=0", "main").strip()

    async def scenario() -> tuple:
        board = Board([source(repo, exporter.url)])
        await board.refresh(ENV)
        before = board.environment(ENV)
        from dashboard.views import Evaluation
        from rollout.reconciler import preview

        # the gates decide once the stage holds enough evidence (a few ticks of the exporter's traffic)
        deadline = time.monotonic() + 60
        while True:
            result = preview(board.envs[ENV].source.environment)
            if result.decision.action.value != "hold" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        board.envs[ENV].evaluation = Evaluation(result.revision, time.time(), result)
        return before, board.environment(ENV)

    before, view = run(scenario())
    assert before.rollout is not None and before.rollout.gates == [] and before.rollout.decision is None
    assert view.stable is not None
    assert view.stable.predictor == STABLE_NAME and view.stable.digest == STABLE
    assert view.stable.mlflow_version == "1"  # models:/sluice-classifier/1
    assert view.stable.promoted_commit == init_commit
    assert {p.name: (p.traffic, p.role) for p in view.predictors} == {
        STABLE_NAME: (90, "stable"),
        CANDIDATE_NAME: (10, "candidate"),
    }
    r = view.rollout
    assert r is not None
    assert (r.strategy, r.status, r.stage, r.stage_name) == ("canary", "progressing", 0, "canary 10%")
    assert [(s.name, s.state) for s in r.stages] == [("canary 10%", "current"), ("canary 50%", "next")]
    assert r.decision == "rollback"
    success = next(g for g in r.gates if g.gate == "success")
    assert success.verdict == "fail"
    assert success.explanation.startswith("success fails: the candidate's success rate is 60")
    assert "rolled back" in success.explanation
    assert r.next.action == "rollback" and r.next.summary.startswith("Rolls back at the next tick")
    assert view.actions.enabled is False and view.actions.abort is False


def test_a_rollout_that_ended_is_shown_as_the_last_one(repo: Path) -> None:
    env = environment(repo)
    start(env, "file:///candidate", "file:///candidate", CANDIDATE)
    abort(env, "bob")
    e = source(repo)
    reading = read(e, 0, 10, time.time())
    from dashboard.views import environment_view

    view = environment_view(reading, None, True, time.time())
    assert view.rollout is None
    assert view.last_rollout is not None and view.last_rollout.status == "rolled-back"
    assert view.last_rollout.message == "aborted by bob"
    assert view.actions.abort is False  # nothing to abort


def test_a_broken_manifest_or_policy_is_reported_not_raised(repo: Path) -> None:
    (repo / "policies" / f"{ENV}.yaml").write_text("strategy: sideways\n")
    git(repo, "commit", "-qam", "a broken policy")
    reading = read(source(repo), 0, 10, time.time())
    assert reading.problem is not None and f"policies/{ENV}.yaml" in reading.problem
    assert reading.state is not None  # the manifest itself is still shown


def test_live_figures_from_a_scrape(exporter: Exporter) -> None:
    exporter.set(STABLE_NAME, requests=4, latency=0.004, feedback=2, reward_ratio=0.5)
    exporter.set(
        CANDIDATE_NAME, requests=2, error_ratio=0.5, latency=0.02, comparisons=4, disagreement_ratio=0.25
    )
    figures = ScrapeFigures(exporter.url, window=1.0)
    names = [STABLE_NAME, CANDIDATE_NAME]

    def a_window_of_scrapes():  # type: ignore[no-untyped-def]
        r = figures.read("sluice-classifier", "sluice", names)
        return r if r.history[STABLE_NAME] and r.at - figures._scrapes[0][0] >= 1.0 else None

    reading = wait_until(a_window_of_scrapes, 10, "a window of scrapes", every=0.25)
    stable, cand = reading.predictors[STABLE_NAME], reading.predictors[CANDIDATE_NAME]
    assert reading.problem is None
    # the exporter adds its profile every PERIOD seconds: 4 requests a tick (the machine's timing varies, and a
    # loaded one ticks late: fewer requests, never more)
    from rollout_exporter import PERIOD

    assert (
        stable.requests_per_second is not None
        and 0.25 * 4 / PERIOD < stable.requests_per_second < 1.2 * 4 / PERIOD
    )
    assert stable.error_ratio == 0.0 and cand.error_ratio == pytest.approx(0.5)
    assert stable.p99 is not None and stable.p99 <= 0.005 < (cand.p99 or 0) <= 0.025
    assert stable.accuracy == pytest.approx(0.5)
    assert cand.disagreement == pytest.approx(0.25)
    assert len(reading.history[STABLE_NAME]) == len(figures._scrapes) - 1 >= 4


def test_figures_say_when_the_metrics_cannot_be_read() -> None:
    reading = ScrapeFigures("http://127.0.0.1:9/metrics").read("d", "n", [STABLE_NAME])
    assert reading.problem is not None and "127.0.0.1:9" in reading.problem
