"""`sluice gitops check`: passes on the repository, and on broken copies exits 1 naming file, field and problem
(schemas, the rollout guardrails, policy validity); `--format github` writes a job summary and annotations."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sluice.cli import app

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the staging environment and its policy, to break."""
    (tmp_path / "gitops").mkdir()
    shutil.copytree(REPO / "gitops" / "environments" / "staging", tmp_path / "gitops" / "staging")
    (tmp_path / "policies").mkdir()
    shutil.copy(REPO / "policies" / "staging.yaml", tmp_path / "policies" / "staging.yaml")
    return tmp_path


def edit_sdep(tree: Path, change: object) -> Path:
    path = tree / "gitops" / "staging" / "seldondeployment.yaml"
    doc = yaml.safe_load(path.read_text())
    change(doc)  # type: ignore[operator]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def check(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, ["gitops", "check", *args], env=env)
    return result.exit_code, result.output


def test_the_repository_passes() -> None:
    code, out = check(str(REPO / "gitops"), str(REPO / "policies"))
    assert code == 0, out
    assert "guardrails" in out and "policy" in out and "problem" not in out


def test_a_clean_copy_passes(tree: Path) -> None:
    code, out = check(str(tree / "gitops"), str(tree / "policies"))
    assert code == 0, out


def test_guardrails_catch_weights_that_do_not_sum_to_100(tree: Path) -> None:
    def second_predictor(doc: dict) -> None:  # type: ignore[type-arg]
        extra = yaml.safe_load(yaml.safe_dump(doc["spec"]["predictors"][0]))
        extra["name"] = "m-111111111111"
        extra["traffic"] = 20
        doc["spec"]["predictors"].append(extra)

    path = edit_sdep(tree, second_predictor)
    code, out = check(str(tree / "gitops"))
    assert code == 1
    assert str(path) in out and "spec.predictors" in out and "must sum to 100, got 120" in out
    assert "guardrails" in out


def test_guardrails_catch_an_unpinned_image(tree: Path) -> None:
    def unpin(doc: dict) -> None:  # type: ignore[type-arg]
        doc["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0]["image"] = (
            "ghcr.io/x/y:latest"
        )

    edit_sdep(tree, unpin)
    code, out = check(str(tree / "gitops"))
    assert code == 1 and "containers[0].image" in out and "pinned by @sha256" in out


def test_schema_catches_a_misspelt_field(tree: Path) -> None:
    edit_sdep(tree, lambda doc: doc["spec"]["predictors"][0].update(shadw=True))
    code, out = check(str(tree / "gitops"))
    assert code == 1 and "spec.predictors[0]" in out and "shadw" in out and "schema" in out


def test_an_invalid_policy_is_named_with_its_field(tree: Path) -> None:
    path = tree / "policies" / "staging.yaml"
    policy = yaml.safe_load(path.read_text())
    policy["strategy"] = "yolo"
    path.write_text(yaml.safe_dump(policy))
    code, out = check(str(tree / "policies"))
    assert code == 1 and str(path) in out and "strategy" in out


def test_unparseable_yaml_is_a_problem_not_a_crash(tree: Path) -> None:
    (tree / "gitops" / "broken.yaml").write_text("kind: [oops\n")
    code, out = check(str(tree / "gitops"))
    assert code == 1 and "broken.yaml" in out and "not valid YAML" in out


def test_github_format_writes_the_job_summary_and_annotations(tree: Path, tmp_path: Path) -> None:
    edit_sdep(tree, lambda doc: doc["spec"]["predictors"][0].update(traffic=150))
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    code, out = check(
        str(tree / "gitops"),
        str(tree / "policies"),
        "--format",
        "github",
        env={"GITHUB_STEP_SUMMARY": str(summary)},
    )
    assert code == 1
    text = summary.read_text()
    assert text.startswith("earlier step\n## sluice gitops check")  # appended, not overwritten
    assert "| file | objects | checks | result |" in text and "### Problems" in text
    assert "`spec.predictors[0].traffic`" in text
    annotations = [line for line in out.splitlines() if line.startswith("::error file=")]
    assert annotations and all("seldondeployment.yaml" in a for a in annotations)


def test_github_format_on_success(tree: Path, tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    code, _ = check(str(tree / "gitops"), "--format", "github", env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert code == 0 and "pass" in summary.read_text() and "### Problems" not in summary.read_text()


def test_no_yaml_is_an_error(tmp_path: Path) -> None:
    code, out = check(str(tmp_path))
    assert code == 1 and "no YAML files" in out
