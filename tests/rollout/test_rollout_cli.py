"""`sluice rollout` drives canary, shadow, A/B and blue/green from start to promotion and to rollback, with
a real git repository and a real exporter; every step is visible in `git log`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from rollout_exporter import Exporter
from rollout_gitops import fast_policy, git, log, weights
from typer.testing import CliRunner

from model.bundle import Bundle
from sluice.cli import app

runner = CliRunner()


def sluice(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "gitops"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "test@example.com")
    git(repo, "config", "user.name", "test")
    return repo


def write_policy(repo: Path, policy: dict[str, Any]) -> Path:
    d = repo.parent / "policies"
    d.mkdir(exist_ok=True)
    (d / "local.yaml").write_text(yaml.safe_dump(policy))
    return d


# (strategy, stable profile, candidate profile for success, candidate profile for failure)
HEALTHY = {"requests": 5}
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "canary": (HEALTHY, {"requests": 5}, {"requests": 5, "error_ratio": 0.5}),
    "shadow": (
        HEALTHY,
        {"requests": 5, "comparisons": 5},
        {"requests": 5, "comparisons": 5, "disagreement_ratio": 0.6},
    ),
    "bluegreen": (HEALTHY, {"requests": 5}, {"requests": 5, "latency": 0.4}),
    "ab": (
        {"requests": 5, "feedback": 10, "reward_ratio": 0.6},
        {"requests": 5, "feedback": 10, "reward_ratio": 0.9},
        {"requests": 5, "feedback": 10, "reward_ratio": 0.3},
    ),
}


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("strategy", ["canary", "shadow", "ab", "bluegreen"])
@pytest.mark.parametrize("outcome", ["promote", "rollback"])
def test_strategy_through_the_cli(
    strategy: str, outcome: str, repo: Path, exporter: Exporter, bundle_dir: Path, rf_bundle_dir: Path
) -> None:
    stable = "m-" + Bundle.open(bundle_dir).short_digest
    cand = "m-" + Bundle.open(rf_bundle_dir).short_digest
    policies = write_policy(repo, fast_policy("canary"))
    out = sluice("rollout", "init", "--env", "local", "--model", str(bundle_dir), "--repo", str(repo))
    assert stable in out and weights(repo) == {stable: (100, False)}

    stable_profile, good, bad = CASES[strategy]
    exporter.set(stable, **stable_profile)
    exporter.set(cand, **(good if outcome == "promote" else bad))
    common = ["--env", "local", "--repo", str(repo), "--policies", str(policies)]
    sluice("rollout", "start", *common, "--candidate", str(rf_bundle_dir), "--strategy", strategy)
    first = weights(repo)
    assert cand in first and stable in first

    status = json.loads(sluice("rollout", "status", *common, "--json"))
    assert status["rollout"]["strategy"] == strategy and status["rollout"]["candidate"] == cand
    assert status["rollout"].get("sticky_key") == ("x-sluice-user" if strategy == "ab" else None)

    for _ in range(40):
        sluice("rollout", "reconcile", *common, "--once", "--metrics-url", exporter.url)
        status = json.loads(sluice("rollout", "status", *common, "--json"))
        if status["rollout"]["status"] in ("promoted", "rolled-back"):
            break
    else:
        raise AssertionError(status)

    final = weights(repo)
    subjects = log(repo)
    if outcome == "promote":
        assert status["rollout"]["status"] == "promoted" and final == {cand: (100, False)}
        assert any("promote" in s for s in subjects)
    else:
        assert status["rollout"]["status"] == "rolled-back" and final == {stable: (100, False)}
        assert any("rollback" in s for s in subjects)
        assert "gate failed" in status["rollout"]["message"] or "A/B test" in status["rollout"]["message"]
    assert any(f"start {strategy}" in s for s in subjects) and any("init" in s for s in subjects)
    # every step is a branch commit plus a merge commit on main
    merges = [s for s in subjects if s.startswith("Merge sluice/local/auto/")]
    assert len(merges) >= 2
    assert git(repo, "status", "--porcelain").strip() == ""


@pytest.mark.timeout(60)
def test_watch_runs_to_the_end(repo: Path, exporter: Exporter, bundle_dir: Path, rf_bundle_dir: Path) -> None:
    stable = "m-" + Bundle.open(bundle_dir).short_digest
    cand = "m-" + Bundle.open(rf_bundle_dir).short_digest
    policies = write_policy(repo, fast_policy("canary"))
    exporter.set(stable, requests=5)
    exporter.set(cand, requests=5)
    common = ["--env", "local", "--repo", str(repo), "--policies", str(policies)]
    sluice("rollout", "init", "--env", "local", "--model", str(bundle_dir), "--repo", str(repo))
    sluice("rollout", "start", *common, "--candidate", str(rf_bundle_dir))
    out = sluice(
        "rollout",
        "reconcile",
        *common,
        "--watch",
        "--until-done",
        "--metrics-url",
        exporter.url,
        "--max-ticks",
        "30",
    )
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "message", "env", "action"} <= set(line) for line in lines)
    assert (
        lines[-1]["action"] == "promote"
        and lines[-1]["wrote"]
        and lines[-1]["rollout"]["status"] == "promoted"
    )
    assert len(out.splitlines()) == len(lines)  # not a terminal: JSON lines only
    assert weights(repo) == {cand: (100, False)}
    text = sluice("rollout", "status", *common)
    assert "promoted" in text and f"{cand}" in text


def test_approval_and_abort(repo: Path, exporter: Exporter, bundle_dir: Path, rf_bundle_dir: Path) -> None:
    stable = "m-" + Bundle.open(bundle_dir).short_digest
    cand = "m-" + Bundle.open(rf_bundle_dir).short_digest
    policy = fast_policy(
        "canary", stages=[{"weight": 10, "bake": 0}, {"weight": 50, "bake": 0, "approval": True}]
    )
    policies = write_policy(repo, policy)
    exporter.set(stable, requests=5)
    exporter.set(cand, requests=5)
    common = ["--env", "local", "--repo", str(repo), "--policies", str(policies)]
    sluice("rollout", "init", "--env", "local", "--model", str(bundle_dir), "--repo", str(repo))
    sluice("rollout", "start", *common, "--candidate", str(rf_bundle_dir))
    out = sluice("rollout", "reconcile", *common, "--once", "--metrics-url", exporter.url)
    assert "await-approval" in out
    assert weights(repo)[cand] == (10, False)  # main unchanged: the step waits on its branch
    branches = git(repo, "branch", "--list", "sluice/local/approval/*").split()
    assert len(branches) == 1
    again = sluice("rollout", "reconcile", *common, "--once", "--metrics-url", exporter.url)
    assert "waiting for approval" in again and len(git(repo, "branch", "--list", "sluice/*").split()) == 1
    status = json.loads(sluice("rollout", "status", *common, "--json"))
    assert status["pending"][0]["kind"] == "approval"
    sluice("rollout", "approve", *common)
    assert weights(repo) == {stable: (50, False), cand: (50, False)}
    assert any("approved by" in s for s in log(repo))
    sluice("rollout", "abort", *common)
    assert weights(repo) == {stable: (100, False)}
    assert "aborted" in json.loads(sluice("rollout", "status", *common, "--json"))["rollout"]["message"]


def test_cli_errors_are_clear(repo: Path, tmp_path: Path, bundle_dir: Path) -> None:
    policies = write_policy(repo, {"strategy": "canary", "stages": [{"weight": 200}]})
    common = ["--env", "local", "--repo", str(repo), "--policies", str(policies)]
    sluice("rollout", "init", "--env", "local", "--model", str(bundle_dir), "--repo", str(repo))
    bad = runner.invoke(app, ["rollout", "start", *common, "--candidate", str(bundle_dir)])
    assert bad.exit_code == 1 and "local.yaml" in bad.output and "stages.0.weight" in bad.output
    again = runner.invoke(
        app, ["rollout", "init", "--env", "local", "--model", str(bundle_dir), "--repo", str(repo)]
    )
    assert again.exit_code == 1 and "already exists" in again.output
    missing = runner.invoke(
        app, ["rollout", "init", "--env", "x", "--model", str(tmp_path / "nope"), "--repo", str(repo)]
    )
    assert missing.exit_code == 1 and "nope" in missing.output
    nothing = runner.invoke(
        app, ["rollout", "abort", "--env", "local", "--repo", str(repo), "--policies", str(policies)]
    )
    assert nothing.exit_code == 1


@pytest.mark.timeout(60)
def test_status_with_metrics_shows_the_gate_table(
    repo: Path, exporter: Exporter, bundle_dir: Path, rf_bundle_dir: Path
) -> None:
    stable = "m-" + Bundle.open(bundle_dir).short_digest
    cand = "m-" + Bundle.open(rf_bundle_dir).short_digest
    policies = write_policy(repo, fast_policy("canary"))
    exporter.set(stable, requests=5)
    exporter.set(cand, requests=5, error_ratio=0.5)
    common = ["--env", "local", "--repo", str(repo), "--policies", str(policies)]
    sluice("rollout", "init", "--env", "local", "--model", str(bundle_dir), "--repo", str(repo))
    sluice("rollout", "start", *common, "--candidate", str(rf_bundle_dir))
    head = git(repo, "rev-parse", "main")
    data = json.loads(sluice("rollout", "status", *common, "--json", "--metrics-url", exporter.url))
    assert data["decision"]["action"] == "rollback"  # what a tick would do now...
    gate = next(g for g in data["decision"]["gates"] if g["gate"] == "success")
    assert gate["verdict"] == "fail" and 0.3 < gate["value"] < 0.7
    assert git(repo, "rev-parse", "main") == head  # ...but status writes nothing
    text = sluice("rollout", "status", *common, "--metrics-url", exporter.url)
    assert "success_rate" in text and "fail" in text and "canary 10%" in text
    assert json.loads(sluice("rollout", "status", *common, "--json"))["decision"] is None


HOSTILE_ENVS = ["../x", "main", "a b", "Prod", "", "x" * 64, "-x", "a/b", "HEAD"]


@pytest.mark.parametrize("name", HOSTILE_ENVS)
def test_a_hostile_env_is_refused_before_it_reaches_a_path_or_a_ref(
    repo: Path, bundle_dir: Path, name: str
) -> None:
    before = git(repo, "for-each-ref")
    for args in (
        ["rollout", "init", "--env", name, "--model", str(bundle_dir), "--repo", str(repo)],
        ["rollout", "start", "--env", name, "--candidate", str(bundle_dir), "--repo", str(repo)],
        ["rollout", "reconcile", "--env", name, "--repo", str(repo)],
        ["rollout", "status", "--env", name, "--repo", str(repo)],
        ["rollout", "abort", "--env", name, "--repo", str(repo)],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "--env" in result.output and ("DNS label" in result.output or "reserved" in result.output)
    assert git(repo, "for-each-ref") == before  # no commit, no branch
    assert not (repo.parent / "x").exists() and not list(repo.rglob("seldondeployment.yaml"))


def test_errors_keep_their_brackets_and_name_file_field_and_value(repo: Path, bundle_dir: Path) -> None:
    # a guardrail violation names the field with [index] and the rule in [brackets]: Rich must not eat them
    bad = runner.invoke(
        app,
        [
            "rollout",
            "init",
            "--env",
            "local",
            "--model",
            str(bundle_dir),
            "--repo",
            str(repo),
            "--image",
            "x:latest",
        ],
    )
    assert bad.exit_code == 1
    assert "spec.predictors[0]" in bad.output and "@sha256" in bad.output and "[pinning]" in bad.output, (
        bad.output
    )
    policies = write_policy(repo, {"strategy": "canary", "stages": [{"weight": 200, "bake": "soon"}]})
    common = ["--env", "local", "--repo", str(repo), "--policies", str(policies)]
    sluice("rollout", "init", "--env", "local", "--model", str(bundle_dir), "--repo", str(repo))
    bad = runner.invoke(app, ["rollout", "start", *common, "--candidate", str(bundle_dir)])
    assert bad.exit_code == 1
    lines = bad.output.splitlines()
    source = str(policies / "local.yaml")
    assert any(source in line and "stages.0.weight" in line and "(got 200)" in line for line in lines), (
        bad.output
    )
    assert any("stages.0.bake" in line and "(got 'soon')" in line for line in lines), bad.output


@pytest.mark.timeout(60)
def test_watch_with_nothing_to_do_keeps_running(repo: Path, bundle_dir: Path, tmp_path: Path) -> None:
    """What the in-cluster Deployment runs: with no rollout active it must idle, not exit (a crash loop); the
    SIGTERM that ends its pod stops it between ticks, with exit 0."""
    import subprocess
    import sys
    import time

    policies = write_policy(repo, fast_policy("canary", interval=0.2))
    sluice("rollout", "init", "--env", "local", "--model", str(bundle_dir), "--repo", str(repo))
    out = tmp_path / "out.jsonl"
    with out.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sluice", "rollout", "reconcile", "--env", "local", "--watch",
             "--repo", str(repo), "--policies", str(policies), "--metrics-url", "http://127.0.0.1:9/metrics"],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 40
            while sum(line.startswith("{") for line in out.read_text().splitlines()) < 3:  # three ticks
                assert proc.poll() is None, f"exited {proc.returncode} with nothing to do: {out.read_text()}"
                assert time.monotonic() < deadline, out.read_text()
                time.sleep(0.1)
            assert proc.poll() is None  # still running
        finally:
            proc.terminate()
            proc.wait(10)
    assert proc.returncode == 0, out.read_text()
    lines = out.read_text().splitlines()
    assert lines[-1] == "stopped; the rollout goes on with the next `sluice rollout reconcile`", lines[-3:]
    assert all(line.startswith("{") for line in lines[:3]), lines  # not a terminal: JSON lines
    ticks = [json.loads(line) for line in lines[:3]]
    assert [t["tick"] for t in ticks] == [1, 2, 3] and {t["reason"] for t in ticks} == {
        "no rollout in progress"
    }
