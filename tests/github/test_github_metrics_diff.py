"""train.yml's pull-request step, run for real: its shell script (taken from the workflow file) on a real git
repository with a real `dvc repro` on main and on a branch that changes a parameter. It must produce the
metrics table against main and the plots, the two things the PR comment and the artifact carry."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PROJECT = ["dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/.gitignore"]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def step_script(name: str) -> str:
    doc = yaml.safe_load((REPO / ".github" / "workflows" / "train.yml").read_text())
    (step,) = [s for s in doc["jobs"]["metrics-diff"]["steps"] if s.get("name") == name]
    return str(step["run"])


def test_metrics_diff_step_compares_the_branch_with_main(tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    for item in PROJECT:
        (origin / item).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / item, origin / item)
    # the stages' code dependencies (dvc.yaml deps); the code that runs is the installed package's
    shutil.copytree(REPO / "model", origin / "model", ignore=shutil.ignore_patterns("__pycache__"))
    git(origin, "init", "-q", "-b", "main")
    git(origin, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    git(origin, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "main")
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(origin), str(work))
    params = work / "params.yaml"
    params.write_text(params.read_text().replace("    C: 1.0", "    C: 0.05"))
    git(work, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "pr: stronger regularisation")
    head = git(work, "rev-parse", "HEAD")

    script = step_script("dvc repro on main and on this branch, then diff").replace(".venv/bin/", f"{BIN}/")
    summary = tmp_path / "summary.md"
    env = {
        **os.environ,
        "BASE_REF": "main",
        "HEAD_SHA": head,
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "sluice-ml/sluice",
        "GITHUB_RUN_ID": "1",
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "GX_ANALYTICS_ENABLED": "false",
        "DVC_NO_ANALYTICS": "true",
    }
    result = subprocess.run(["bash", "-e", "-c", script], cwd=work, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    comment = (work / "comment.md").read_text()
    assert comment.startswith("## Model metrics: this PR vs `main`")
    rows = {
        line.split("|")[2].strip(): line for line in comment.splitlines() if line.startswith("| reports/")
    }
    assert "roc_auc" in rows and "accuracy" in rows
    header = next(line for line in comment.splitlines() if line.startswith("| Path"))
    assert "| main " in header and "workspace" in header  # the throwaway commit is shown as main
    change = float(rows["log_loss"].split("|")[5])
    assert change != 0  # C changed, so the held-out log loss did
    assert (work / "dvc_plots" / "index.html").is_file()
    assert summary.read_text() == comment
    assert git(work, "rev-parse", "HEAD") == head  # the branch is what ends up checked out
