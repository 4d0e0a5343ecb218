"""The loop's bookkeeping in Git, without training: what progress a history records, and params.yaml edited
in place."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monitor.loop import (
    LoopError,
    LoopSettings,
    Outcome,
    Progress,
    _commit,
    _gate_failed,
    _set_source,
    progress,
    run_loop,
    train,
)

REPO = Path(__file__).resolve().parents[2]


def git_repo(path: Path) -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True)
    (path / "a").write_text("a\n")
    subprocess.run(["git", "add", "a"], cwd=path, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "init"], cwd=path, check=True
    )
    return path


def test_progress_follows_the_newest_retrain_and_the_newest_cutoff(tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "r")
    assert progress(repo).step is None and progress(repo).until == 0.0
    _commit(
        repo,
        "one",
        [("Sluice-Retrain", "aaa"), ("Sluice-Retrain-Step", "data"), ("Sluice-Retrain-Until", "10.5")],
    )
    _commit(
        repo,
        "two",
        [("Sluice-Retrain", "aaa"), ("Sluice-Retrain-Step", "trained"), ("Sluice-Model", "sha256:x")],
    )
    p = progress(repo)
    assert (p.retrain, p.step, p.until, p.model, p.open) == ("aaa", "trained", 10.5, "sha256:x", True)
    _commit(repo, "three", [("Sluice-Retrain", "aaa"), ("Sluice-Retrain-Step", "rejected")])
    _commit(
        repo,
        "four",
        [("Sluice-Retrain", "bbb"), ("Sluice-Retrain-Step", "data"), ("Sluice-Retrain-Until", "20")],
    )
    p = progress(repo)
    assert (p.retrain, p.step, p.until, p.model) == ("bbb", "data", 20.0, None)


def test_data_source_is_repointed_keeping_comments(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    _set_source(params, "data/source/live.csv")
    text = params.read_text()
    assert "  source: data/source/live.csv\n" in text
    assert text.replace("  source: data/source/live.csv\n", "") == (REPO / "params.yaml").read_text().replace(
        "  source: builtin:breast_cancer\n", ""
    )
    params.write_text("train:\n  source: x\n")
    with pytest.raises(LoopError, match="no data.source line"):
        _set_source(params, "y")


def test_the_promotion_names_the_registered_version_of_the_trained_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rollout opened by the loop pins `models:/<name>/<version>`, not artifacts/model (which the next retrain
    overwrites); with no version registered for the digest, or no registry name in params.yaml, there is none."""
    from model.registry import Registry
    from monitor.loop import registered_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    trained, other = "sha256:" + "ab" * 32, "sha256:" + "cd" * 32
    (tmp_path / "params.yaml").write_text("registry:\n  model_name: sluice-classifier\n")
    registry = Registry(tmp_path)
    run = registry.client.create_run(registry.experiment_id())
    registry.register("sluice-classifier", "runs:/r/model", run.info.run_id, other, "runs:/r/bundle")
    registry.register("sluice-classifier", "runs:/r/model", run.info.run_id, trained, "runs:/r/bundle")
    assert registered_uri(tmp_path, trained) == "models:/sluice-classifier/2"
    assert registered_uri(tmp_path, "sha256:" + "ef" * 32) is None
    (tmp_path / "params.yaml").write_text("data:\n  source: builtin:breast_cancer\n")
    assert registered_uri(tmp_path, trained) is None


def test_a_failing_turn_is_reported_and_retried_with_a_growing_wait(tmp_path: Path) -> None:
    """A contract.yaml a person broke (or a registry that is down) makes every turn fail: the loop reports each
    failure by name and keeps going, waiting twice as long after each consecutive one, and back to the interval
    once a turn works."""
    repo = git_repo(tmp_path / "r")
    (repo / "contract.yaml").write_text("target: [\n")
    (tmp_path / "log").mkdir()
    settings = LoopSettings(repo=repo, log_dir=tmp_path / "log")
    seen: list[Outcome] = []
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 8:
            (repo / "contract.yaml").write_bytes((REPO / "contract.yaml").read_bytes())

    run_loop(settings, 10.0, seen.append, lambda: len(waits) >= 9, wait)
    assert [o.step for o in seen[:8]] == ["error"] * 8
    assert "contract.yaml" in seen[0].detail and seen[0].detail.startswith("ContractError: ")
    assert waits == [10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 320.0, 320.0, 10.0]
    assert seen[8].step == "waiting"


def test_a_pipeline_locked_by_another_dvc_is_retried_not_recorded_as_rejected(tmp_path: Path) -> None:
    """`dvc repro` finds its outputs locked (another DVC runs, or the one killed with the last turn is not
    reaped yet): nothing was judged, so the turn fails and the retrain stays open for the next one, rather
    than being closed as rejected with its data version spent."""
    repo = git_repo(tmp_path / "r")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    (repo / "dvc.yaml").write_text("stages:\n  copy:\n    cmd: cp a b\n    deps: [a]\n    outs: [b]\n")
    holder = subprocess.Popen(["sleep", "60"])
    try:
        owner = {"pid": holder.pid, "cmd": "dvc repro"}
        (repo / ".dvc" / "tmp").mkdir(exist_ok=True)
        (repo / ".dvc" / "tmp" / "rwlock").write_text(
            json.dumps({"read": {}, "write": {str((repo / "b").resolve()): owner}})
        )
        before = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout

        with pytest.raises(LoopError, match="locked"):
            train(LoopSettings(repo=repo, log_dir=tmp_path / "log"), Progress(retrain="r1", step="data"))

        after = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout
        assert after == before  # no "rejected" commit
    finally:
        holder.kill()
        holder.wait()
    # the holder gone and reaped, DVC frees its lock itself: the lock was all that stopped the pipeline
    subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=repo, check=True)
    assert (repo / "b").read_text() == "a\n"


def _reports(repo: Path, gate: dict[str, object], age: float) -> None:
    """Verdicts as the validate and evaluate stages write them, `age` seconds old."""
    import os
    from dataclasses import asdict

    from model.evaluate import Gate

    metrics = repo / "reports" / "metrics"
    metrics.mkdir(parents=True, exist_ok=True)
    (metrics / "gate.json").write_text(json.dumps(asdict(Gate(**gate))))  # type: ignore[arg-type]
    (metrics / "validation.json").write_text(json.dumps({"success": False, "violations": []}))
    for f in metrics.iterdir():
        os.utime(f, (time.time() - age, time.time() - age))


FAILED = {"metric": "roc_auc", "candidate": 0.91, "champion": 0.99, "champion_version": "3", "tolerance": 0.01,
          "passed": False}  # fmt: skip


def test_a_stage_that_crashes_is_retried_not_recorded_as_rejected(tmp_path: Path) -> None:
    """A stage crashed (the registry down, out of memory, a bug) before either gate judged the candidate: the
    turn fails and the retrain stays open, its data version not spent. The verdicts an earlier run left behind
    do not count."""
    repo = git_repo(tmp_path / "r")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    crash = "import sys; sys.exit('the registry at http://127.0.0.1:9 refused the connection')"
    (repo / "dvc.yaml").write_text(f'stages:\n  train:\n    cmd: python -c "{crash}"\n    deps: [a]\n')
    _reports(repo, FAILED, age=3600)
    before = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout

    with pytest.raises(LoopError, match="before any gate judged the candidate: .*refused the connection"):
        train(LoopSettings(repo=repo, log_dir=tmp_path / "log"), Progress(retrain="r1", step="data"))

    assert (
        subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout
        == before
    )


def test_only_a_fresh_failed_gate_verdict_rejects(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    began = time.time()
    _reports(repo, FAILED, age=0)
    said = _gate_failed(repo, began)
    assert said is not None and said.startswith("evaluate gate FAILED: candidate roc_auc=0.9100"), said
    _reports(repo, {**FAILED, "candidate": 0.985, "passed": True}, age=0)
    assert _gate_failed(repo, began) is None
    _reports(repo, FAILED, age=3600)
    assert _gate_failed(repo, began) is None
    (repo / "reports" / "metrics" / "gate.json").write_text('{"passed": false}')  # not a verdict
    assert _gate_failed(repo, began) is None
