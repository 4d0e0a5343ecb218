"""`copier update`: a project generated from one release of the template takes the next. The project's own
edits (policies, params) survive, the release's new and changed files arrive under the project's names, and an
edit to a line the release also changed surfaces as an ordinary merge conflict."""

from __future__ import annotations

import subprocess
from pathlib import Path

import copier
import pytest
import yaml
from template_repo import git, release, template_repository

ANSWERS = {
    "project_name": "acme",
    "model_name": "churn-model",
    "git_owner": "acme-corp",
    "image_registry": "registry.acme.io/ml",
    "staging_namespace": "ml-stage",
}
NOTES = "gitops/environments/staging/ROLLOUT-NOTES.md"


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def next_release(template: Path) -> None:
    """What the next release changes: a new file naming the template's model and namespace, a new line in the
    router's Deployment, a new comment at the top of the staging policy, and production's first stage."""
    (template / NOTES).write_text(
        "sluice-classifier in sluice-staging: read docs/cluster.md before a rollout.\n"
    )
    _replace(
        template / "gitops/router/deployment.yaml", "# The router pods.", "# The router pods (release 2)."
    )
    staging = template / "policies/staging.yaml"
    staging.write_text("# Release 2: gates are statistical.\n" + staging.read_text())
    _replace(
        template / "policies/production.yaml", "  - {weight: 5, bake: 15m}", "  - {weight: 2, bake: 15m}"
    )


@pytest.mark.slow
def test_an_update_keeps_the_project_s_edits_and_brings_the_release(tmp_path: Path) -> None:
    template = template_repository(tmp_path / "template")
    release(template, "v1")
    release(template, "v2", next_release)
    project = tmp_path / "project"
    copier.run_copy(
        str(template), project, data=ANSWERS, defaults=True, unsafe=True, quiet=True, vcs_ref="v1"
    )
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "generated")
    assert not (project / NOTES).exists()

    # the team's own edits: a tighter gate in staging, another C, and the same production line the release changes
    _replace(project / "policies/staging.yaml", "    margin: 0.005", "    margin: 0.002")
    _replace(project / "params.yaml", "    C: 1.0", "    C: 0.5")
    _replace(project / "policies/production.yaml", "  - {weight: 5, bake: 15m}", "  - {weight: 1, bake: 15m}")
    git(project, "commit", "-q", "-am", "our gates and params")

    # the release, and one answer changed on the way (another registry path)
    copier.run_update(
        project,
        vcs_ref="v2",
        data={"image_registry": "registry.acme.io/platform"},
        defaults=True,
        unsafe=True,
        overwrite=True,
        quiet=True,
    )

    staging = (project / "policies/staging.yaml").read_text()
    assert "    margin: 0.002" in staging and "    margin: 0.005" not in staging  # ours survives
    assert staging.startswith("# Release 2: gates are statistical.\n")  # theirs arrives beside it
    assert "    C: 0.5" in (project / "params.yaml").read_text()
    assert (
        project / NOTES
    ).read_text() == "churn-model in ml-stage: read docs/cluster.md before a rollout.\n"
    assert "# The router pods (release 2)." in (project / "gitops/router/deployment.yaml").read_text()
    # both sides changed one line: an ordinary conflict, with both versions, for a person to resolve
    production = (project / "policies/production.yaml").read_text()
    assert "<<<<<<<" in production and ">>>>>>>" in production
    assert "{weight: 1, bake: 15m}" in production and "{weight: 2, bake: 15m}" in production
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["_commit"] == "v2" and answers["model_name"] == "churn-model"
    assert answers["image_registry"] == "registry.acme.io/platform"
    sdep = (project / "gitops/environments/production/seldondeployment.yaml").read_text()
    assert "image: registry.acme.io/platform/sluice-serving@sha256:" in sdep
    stale = subprocess.run(
        ["git", "-C", str(project), "grep", "-l", "registry.acme.io/ml/"], capture_output=True, text=True
    )
    assert stale.stdout == ""  # the old answer is gone from every tracked file
    changed = subprocess.run(
        ["git", "-C", str(project), "status", "--porcelain"], capture_output=True, text=True, check=True
    ).stdout
    assert "policies/staging.yaml" in changed and NOTES.split("/")[-1] in changed
