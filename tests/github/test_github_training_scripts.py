"""The training scripts of train.yml and of the Argo templates, run for real on one temporary git repository
with a local DVC remote: the PR step (`dvc repro` on main and on a branch, `dvc metrics diff`, plots), the
runner path, the `train` template's steps (dvc pull, repro, push, register in MLflow, outputs) and
`build-serving-image`'s bundle check. Only Argo itself (git artifact, volumes, output collection) is absent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from model.bundle import Bundle

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PROJECT = [
    "dvc.yaml", "params.yaml", "contract.yaml", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/.gitignore",
    "data/source/README.md",
]  # fmt: skip
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@dataclass
class Trained:
    work: Path
    base_dir: Path
    env: dict[str, str]
    head: str
    diff: subprocess.CompletedProcess[str]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def workflow_step(workflow: str, job: str, name: str) -> str:
    doc = yaml.safe_load((REPO / ".github" / "workflows" / workflow).read_text())
    (step,) = [s for s in doc["jobs"][job]["steps"] if s.get("name") == name]
    return str(step["run"]).replace(".venv/bin/", f"{BIN}/")


def template_step(
    rendered: str, template: str, trained: Trained, **parameters: str
) -> tuple[str, dict[str, str]]:
    """A template's script and the environment Argo gives it: its plain `env` values with the workflow
    parameters substituted (what Argo does), over the test's environment. Secrets and ConfigMap values come
    from the test environment instead."""
    doc = yaml.safe_load((REPO / "pipelines" / "rendered" / rendered).read_text())
    (t,) = [t for t in doc["spec"]["templates"] if t["name"] == template]
    source = str(t["script"]["source"])
    assert "{{" not in source, source  # parameters reach scripts as env vars only
    env = dict(trained.env)
    for item in t["script"].get("env", []):
        if "value" in item:
            value = str(item["value"])
            for key, given in parameters.items():
                value = value.replace(f"{{{{workflow.parameters.{key}}}}}", given)
            assert "{{" not in value, f"{template}: parameter for {item['name']} not given"
            env[item["name"]] = value
    outputs = trained.base_dir / "outputs"
    return source.replace("/workspace/src", str(trained.work)).replace("/tmp/outputs", str(outputs)), env


def train_repository(base: Path) -> Trained:
    """main with a local DVC remote, a branch changing a parameter, and the PR step run on it (two repros)."""
    origin = base / "origin"
    for item in PROJECT:
        (origin / item).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / item, origin / item)
    # the stages' code dependencies (dvc.yaml deps); the code that runs is the installed package's
    shutil.copytree(REPO / "model", origin / "model", ignore=shutil.ignore_patterns("__pycache__"))
    git(origin, "init", "-q", "-b", "main")
    subprocess.run(
        [str(BIN / "dvc"), "remote", "add", "-d", "storage", str(base / "dvc-remote")], cwd=origin, check=True
    )
    git(origin, "add", ".")
    git(origin, "commit", "-qm", "main")
    work = base / "work"
    git(base, "clone", "-q", str(origin), str(work))
    params = work / "params.yaml"
    params.write_text(params.read_text().replace("    C: 1.0", "    C: 0.05"))
    git(work, "commit", "-qam", "pr: stronger regularisation")
    env = {
        **os.environ,
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "sluice-ml/sluice",
        "GITHUB_RUN_ID": "1",
        "GITHUB_STEP_SUMMARY": str(base / "summary.md"),
        "GITHUB_OUTPUT": str(base / "github_output"),
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}",
        "GX_ANALYTICS_ENABLED": "false",
        "DVC_NO_ANALYTICS": "true",
    }
    head = git(work, "rev-parse", "HEAD")
    script = workflow_step("train.yml", "metrics-diff", "dvc repro on main and on this branch, then diff")
    diff = bash(script, work, {**env, "BASE_REF": "main", "HEAD_SHA": head})
    return Trained(work, base, env, head, diff)


def pr_step_compares_the_branch_with_main(trained: Trained) -> None:
    assert trained.diff.returncode == 0, trained.diff.stdout[-2000:] + trained.diff.stderr[-2000:]
    comment = (trained.work / "comment.md").read_text()
    assert comment.startswith("## Model metrics: this PR vs `main`")
    rows = {
        line.split("|")[2].strip(): line for line in comment.splitlines() if line.startswith("| reports/")
    }
    assert "roc_auc" in rows and "accuracy" in rows
    header = next(line for line in comment.splitlines() if line.startswith("| Path"))
    assert "| main " in header and "workspace" in header  # the throwaway commit is shown as main
    assert float(rows["log_loss"].split("|")[5]) != 0  # C changed, so the held-out log loss did
    assert (trained.work / "dvc_plots" / "index.html").is_file()
    assert comment in Path(trained.env["GITHUB_STEP_SUMMARY"]).read_text()
    assert git(trained.work, "rev-parse", "HEAD") == trained.head  # the branch is what ends up checked out


def runner_path_outputs_the_bundle_digest_and_pushes(trained: Trained) -> None:
    result = bash(
        workflow_step("train.yml", "pipeline", "dvc repro on the runner"), trained.work, trained.env
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    digest = Bundle.open(trained.work / "artifacts" / "model").digest
    assert f"bundle-digest={digest}\n" in Path(trained.env["GITHUB_OUTPUT"]).read_text()
    assert any((trained.base_dir / "dvc-remote").rglob("*")), "dvc push put nothing in the remote"


def train_template_steps_and_outputs(trained: Trained) -> None:
    for step in ("dvc-pull", "dvc-repro", "dvc-push", "register"):
        source, env = template_step("train.workflowtemplate.yaml", step, trained)
        result = bash(source, trained.work, env)
        assert result.returncode == 0, f"{step}: " + result.stdout[-2000:] + result.stderr[-2000:]
    outputs = trained.base_dir / "outputs"
    bundle = Bundle.open(trained.work / "artifacts" / "model")
    assert (outputs / "bundle-digest").read_text() == bundle.digest
    assert json.loads((outputs / "metrics.json").read_text())["roc_auc"] == bundle.metrics["roc_auc"]
    assert "@challenger" in (outputs / "registry.txt").read_text()


def build_template_fetches_the_bundle_and_checks_its_digest(trained: Trained) -> None:
    digest = Bundle.open(trained.work / "artifacts" / "model").digest
    shutil.rmtree(trained.work / "artifacts" / "model")
    revision = trained.head
    fetch, env = template_step(
        "build-serving-image.workflowtemplate.yaml",
        "fetch-bundle",
        trained,
        revision=revision,
        **{"bundle-digest": digest},
    )
    result = bash(fetch, trained.work, env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert Bundle.open(trained.work / "artifacts" / "model").digest == digest
    wrong = "sha256:" + "0" * 64
    fetch, env = template_step(
        "build-serving-image.workflowtemplate.yaml",
        "fetch-bundle",
        trained,
        revision=revision,
        **{"bundle-digest": wrong},
    )
    result = bash(fetch, trained.work, env)
    assert result.returncode == 1 and f"expected {wrong}" in result.stderr


def test_training_scripts_on_one_repository(tmp_path: Path) -> None:
    # One test, because each check builds on the repository the previous ones left (as the jobs would), and
    # the two `dvc repro` runs are the expensive part.
    trained = train_repository(tmp_path)
    pr_step_compares_the_branch_with_main(trained)
    runner_path_outputs_the_bundle_digest_and_pushes(trained)
    train_template_steps_and_outputs(trained)
    build_template_fetches_the_bundle_and_checks_its_digest(trained)
