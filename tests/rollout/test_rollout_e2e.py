"""Each strategy end to end: a real git repository, a real exporter whose traffic the test controls, ticks
of the reconciler until promotion or rollback; every step must be a commit on main. Every test runs once with
a SeldonDeployment and once with a KServe InferenceService: the engine cannot tell them apart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rollout_exporter import Exporter
from rollout_gitops import FAST_GATES, fast_policy, git, log, make_env, make_repo, weights

from model.bundle import Bundle
from rollout.decision import Action
from rollout.reconciler import Environment, TickResult, start, tick


def candidate(path: Path) -> tuple[str, str, str]:
    b = Bundle.open(path)
    return str(path), path.resolve().as_uri(), b.digest


def run(env: Environment, until: set[Action], max_ticks: int = 30) -> list[TickResult]:
    out = []
    for _ in range(max_ticks):
        res = tick(env)
        out.append(res)
        if res.decision.action in until and res.wrote:
            return out
    raise AssertionError(f"no {until} after {max_ticks} ticks: {[r.decision.reason for r in out][-3:]}")


@pytest.fixture(params=["seldon", "kserve"])
def repo(request: pytest.FixtureRequest, tmp_path: Path, bundle_dir: Path) -> Path:
    """The environment's repository, its manifest a SeldonDeployment or an InferenceService."""
    return make_repo(tmp_path, Bundle.open(bundle_dir).digest, target=request.param)


def names(bundle_dir: Path, rf_bundle_dir: Path) -> tuple[str, str]:
    return "m-" + Bundle.open(bundle_dir).short_digest, "m-" + Bundle.open(rf_bundle_dir).short_digest


@pytest.mark.timeout(60)
def test_canary_to_promotion(repo: Path, exporter: Exporter, bundle_dir: Path, rf_bundle_dir: Path) -> None:
    stable, cand = names(bundle_dir, rf_bundle_dir)
    env = make_env(repo, fast_policy("canary"), exporter.url)
    exporter.set(stable, requests=5)
    exporter.set(cand, requests=5)
    start(env, *candidate(rf_bundle_dir))
    assert weights(repo) == {stable: (90, False), cand: (10, False)}
    results = run(env, {Action.PROMOTE})
    assert weights(repo) == {cand: (100, False)}
    assert [r.decision.action for r in results if r.wrote] == [Action.ADVANCE, Action.PROMOTE]
    subjects = log(repo)
    assert any("start canary" in s for s in subjects)
    assert any("advance" in s and "canary 50%" in s for s in subjects)
    assert any(s.startswith("Merge sluice/local/auto/") and "promote" in s for s in subjects)
    assert git(repo, "branch", "--list", "sluice/*").strip() == ""  # merged branches are gone
    assert git(repo, "status", "--porcelain").strip() == ""


@pytest.mark.timeout(60)
def test_canary_rolls_back_on_errors(
    repo: Path, exporter: Exporter, bundle_dir: Path, rf_bundle_dir: Path
) -> None:
    stable, cand = names(bundle_dir, rf_bundle_dir)
    env = make_env(repo, fast_policy("canary"), exporter.url)
    exporter.set(stable, requests=5)
    exporter.set(cand, requests=5, error_ratio=0.4)
    start(env, *candidate(rf_bundle_dir))
    results = run(env, {Action.ROLLBACK})
    assert weights(repo) == {stable: (100, False)}
    assert "success" in results[-1].decision.reason
    body = git(repo, "log", "-1", "--format=%B", "main^2")
    assert "| success | success_rate (absolute) |" in body and "| fail |" in body
    # the merge commit on main carries the proposal's trailers: evidence and quarantine
    trailers = git(repo, "log", "-1", "--format=%(trailers:only,unfold)", "main")
    assert "Sluice-Gate: success; n=" in trailers and "decision=fail" in trailers
    assert f"Sluice-Quarantine: {Bundle.open(rf_bundle_dir).digest}" in trailers


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_canary_with_a_real_prometheus(
    repo: Path, exporter: Exporter, prometheus: str, bundle_dir: Path, rf_bundle_dir: Path
) -> None:
    """The same gates, read through PromQL: promotion of a healthy candidate, then a rollback of a bad one."""
    from rollout.metrics.prometheus import PrometheusProvider

    stable, cand = names(bundle_dir, rf_bundle_dir)
    # Prometheus needs a couple of scrapes of a new series before increase() answers: a longer no-data wait
    gates = [{**g, "no_data_deadline": 20} for g in FAST_GATES]
    env = make_env(repo, fast_policy("canary", window=4, gates=gates), None)
    env.metrics = PrometheusProvider(prometheus)
    exporter.set(stable, requests=3)
    exporter.set(cand, requests=3)
    start(env, *candidate(rf_bundle_dir))
    for _ in range(40):
        res = tick(env)
        if res.wrote and res.decision.action == Action.PROMOTE:
            break
        time.sleep(0.5)
    assert weights(repo) == {cand: (100, False)}

    # and back: the old model as the new candidate, failing
    exporter.set(stable, requests=3, error_ratio=0.5)
    time.sleep(5)  # its series already exists (it was the stable model): let the window see only the errors
    start(env, *candidate(bundle_dir))
    for _ in range(40):
        res = tick(env)
        if res.wrote:
            break
        time.sleep(0.5)
    assert res.decision.action == Action.ROLLBACK and weights(repo) == {cand: (100, False)}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("strategy", ["shadow", "ab", "bluegreen"])
def test_each_strategy_promotes_a_better_candidate(
    repo: Path, exporter: Exporter, bundle_dir: Path, rf_bundle_dir: Path, strategy: str
) -> None:
    stable, cand = names(bundle_dir, rf_bundle_dir)
    env = make_env(repo, fast_policy(strategy), exporter.url)
    exporter.set(stable, requests=5, feedback=10, reward_ratio=0.5)
    exporter.set(cand, requests=5, feedback=10, reward_ratio=0.9, comparisons=5)
    start(env, *candidate(rf_bundle_dir))
    first = weights(repo)
    if strategy == "shadow":
        assert first == {stable: (100, False), cand: (100, True)}
    elif strategy == "bluegreen":
        assert first == {stable: (100, False), cand: (0, False)}
    else:
        assert first == {stable: (50, False), cand: (50, False)}
    run(env, {Action.PROMOTE}, max_ticks=200)
    assert weights(repo) == {cand: (100, False)}
    assert git(repo, "status", "--porcelain").strip() == ""
