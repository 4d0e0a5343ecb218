"""The `retrain-from-log` WorkflowTemplate: its DAG trains only after a data version was collected, reads the
routers' log from the Secret they share, keeps the reader's place on the claim gitops/cluster declares, and runs
one at a time. Its collect step's script really runs here, in a real Git+DVC repository against a real Redis
stream (the workspace paths moved under a temporary directory): it commits the labelled live rows on the
retrain branch, a retry commits nothing twice, the next run with nothing new collects nothing, and hostile
workflow parameters stop it before it does anything."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from testkit.services import start_redis

from pipelines import retrain_from_log as r
from pipelines.conventions import OUTPUTS_DIR, SOURCE_DIR, WORKSPACE
from serving.router.log_stream import RedisStreamSink

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def rendered() -> dict[str, Any]:
    return r.build().to_dict()


def templates() -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in rendered()["spec"]["templates"]}


def test_training_runs_only_after_a_data_version_was_collected() -> None:
    (dag,) = [t for t in rendered()["spec"]["templates"] if "dag" in t]
    tasks = {t["name"]: t for t in dag["dag"]["tasks"]}
    order = [
        "checkout",
        "dvc-pull",
        "collect",
        "dvc-repro",
        "dvc-push",
        "register",
        "open-rollout",
        "push-branch",
    ]
    assert list(tasks) == order
    for before, after in pairwise(order):
        assert tasks[after]["depends"] == before
    assert tasks["dvc-repro"]["when"] == "{{tasks.collect.outputs.parameters.collected}} == true"
    assert "--collect" in templates()["collect"]["script"]["source"]
    assert "--once" in templates()["dvc-repro"]["script"]["source"]
    assert "retryStrategy" not in templates()["dvc-repro"]  # a failed gate is not retried


def test_the_log_and_the_readers_place_come_from_the_cluster() -> None:
    collect = templates()["collect"]
    env = {e["name"]: e for e in collect["script"]["env"]}
    assert env["SLUICE_PREDICTION_LOG"]["valueFrom"]["secretKeyRef"] == {
        "name": "sluice-prediction-log",
        "key": "url",
    }
    router = yaml.safe_load((REPO / "gitops/router/deployment.yaml").read_text())
    (container,) = router["spec"]["template"]["spec"]["containers"]
    (var,) = [e for e in container["env"] if e["name"] == "SLUICE_PREDICTION_LOG"]
    assert var["valueFrom"]["secretKeyRef"]["name"] == r.PREDICTION_LOG.secret  # one Secret, both namespaces
    mounts = {m["name"]: m["mountPath"] for m in collect["script"]["volumeMounts"]}
    assert mounts["log-reader"] == r.STATE_DIR and f"--state {r.STATE_DIR}" in collect["script"]["source"]
    (volume,) = [v for v in rendered()["spec"]["volumes"] if v["name"] == "log-reader"]
    claim = yaml.safe_load((REPO / "gitops/cluster/pipelines-storage.yaml").read_text())
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["metadata"]["namespace"] == rendered()["metadata"]["namespace"]
    assert rendered()["spec"]["synchronization"] == {"mutexes": [{"name": r.NAME}]}


# the collect step, run for real -------------------------------------------------------------------------------
@pytest.fixture
def stream(tmp_path: Path) -> Iterator[str]:
    proc, url = start_redis(tmp_path)
    try:
        yield url + "?stream=sluice:predictions"
    finally:
        proc.kill()
        proc.wait()


def project(work: Path) -> Path:
    """A Sluice repository as Argo's checkout leaves it in the workspace."""
    src = work / "src"
    src.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", "contract.yaml", "policies"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, src / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@x"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=src, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=src, check=True)
    subprocess.run(["git", "add", "-A"], cwd=src, check=True)
    subprocess.run([*git, "commit", "-qm", "project"], cwd=src, check=True)
    return src


def traffic(url: str, n: int, start: int = 0) -> None:
    """Labelled live traffic the contract's reference has never seen (every feature far off)."""
    lines = []
    for i in range(start, start + n):
        body = {"data": {"ndarray": [[float(1000 + i % 7)] * 30]}}
        lines.append(orjson.dumps({"v": 1, "kind": "prediction", "time": 1000.0 + i, "namespace": "sluice-staging",
                                   "deployment": "classifier", "predictor": "m-a", "digest": None, "puid": f"p{i}",
                                   "protocol": "seldon", "request": body,
                                   "response": {"data": {"names": ["0", "1"], "ndarray": [[0.3, 0.7]]}}}) + b"\n")  # fmt: skip
        lines.append(orjson.dumps({"v": 1, "kind": "feedback", "time": 1001.0 + i, "namespace": "sluice-staging",
                                   "deployment": "classifier", "puid": f"p{i}", "truth": {"data": {"ndarray": [i % 2]}}}) + b"\n")  # fmt: skip
    sink = RedisStreamSink(url)
    sink.write(lines)
    sink.close()


def run_collect(
    work: Path, url: str, branch: str = "retrain/run-1", env: str = "staging"
) -> subprocess.CompletedProcess[str]:
    script = r.collect_template().source
    assert isinstance(script, str)
    for real, here in (
        (SOURCE_DIR, work / "src"),
        (r.STATE_DIR, work / "state"),
        (OUTPUTS_DIR, work / "out"),
    ):
        script = script.replace(real, str(here))
    script = script.replace(WORKSPACE, str(work))
    environ = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "SLUICE_PREDICTION_LOG": url,
        "ENVIRONMENT": env,
        "MIN_NEW_LABELS": "50",
        "BRANCH": branch,
        "DVC_NO_ANALYTICS": "true",
    }
    return subprocess.run(["bash", "-c", script], env=environ, capture_output=True, text=True, timeout=300)


def commits(src: Path) -> list[str]:
    out = subprocess.run(
        ["git", "log", "--format=%B%x1e", "main..HEAD"], cwd=src, capture_output=True, text=True
    )
    return [c.strip() for c in out.stdout.split("\x1e") if c.strip()]


@pytest.mark.slow
def test_the_collect_step_commits_the_labelled_rows_on_the_branch_once(tmp_path: Path, stream: str) -> None:
    work = tmp_path / "ws"
    src = project(work)
    traffic(stream, 300)
    first = run_collect(work, stream)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (work / "out" / "collected").read_text().strip() == "true"
    branch = subprocess.run(["git", "branch", "--show-current"], cwd=src, capture_output=True, text=True)
    assert branch.stdout.strip() == "retrain/run-1"
    (data,) = commits(src)
    assert "Sluice-Retrain-Step: data" in data and "300 labelled live rows" in data
    tracked = subprocess.run(
        ["git", "show", "--name-only", "--format=", "HEAD"], cwd=src, capture_output=True, text=True
    )
    assert "data/source/live.csv.dvc" in tracked.stdout.split()

    retried = run_collect(work, stream)  # Argo retries the step (a network error after the commit)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert (work / "out" / "collected").read_text().strip() == "true" and len(commits(src)) == 1

    # The rest of the run (trained, rollout opened: commits of their own, not run here) and the retrain's pull
    # request merged; the next run checks out main in a fresh workspace and finds the reader's place on the claim.
    retrain_id = data.split("Sluice-Retrain: ")[1].split()[0]
    closing = f"Retrain {retrain_id}: promotion opened\n\nSluice-Retrain: {retrain_id}\nSluice-Retrain-Step: promoted\n"
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q", "--allow-empty", "-m", closing],
        cwd=src,
        check=True,
    )
    subprocess.run(["git", "switch", "-q", "main"], cwd=src, check=True)
    subprocess.run(["git", "merge", "-q", "--ff-only", "retrain/run-1"], cwd=src, check=True)
    later = tmp_path / "ws2"
    later.mkdir()
    subprocess.run(["git", "clone", "-q", "--branch", "main", str(src), str(later / "src")], check=True)
    src2 = later / "src"
    shutil.copytree(work / "state", later / "state")
    # what the dvc-pull step does from the remote: the data version main names, from the cache
    shutil.copytree(src / ".dvc" / "cache", src2 / ".dvc" / "cache")
    subprocess.run(
        [sys.executable, "-m", "dvc", "checkout", "-q", "data/source/live.csv.dvc"], cwd=src2, check=True
    )
    quiet = run_collect(later, stream, branch="retrain/run-2")
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert (later / "out" / "collected").read_text().strip() == "false" and commits(src2) == []
    assert "newly labelled" in quiet.stdout or "no trigger" in quiet.stdout
    traffic(stream, 300, start=300)  # new labelled traffic: the run after that collects it, and only it
    (later / "out" / "collected").unlink()
    fresh = run_collect(later, stream, branch="retrain/run-3")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    (data,) = commits(src2)
    assert "300 labelled live rows (" in data
    state = orjson.loads((later / "state" / "state.json").read_bytes())
    assert state["position"]["kind"] == "stream" and state["position"]["last"]


@pytest.mark.parametrize(
    ("branch", "env", "refused"),
    [
        ("retrain/x; touch pwned", "staging", "BRANCH"),
        ("main", "staging", "BRANCH"),
        ("retrain/$(touch pwned)", "staging", "BRANCH"),
        ("retrain/run-1", "../../etc", "ENVIRONMENT"),
        ("retrain/run-1", "staging\nproduction", "ENVIRONMENT"),
    ],
)
def test_hostile_parameters_stop_the_step_before_it_does_anything(
    tmp_path: Path, branch: str, env: str, refused: str
) -> None:
    work = tmp_path / "ws"
    src = project(work)
    done = run_collect(work, "redis://127.0.0.1:1/0", branch=branch, env=env)
    assert done.returncode == 2 and refused in done.stderr
    assert not (work / "pwned").exists() and not (src / "pwned").exists() and not (work / "out").exists()
