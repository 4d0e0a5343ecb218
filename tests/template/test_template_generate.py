"""Generate a project from this template with non-default answers, as a user would: no file names the template's
model, registry or repository any more, `sluice doctor` passes once the project is pushed, and its own tests
(manifests, rendered pipelines, names) pass inside it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import copier
import pytest
import yaml
from template_repo import git, release, template_repository

ANSWERS = {
    "project_name": "acme",
    "model_name": "churn-model",
    "git_host": "git.acme.io",
    "git_owner": "acme-corp",
    "git_repo": "ml-platform",
    "image_registry": "registry.acme.io/ml",
    "staging_namespace": "ml-stage",
    "production_namespace": "ml-prod",
    "pipelines_namespace": "ml-pipelines",
    "system_namespace": "ml-system",
    "mlflow_tracking_uri": "https://mlflow.acme.io",
    "s3_endpoint": "s3.acme.io:443",
    "s3_tls": False,
    "data_source": "builtin:wine",
    "data_target": "target",
    "traffic_target": "seldon",
}
URL = "https://git.acme.io/acme-corp/ml-platform.git"
# The template's names: the model, the registry owner and the template's repository (sluice-mlflow, a secret's
# name, is no mention of the owner)
TEMPLATE_NAMES = re.compile(
    r"sluice-classifier|sluice-ml(?![\w-])|sluice-ml/sluice|sluice-staging|sluice-production"
)
SUBSET = (
    "tests/pipelines/test_pipelines_rendered.py",
    "tests/gitops/test_gitops_manifests.py",
    "tests/doctor/test_doctor_names.py",
)


def _quiet_env() -> dict[str, str]:
    drop = (
        "MLFLOW_TRACKING_URI",
        "PROMETHEUS_URL",
        "GITHUB_TOKEN",
        "ARGO_SERVER_URL",
        "ARGOCD_SERVER_URL",
        "KUBE_API_URL",
    )
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("PYTEST_", "COV_"))}


def _run(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=_quiet_env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_a_generated_project_is_yours_and_wired_up(tmp_path: Path) -> None:
    template = template_repository(tmp_path / "template")
    release(template, "v1")
    project = tmp_path / "project"

    copier.run_copy(
        str(template), project, data=ANSWERS, defaults=True, unsafe=True, quiet=True, vcs_ref="v1"
    )

    # no file still names the template's model, registry, repository or namespaces
    stale = []
    for path in sorted(project.rglob("*")):
        if path.is_file() and ".git" not in path.parts:
            try:
                text = path.read_text()
            except UnicodeDecodeError:
                continue
            stale += [f"{path.relative_to(project)}: {m[0]}" for m in TEMPLATE_NAMES.finditer(text)]
    assert stale == []
    assert not (project / "copier.yml").exists() and not (project / "scripts" / "retarget.py").exists()
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["_commit"] == "v1" and answers["model_name"] == "churn-model"
    sdep = yaml.safe_load((project / "gitops/environments/production/seldondeployment.yaml").read_text())
    assert sdep["metadata"]["namespace"] == "ml-prod"
    image = sdep["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0]["image"]
    assert image.startswith("registry.acme.io/ml/sluice-serving@sha256:")
    assert "S3_TLS = False" in (project / "pipelines/conventions.py").read_text()

    # before the data is profiled and the project pushed, the doctor says what is missing
    before = _run(project, "-m", "sluice", "doctor", "--json")
    assert before.returncode == 1, before.stderr
    missing = {f["check"] for f in json.loads(before.stdout)["findings"] if f["status"] == "missing"}
    assert missing == {"data source", "repository"}

    # what the closing message says to do: profile the data, commit, push
    profiled = _run(
        project,
        "-m",
        "sluice",
        "model",
        "profile",
        "builtin:wine",
        "--target",
        "target",
        "--force",
        "--no-track",
    )
    assert profiled.returncode == 0, profiled.stdout + profiled.stderr
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "Generated from the Sluice template")
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp_path / "origin.git")], check=True)
    git(project, "config", f"url.{tmp_path / 'origin.git'}.insteadOf", URL)
    git(project, "remote", "add", "origin", URL)
    git(project, "push", "-q", "origin", "main")

    after = _run(project, "-m", "sluice", "doctor", "--json")
    assert after.returncode == 0, after.stdout
    report = json.loads(after.stdout)
    assert report["healthy"] and report["counts"]["missing"] == 0
    fine = {f["check"]: f["detail"] for f in report["findings"] if f["status"] == "ok"}
    assert fine["model name"].startswith("'churn-model'")
    assert fine["repository URL"].startswith("'git.acme.io/acme-corp/ml-platform'")
    assert fine["remote origin"] == URL

    # the project's own tests of its manifests, rendered pipelines and names pass in it
    tests = _run(
        project,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
        "-m",
        "not slow",
        *SUBSET,
    )
    assert tests.returncode == 0, tests.stdout[-4000:]
