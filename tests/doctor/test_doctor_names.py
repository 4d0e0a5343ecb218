"""Names that must agree across manifests, policies, workflows and pipelines, and the secrets they name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from doctor_project import REPO

from doctor import names, secrets
from doctor.project import Project
from doctor.report import Finding, Status


def _missing(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.status is Status.MISSING]


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def test_the_template_itself_agrees_on_every_name() -> None:
    found = names.check(Project(REPO))
    assert not _missing(found), _missing(found)
    checks = {f.check for f in found}
    assert {
        "model name",
        "image registry",
        "repository URL",
        "namespace of staging",
        "namespace of pipelines",
    } <= checks


def test_a_file_missed_by_a_rename_is_named_with_its_field_and_value(project: Path) -> None:
    # what a search-and-replace by hand leaves behind: one file each still pointing somewhere else
    _edit(
        project / "gitops/environments/production/seldondeployment.yaml",
        "ghcr.io/sluice-ml/",
        "docker.io/someone/",
    )
    _edit(
        project / "gitops/argocd/staging.yaml", "github.com/sluice-ml/sluice.git", "github.com/other/fork.git"
    )
    _edit(
        project / "pipelines/rendered/batch-score.workflowtemplate.yaml",
        "models:/sluice-classifier@",
        "models:/old-model@",
    )
    _edit(
        project / "gitops/environments/staging/kustomization.yaml",
        "namespace: sluice-staging",
        "namespace: staging",
    )

    found = {(f.check, f.where): f for f in _missing(names.check(Project(project)))}

    image = found[
        "image registry",
        "gitops/environments/production/seldondeployment.yaml: "
        "spec.predictors.0.componentSpecs.0.spec.containers.0.image",
    ]
    assert "'docker.io/someone'" in image.detail and "'ghcr.io/sluice-ml'" in image.detail
    assert found["repository URL", "gitops/argocd/staging.yaml: spec.source.repoURL"].detail.startswith(
        "'github.com/other/fork'"
    )
    model = found[
        "model name",
        "pipelines/rendered/batch-score.workflowtemplate.yaml: spec.arguments.parameters.0.value",
    ]
    assert "'old-model'" in model.detail and "registry.model_name" in model.detail
    assert ("namespace of staging", "gitops/environments/staging/kustomization.yaml: namespace") in found
    assert len(found) == 4, sorted(found)


def test_a_namespace_must_be_declared_configured_and_allowed(project: Path) -> None:
    argocd = project / "gitops/argocd/production.yaml"
    for path in (project / "gitops/environments/production").glob("*.yaml"):
        path.write_text(path.read_text().replace("sluice-production", "team-x-prod"))
    argocd.write_text(argocd.read_text().replace("sluice-production", "team-x-prod"))

    found = _missing(names.check(Project(project)))

    assert [f.check for f in found] == ["namespace team-x-prod declared"]
    assert "gitops/cluster/namespaces.yaml" in found[0].detail
    assert "sluice-config ConfigMap" in found[0].detail and "AppProject" in found[0].detail


def test_an_environment_without_a_policy_and_a_policy_without_an_environment(project: Path) -> None:
    (project / "policies/staging.yaml").rename(project / "policies/stagging.yaml")

    found = sorted((f.check, f.detail) for f in _missing(names.check(Project(project))))

    assert found == [
        (
            "policy of stagging",
            "policies/stagging.yaml names no environment (no gitops/environments/stagging/)",
        ),
        ("policy of staging", "gitops/environments/staging/ has no policies/staging.yaml"),
    ]


def test_a_broken_yaml_file_is_a_finding_not_a_crash(project: Path) -> None:
    (project / "gitops/argocd/staging.yaml").write_text("spec: [unclosed\n")

    found = _missing(names.check(Project(project)))

    assert any(f.check == "readable files" and f.where == "gitops/argocd/staging.yaml" for f in found)


def test_hostile_conventions_are_read_never_run(project: Path) -> None:
    marker = project / "ran"
    conventions = project / "pipelines/conventions.py"
    conventions.write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')\n"
        + conventions.read_text()
        + f"\nMODEL_NAME = __import__('pathlib').Path({str(marker)!r}).write_text('y')\n"
    )

    Project(project).conventions  # noqa: B018

    assert not marker.exists()
    assert Project(project).conventions["MODEL_NAME"] == "sluice-classifier"  # the non-literal is skipped


def test_every_secret_the_template_names_is_documented() -> None:
    found = list(secrets.check(Project(REPO)))
    assert [f.status for f in found] == [Status.OK]
    named = secrets.referenced(Project(REPO))
    assert {"sluice-git", "sluice-github", "sluice-mlflow", "sluice-registry", "sluice-dvc-remote"} <= set(
        named
    )


def test_an_undocumented_secret_is_missing_and_says_where_it_is_named(project: Path) -> None:
    path = project / "gitops/environments/staging/seldondeployment.yaml"
    doc = yaml.safe_load(path.read_text())
    env = doc["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0]["env"]
    env.append({"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "vendor-api", "key": "key"}}})
    path.write_text(yaml.safe_dump(doc))
    workflow = project / ".github/workflows/train.yml"
    workflow.write_text(workflow.read_text() + "\n# token: ${{ secrets.SLACK_WEBHOOK }}\n")

    found = _missing(list(secrets.check(Project(project))))

    assert [(f.check, f.where) for f in found] == [
        ("secret SLACK_WEBHOOK", ".github/workflows/train.yml: secrets.SLACK_WEBHOOK"),
        ("secret vendor-api", "gitops/environments/staging/seldondeployment.yaml: secretKeyRef.name"),
    ]


def test_a_new_data_source_needs_a_new_contract(project: Path) -> None:
    params = project / "params.yaml"
    params.write_text(
        re.sub(r"^  source: .*$", "  source: data/source/churn.csv", params.read_text(), count=1, flags=re.M)
    )

    found = _missing(names.check(Project(project)))

    assert [(f.check, f.where, f.fix) for f in found] == [
        (
            "data source",
            "contract.yaml: profiled.source",
            "sluice model profile data/source/churn.csv --target target --force",
        )
    ]


@pytest.mark.timeout(60)
def test_a_manifest_of_nested_aliases_is_read_in_its_size_not_its_expansion(project: Path) -> None:
    # "billion laughs": 9 levels of 10 aliases each expand to 10^9 strings
    lines = ["a0: &a0 models:/other-model@champion"]
    lines += [f"a{i}: &a{i} [{', '.join(f'*a{i - 1}' for _ in range(10))}]" for i in range(1, 10)]
    (project / "gitops" / "bomb.yaml").write_text("\n".join(lines) + "\n")

    found = _missing(names.check(Project(project))) + _missing(list(secrets.check(Project(project))))

    # the string under a0, and a1's ten references to it; every deeper level is an alias of a list already read
    assert [(f.check, f.detail) for f in found] == [
        (
            "model name",
            "'other-model' in 11 places where params.yaml: registry.model_name says 'sluice-classifier'",
        )
    ]
