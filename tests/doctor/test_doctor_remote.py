"""The Git remote (real repositories), the GitHub token (the recorded API) and the cluster's APIs (recorded
shapes): what each check reports on a good setup and on each way it can be broken."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from doctor_apis import REPO, TOKEN, ClusterDouble, RepositoryDouble
from doctor_project import git

from doctor import cluster, github
from doctor import git as git_check
from doctor.project import Project
from doctor.report import Finding, Status


def _by_check(findings: list[Finding]) -> dict[str, tuple[Status, str]]:
    return {f.check: (f.status, f.detail) for f in findings}


# Git ------------------------------------------------------------------------------------------------------
def test_a_pushed_project_has_its_remote_and_default_branch(project: Path) -> None:
    found = _by_check(list(git_check.check(Project(project))))

    assert found["repository"][0] is Status.OK
    assert found["remote origin"] == (Status.OK, "https://github.com/sluice-ml/sluice.git")
    assert found["default branch"] == (Status.OK, "main (the branch Argo CD follows)")
    assert all(status is Status.OK for status, _ in found.values())


def test_no_repository_at_all(tmp_path: Path) -> None:
    found = _by_check(list(git_check.check(Project(tmp_path))))
    assert found["repository"][0] is Status.MISSING


def test_a_remote_that_is_not_the_repository_the_manifests_name(project: Path) -> None:
    git(project, "remote", "set-url", "origin", "git@github.com:someone/else.git")
    git(
        project, "config", f"url.{project.parent / 'origin.git'}.insteadOf", "git@github.com:someone/else.git"
    )

    found = _by_check(list(git_check.check(Project(project))))

    status, detail = found["remote origin"]
    assert status is Status.MISSING
    assert "git@github.com:someone/else.git" in detail and "https://github.com/sluice-ml/sluice.git" in detail


def test_the_same_repository_over_ssh_is_the_same_repository(project: Path) -> None:
    url = "git@github.com:sluice-ml/sluice.git"
    git(project, "remote", "set-url", "origin", url)
    git(project, "config", f"url.{project.parent / 'origin.git'}.insteadOf", url)

    assert _by_check(list(git_check.check(Project(project))))["remote origin"][0] is Status.OK


def test_no_remote_and_an_unreachable_remote(project: Path) -> None:
    git(project, "remote", "remove", "origin")
    found = _by_check(list(git_check.check(Project(project))))
    assert found["remote origin"][0] is Status.MISSING
    assert "remote reachable" not in found

    git(project, "remote", "add", "origin", "https://github.com/sluice-ml/sluice.git")
    git(project, "config", "--unset", f"url.{project.parent / 'origin.git'}.insteadOf")
    git(
        project,
        "config",
        f"url.{project.parent / 'nowhere.git'}.insteadOf",
        "https://github.com/sluice-ml/sluice.git",
    )
    found = _by_check(list(git_check.check(Project(project))))
    assert found["remote reachable"][0] is Status.MISSING


def test_a_default_branch_other_than_the_one_argo_cd_follows(project: Path) -> None:
    bare = project.parent / "origin.git"
    git(project, "push", "-q", "origin", "main:trunk")
    subprocess.run(["git", "-C", str(bare), "symbolic-ref", "HEAD", "refs/heads/trunk"], check=True)

    found = _by_check(list(git_check.check(Project(project))))

    status, detail = found["default branch"]
    assert status is Status.MISSING and "'main'" in detail and "'trunk'" in detail


# GitHub ---------------------------------------------------------------------------------------------------
def _github(
    double: RepositoryDouble, token: str | None = TOKEN, branch: str = "main"
) -> dict[str, tuple[Status, str]]:
    return _by_check(list(github.check(REPO, token, branch, double.client())))


def test_a_token_that_can_open_and_merge_pull_requests() -> None:
    double = RepositoryDouble()
    found = _github(double)

    assert {k: s for k, (s, _) in found.items()} == {
        "repository": Status.OK,
        "default branch": Status.OK,
        "open pull requests": Status.OK,
        "merge (write refs)": Status.OK,
        "branch main": Status.OK,
    }
    # nothing was created by the probes
    assert set(double.refs) == {"main"} and not double.pulls


def test_a_read_only_token_cannot_open_or_merge() -> None:
    found = _github(RepositoryDouble(can_write=False, push=False))

    assert found["write access"][0] is Status.MISSING
    assert found["open pull requests"] == (
        Status.MISSING,
        "HTTP 403: Resource not accessible by personal access token",
    )
    assert found["merge (write refs)"][0] is Status.MISSING


def test_wrong_default_branch_protection_and_revoked_or_missing_tokens() -> None:
    found = _github(RepositoryDouble(default_branch="master", protected=True))
    assert found["default branch"][0] is Status.MISSING and "'master'" in found["default branch"][1]
    assert found["branch main"][0] is Status.WARN

    revoked = RepositoryDouble()
    revoked.revoked = True
    assert _github(revoked)["token"] == (Status.MISSING, "GitHub refused the token: Bad credentials")
    assert _github(RepositoryDouble(), token=None)["token"][0] is Status.MISSING


# the cluster ----------------------------------------------------------------------------------------------
NAMESPACES = ["sluice-pipelines", "sluice-production", "sluice-staging", "sluice-system"]


@pytest.fixture
def installed() -> ClusterDouble:
    """A cluster where the project is fully installed and synced."""
    project = Project(Path(__file__).resolve().parents[2])
    double = ClusterDouble()
    double.templates["sluice-pipelines"] = [
        d.name for d in project.under("pipelines/rendered/") if d.kind == "WorkflowTemplate"
    ]
    double.applications = {
        d.name: ("Synced", "Healthy") for d in project.documents if d.kind == "Application"
    }
    double.namespaces = dict.fromkeys(NAMESPACES, "Active")
    return double


def _cluster(double: ClusterDouble, token: str = "c1uster") -> dict[str, tuple[Status, str]]:
    project = Project(Path(__file__).resolve().parents[2])
    http = double.client()
    found = [
        *cluster.argo_server(project, double.ARGO, token, "sluice-pipelines", http),
        *cluster.argocd(project, double.ARGOCD, token, http),
        *cluster.namespaces(NAMESPACES, double.KUBE, token, http),
    ]
    return _by_check(found)


def test_an_installed_cluster_is_fine(installed: ClusterDouble) -> None:
    found = _cluster(installed)
    assert {s for s, _ in found.values()} == {Status.OK}
    assert {"template train", "application sluice-staging", "namespace sluice-production"} <= set(found)


def test_a_cluster_missing_templates_applications_and_namespaces(installed: ClusterDouble) -> None:
    installed.templates.clear()
    del installed.applications["sluice-production"]
    installed.applications["sluice-staging"] = ("OutOfSync", "Degraded")
    installed.applications["sluice-pipelines"] = ("OutOfSync", "Healthy")
    installed.namespaces["sluice-system"] = "Terminating"
    del installed.namespaces["sluice-staging"]

    found = _cluster(installed)
    statuses = {k: s for k, (s, _) in found.items()}

    assert statuses["template train"] is Status.MISSING
    assert found["application sluice-production"] == (Status.MISSING, "not found")
    assert found["application sluice-staging"] == (Status.MISSING, "sync OutOfSync, health Degraded")
    assert statuses["application sluice-pipelines"] is Status.WARN
    assert found["namespace sluice-system"] == (Status.MISSING, "phase Terminating")
    assert found["namespace sluice-staging"] == (Status.MISSING, "does not exist")


def test_a_wrong_cluster_token_is_one_clear_finding_per_api(installed: ClusterDouble) -> None:
    found = _cluster(installed, token="wrong")
    assert found["Argo Server"] == (Status.MISSING, "HTTP 401")
    assert found["Argo CD"] == (Status.MISSING, "HTTP 401")


def test_the_doctor_checks_the_github_repository_the_project_names(project: Path) -> None:
    from doctor.run import Options, diagnose

    conventions = project / "pipelines/conventions.py"
    text = conventions.read_text()
    slug = re.search(r'REPO_URL = "https://github\.com/([^"]+)\.git"', text)
    assert slug is not None
    conventions.write_text(text.replace(slug[0], f'REPO_URL = "https://github.com/{REPO}.git"'))
    double = RepositoryDouble(can_write=False)

    report = diagnose(Options(root=project, check_github=True, github_token=TOKEN, http=double.client()))

    rows = {f.check: f.status for f in report.findings if f.area == "github"}
    assert rows["repository"] is Status.OK and rows["open pull requests"] is Status.MISSING
    assert not report.healthy
    assert ("GET", "", None) in double.requests  # it asked GitHub about acme/gitops, the repository named


def test_without_a_token_or_flag_the_github_check_is_skipped_and_says_how(project: Path) -> None:
    from doctor.run import Options, diagnose

    report = diagnose(Options(root=project))
    github_rows = [f for f in report.findings if f.area == "github"]
    assert [(f.status, f.fix) for f in github_rows] == [
        (Status.SKIPPED, "pass --github with GITHUB_TOKEN set")
    ]
