"""The questions of copier.yml: each has a help text and a default, and copier refuses an invalid answer with
the question's own message before writing anything."""

from __future__ import annotations

from pathlib import Path

import copier
import pytest
import yaml
from template_repo import REPO, TEMPLATE_FILES, release, template_repository

QUESTIONS = {
    "project_name",
    "model_name",
    "image_registry",
    "git_host",
    "git_owner",
    "git_repo",
    "staging_namespace",
    "production_namespace",
    "pipelines_namespace",
    "system_namespace",
    "mlflow_tracking_uri",
    "s3_endpoint",
    "s3_tls",
    "data_source",
    "data_target",
    "traffic_target",
}


@pytest.fixture(scope="module")
def questions_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A template holding copier.yml alone (validation runs before any file is written)."""
    root = template_repository(tmp_path_factory.mktemp("questions") / "template", only=TEMPLATE_FILES)
    release(root, "v1")
    return root


def test_every_question_has_help_and_a_default() -> None:
    config = yaml.safe_load((REPO / "copier.yml").read_text())
    asked = {k for k in config if not k.startswith("_")}
    assert asked == QUESTIONS
    for name in asked:
        assert config[name].get("help"), name
        assert "default" in config[name], name
    assert set(config["traffic_target"]["choices"].values()) == {"seldon", "kserve"}


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"model_name": "Churn_Model"}, "a Kubernetes name"),
        ({"model_name": "x" * 64}, "a Kubernetes name"),
        ({"project_name": "-acme"}, "starting with a letter"),
        ({"image_registry": "ghcr.io"}, "at least one path segment"),
        ({"image_registry": "GHCR.io/Acme"}, "lower case"),
        ({"git_host": "https://github.com"}, "a host name"),
        ({"git_owner": "acme/corp"}, "letters, digits and '-'"),
        ({"git_repo": "acme.git"}, "without .git"),
        ({"staging_namespace": "ml_stage"}, "ml_stage: a namespace is"),
        ({"staging_namespace": "ml", "production_namespace": "ml"}, "every namespace must differ"),
        ({"mlflow_tracking_uri": "mlflow:5000"}, "an http:// or https:// URL"),
        ({"s3_endpoint": "https://minio:9000"}, "without a scheme"),
        ({"data_source": "data/source/../../etc/passwd.csv"}, "data/source/<file>"),
        ({"data_source": "/etc/passwd"}, "data/source/<file>"),
        ({"data_source": "builtin:mnist"}, "builtin:breast_cancer"),
        ({"traffic_target": "istio"}, "istio"),
        # a trailing newline would end up inside a manifest's name or a Python string
        ({"model_name": "churn-model\n"}, "a Kubernetes name"),
        ({"git_owner": "acme\n"}, "letters, digits and '-'"),
        ({"s3_endpoint": "minio:9000\nevil: true"}, "without a scheme"),
        ({"data_source": "builtin:wine\n"}, "data/source/<file>"),
    ],
)
def test_an_invalid_answer_is_refused_with_its_question_s_message(
    questions_only: Path, tmp_path: Path, answer: dict[str, str], message: str
) -> None:
    dest = tmp_path / "project"
    with pytest.raises(ValueError, match="question|choice") as raised:
        copier.run_copy(str(questions_only), dest, data=answer, defaults=True, unsafe=True, quiet=True)
    assert message in str(raised.value)
    assert not dest.exists()


def test_the_defaults_are_the_template_s_own_names(questions_only: Path, tmp_path: Path) -> None:
    copier.run_copy(
        str(questions_only), tmp_path / "p", defaults=True, unsafe=True, quiet=True, skip_tasks=True
    )
    answers = yaml.safe_load((tmp_path / "p" / ".copier-answers.yml").read_text())
    assert answers["model_name"] == "sluice-classifier"
    assert answers["image_registry"] == "ghcr.io/sluice-ml"
    assert answers["staging_namespace"] == "sluice-staging"
    assert answers["mlflow_tracking_uri"] == "http://mlflow.sluice-system.svc:5000"
    assert answers["s3_endpoint"] == "minio.sluice-pipelines.svc:9000"
