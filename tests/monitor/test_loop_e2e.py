"""`sluice loop` end to end, with real git, real DVC and a real router's log: a drifted feature triggers a data
version, `dvc repro` trains on it, a rollout opens in the first environment. The loop is killed after each step
(and once in the middle of `dvc repro`); every rerun carries on, and in the end each step is in Git once."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from test_monitor_e2e import SHIFTED, breast_cancer, traffic
from up_harness import predictor

from serving.router.prediction_log import FileSink, PredictionLog

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from scratch_repo import ScratchRepo, make_scratch

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def loop_repo(root: Path) -> ScratchRepo:
    repo = make_scratch(root)
    shutil.copytree(REPO / "gitops" / "environments" / "local", root / "gitops" / "environments" / "local")
    policy = yaml.safe_load((REPO / "policies" / "local.yaml").read_text())
    policy["monitoring"] = {"drift_threshold": 0.2, "min_records": 100, "min_labels": 20}
    (root / "policies").mkdir()
    (root / "policies" / "local.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    repo.run("git", "add", "-A")
    repo.git("commit", "-qm", "environment and policy")
    return repo


def sluice_loop(
    repo: ScratchRepo, logdir: Path, die_after: str | None = None, **kw: Any
) -> subprocess.Popen[str]:
    env = dict(repo.env)
    if die_after:
        env["SLUICE_LOOP_DIE_AFTER"] = die_after
    argv = [sys.executable, "-m", "sluice", "loop", str(logdir), "--repo", str(repo.root), "--min-new-labels", "40",
            "--interval", "1s"]  # fmt: skip
    return subprocess.Popen(argv, cwd=repo.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, **kw)  # fmt: skip


def steps(repo: ScratchRepo) -> list[str]:
    out = repo.git("log", "--format=%(trailers:key=Sluice-Retrain-Step,valueonly)", "HEAD").stdout
    return [line.strip() for line in out.splitlines() if line.strip()][::-1]


def starts(repo: ScratchRepo) -> int:
    """Rollouts started on main (each is one proposal merged: one commit on the first-parent line)."""
    out = repo.git("log", "--first-parent", "--format=%s", "HEAD").stdout
    return sum(1 for line in out.splitlines() if "rollout(local): start " in line)


def wait_for(predicate: Any, proc: subprocess.Popen[str], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(
                f"sluice loop exited {proc.returncode} before {what}:\n{proc.stdout.read() if proc.stdout else ''}"
            )
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


def test_killed_after_each_step_the_loop_converges_without_duplicates(
    up: Any, fake_uri: Path, tmp_path: Path
) -> None:
    names, X, y = breast_cancer()
    pick = np.random.default_rng(11).choice(len(X), 200, replace=False)
    rows, truths = X[pick].copy(), y[pick]
    rows[:, names.index(SHIFTED)] += 7.0
    logdir = tmp_path / "log"
    plog = PredictionLog(FileSink(logdir))
    rt = up([predictor("m-a", 100, fake_uri)], prediction_log=plog)
    traffic(rt, rows, truths, names, labelled=120)
    assert plog.flush()
    repo = loop_repo(tmp_path / "repo")

    # 1. Dies right after the data commit.
    first = sluice_loop(repo, logdir, die_after="data")
    assert first.wait(300) == 137, first.stdout.read() if first.stdout else ""
    assert steps(repo) == ["data"]
    live = repo.root / "data" / "source" / "live.csv"
    assert (repo.root / "data" / "source" / "live.csv.dvc").exists()
    assert sum(1 for _ in live.open()) == 1 + 569 + 120  # the header, the source table, the labelled rows
    assert "source: data/source/live.csv" in (repo.root / "params.yaml").read_text()
    assert repo.git("status", "--porcelain", "--", "params.yaml", "data/source").stdout == ""

    # 2. Killed (SIGKILL, the whole process group) while `dvc repro` trains.
    second = sluice_loop(repo, logdir)
    wait_for(
        lambda: (repo.root / "data" / "prepared" / "train.csv").exists(), second, 300, "dvc repro under way"
    )
    os.killpg(second.pid, signal.SIGKILL)
    second.wait(30)
    assert steps(repo) == ["data"]

    # 3. Dies right after the training commit; 4. after opening the rollout, before recording it; 5. after
    # recording it.
    third = sluice_loop(repo, logdir, die_after="train")
    assert third.wait(600) == 137, third.stdout.read() if third.stdout else ""
    assert steps(repo) == ["data", "trained"]
    opened = sluice_loop(repo, logdir, die_after="opened")
    assert opened.wait(300) == 137, opened.stdout.read() if opened.stdout else ""
    assert steps(repo) == ["data", "trained"] and starts(repo) == 1
    fourth = sluice_loop(repo, logdir, die_after="promote")
    assert fourth.wait(300) == 137, fourth.stdout.read() if fourth.stdout else ""
    assert steps(repo) == ["data", "trained", "promoted"]
    assert starts(repo) == 1

    # 6. Runs on: no new labels, nothing to do; no duplicate commit or promotion.
    head = repo.git("rev-parse", "HEAD").stdout
    fifth = sluice_loop(repo, logdir)
    time.sleep(5)
    os.killpg(fifth.pid, signal.SIGINT)
    output, _ = fifth.communicate(timeout=30)
    assert "waiting" in output and "newly labelled rows" in output, output
    assert repo.git("rev-parse", "HEAD").stdout == head
    assert steps(repo) == ["data", "trained", "promoted"] and starts(repo) == 1
    manifest = yaml.safe_load(
        (repo.root / "gitops" / "environments" / "local" / "seldondeployment.yaml").read_text()
    )
    trained = repo.git(
        "log", "--format=%(trailers:key=Sluice-Model,valueonly)", "-n", "1", "HEAD"
    ).stdout.strip()
    candidates = [p["name"] for p in manifest["spec"]["predictors"]]
    assert candidates == ["m-000000000000", "m-" + trained.split(":")[1][:12]]
