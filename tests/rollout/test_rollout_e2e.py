"""Each strategy end to end: a real git repository, a real exporter whose traffic the test controls, ticks
of the reconciler until promotion or rollback; every step must be a commit on main."""

from __future__ import annotations

from pathlib import Path

import pytest
from rollout_exporter import Exporter
from rollout_gitops import fast_policy, git, log, make_env, make_repo, weights

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


@pytest.fixture
def repo(tmp_path: Path, bundle_dir: Path) -> Path:
    return make_repo(tmp_path, Bundle.open(bundle_dir).digest)


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
    assert "| success | success_rate |" in body and "fail |" in body
