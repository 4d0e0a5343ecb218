"""`sluice doctor` end to end on a real project repository: exit 0 and a table when it is wired up, exit 1 and
every problem named (file, field, value, fix) when it is not; `--json` for CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from doctor_project import git
from typer.testing import CliRunner

from sluice.cli import app
from sluice.console import console


@pytest.fixture(autouse=True)
def _no_services(monkeypatch: pytest.MonkeyPatch) -> None:
    # the CLI's console is made at import, with the width of whatever terminal the test worker has
    monkeypatch.setattr(console, "width", 250)
    for name in (
        "MLFLOW_TRACKING_URI",
        "PROMETHEUS_URL",
        "GITHUB_TOKEN",
        "ARGO_SERVER_URL",
        "ARGOCD_SERVER_URL",
        "KUBE_API_URL",
    ):
        monkeypatch.delenv(name, raising=False)


def _doctor(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["doctor", *args], env={"COLUMNS": "250"})
    return result.exit_code, result.output


def break_project(project: Path) -> None:
    """What a hand rename typically leaves: a stale image registry, a model name and a repository URL in one file
    each, an undocumented secret, and a remote pointing at another repository."""
    sdep = project / "gitops/environments/production/seldondeployment.yaml"
    sdep.write_text(sdep.read_text().replace("ghcr.io/sluice-ml/", "registry.other.io/ml/"))
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("model_name: sluice-classifier", "model_name: acme-churn"))
    staging = project / "gitops/argocd/staging.yaml"
    staging.write_text(staging.read_text().replace("sluice-ml/sluice.git", "acme/ml-platform.git"))
    workflow = project / ".github/workflows/train.yml"
    workflow.write_text(workflow.read_text() + "\n# notify: ${{ secrets.SLACK_WEBHOOK }}\n")
    git(project, "remote", "set-url", "origin", "https://github.com/acme/ml-platform.git")
    git(
        project,
        "config",
        f"url.{project.parent / 'origin.git'}.insteadOf",
        "https://github.com/acme/ml-platform.git",
    )


def test_a_wired_up_project_passes(project: Path) -> None:
    code, out = _doctor("--project", str(project))
    assert code == 0, out
    assert "ready" in out and "MISSING" not in out
    assert "skipped" in out and "--mlflow-uri" in out  # says how to turn on what it did not check


def test_a_broken_project_fails_and_names_every_problem(project: Path) -> None:
    break_project(project)

    code, out = _doctor("--project", str(project), "--json")

    assert code == 1
    report = json.loads(out)
    assert report["healthy"] is False
    missing = {(f["check"], f["where"]) for f in report["findings"] if f["status"] == "missing"}
    assert (
        "image registry",
        "gitops/environments/production/seldondeployment.yaml: "
        "spec.predictors.0.componentSpecs.0.spec.containers.0.image",
    ) in missing
    assert ("repository URL", "gitops/argocd/staging.yaml: spec.source.repoURL") in missing
    model = next(f for f in report["findings"] if f["check"] == "model name" and f["status"] == "missing")
    assert (
        model["detail"]
        == "'sluice-classifier' in 14 places where params.yaml: registry.model_name says 'acme-churn'"
    )
    assert model["where"].startswith("pipelines/conventions.py: MODEL_NAME; ") and model["where"].endswith(
        "and 11 more"
    )
    assert "or, if 'sluice-classifier' is right, change params.yaml: registry.model_name" in model["fix"]
    assert ("secret SLACK_WEBHOOK", ".github/workflows/train.yml: secrets.SLACK_WEBHOOK") in missing
    assert ("remote origin", "pipelines/conventions.py: REPO_URL") in missing
    every = [f for f in report["findings"] if f["status"] == "missing"]
    assert all(f["fix"] for f in every)


def test_the_table_of_a_broken_project(project: Path) -> None:
    break_project(project)

    code, out = _doctor("--project", str(project))

    assert code == 1
    assert "not ready" in out and "MISSING" in out
    assert "registry.other.io/ml" in out and "set it to 'ghcr.io/sluice-ml'" in out


def test_help_names_what_it_checks() -> None:
    code, out = _doctor("--help")
    assert code == 0
    for word in ("--json", "--github", "--mlflow-uri", "--prometheus-url", "--argo-server", "--kube-api"):
        assert word in out
