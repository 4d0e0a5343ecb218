"""The validators reject broken documents, naming the field: schema subsets, hera's models, Argo references,
kubernetes-validate for core kinds, and YAML that does not parse."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from pipelines import batch, events, train
from pipelines.schemas import schema_set, validate_document, validate_file


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return train.build().to_dict()


def broken(doc: dict[str, Any], edit: Any) -> dict[str, Any]:
    copy_ = copy.deepcopy(doc)
    edit(copy_)
    return copy_


def fields(problems: list[Any]) -> list[str]:
    return [p.field for p in problems]


def test_the_valid_template_passes(template: dict[str, Any]) -> None:
    assert validate_document(template) == []


@pytest.mark.parametrize(
    ("edit", "field", "words"),
    [
        (
            lambda d: d["spec"]["templates"][0]["script"].update(imag="x"),
            "spec.templates[0].script.imag",
            "unknown field",
        ),
        (
            lambda d: d["spec"]["templates"][0]["retryStrategy"].update(retryPolicy="Sometimes"),
            "spec.templates[0].retryStrategy.retryPolicy",
            "Sometimes",
        ),
        (lambda d: d["spec"].update(activeDeadlineSeconds="soon"), "spec.activeDeadlineSeconds", "integer"),
        (lambda d: d["spec"].update(entrypoint="main"), "spec.entrypoint", "not a template name"),
        (
            lambda d: d["spec"]["templates"][-1]["dag"]["tasks"][1].update(template="nope"),
            "spec.templates[5].dag.tasks[1].template",
            "no template named 'nope'",
        ),
        (
            lambda d: d["spec"]["templates"][-1]["dag"]["tasks"][2].update(depends="dvc-pul"),
            "spec.templates[5].dag.tasks[2].depends",
            "dvc-pul",
        ),
        (
            lambda d: d["spec"]["templates"][1]["script"].update(
                source="echo {{workflow.parameters.revison}}"
            ),
            "spec.arguments.parameters",
            "revison",
        ),
        (lambda d: d["spec"]["templates"][1]["script"].pop("image"), "spec.templates[1].script", "image"),
        (lambda d: d["metadata"].update(name="Train_Model"), "metadata.name", "does not match"),
        (lambda d: d["spec"].pop("templates"), "spec", "templates"),
        (
            lambda d: d["spec"]["templates"][1]["script"]["env"][4].update(valueFrom={"secretKeyRef": "x"}),
            "spec.templates[1].script.env[4].valueFrom.secretKeyRef",
            "",
        ),
    ],
    ids=[
        "typo-field",
        "bad-enum",
        "wrong-type",
        "missing-entrypoint",
        "unknown-task-template",
        "unknown-dependency",
        "undeclared-parameter",
        "no-image",
        "bad-name",
        "no-templates",
        "secretkeyref-not-an-object",
    ],
)
def test_broken_templates_are_rejected(template: dict[str, Any], edit: Any, field: str, words: str) -> None:
    problems = validate_document(broken(template, edit), "train.yaml")
    assert field in fields(problems), problems
    assert any(words in p.message for p in problems if p.field == field), problems
    assert all(str(p).startswith("train.yaml: ") for p in problems)


def test_cron_schedule_and_template_ref_are_checked() -> None:
    cron = batch.build_cron().to_dict()
    assert validate_document(cron) == []
    bad = broken(cron, lambda d: d["spec"].update(schedules=["every night"]))
    assert fields(validate_document(bad)) == ["spec.schedules[0]"]
    bad = broken(cron, lambda d: d["spec"]["workflowSpec"].pop("workflowTemplateRef"))
    assert fields(validate_document(bad)) == ["spec.workflowSpec"]


def test_sensor_and_event_source_are_checked() -> None:
    sensor, source = events.sensor(), events.event_source()
    assert validate_document(dict(sensor)) == [] and validate_document(dict(source)) == []
    bad = broken(
        dict(sensor), lambda d: d["spec"]["triggers"][0]["template"]["argoWorkflow"].update(operation="run")
    )
    assert fields(validate_document(bad)) == ["spec.triggers[0].template.argoWorkflow.operation"]
    bad = broken(dict(sensor), lambda d: d["spec"]["dependencies"][0].pop("eventName"))
    assert fields(validate_document(bad)) == ["spec.dependencies[0]"]
    bad = broken(
        dict(source), lambda d: d["spec"]["minio"]["records-uploaded"].update(accessKey="inline-key")
    )
    assert fields(validate_document(bad)) == ["spec.minio.records-uploaded.accessKey"]


def test_core_kinds_go_through_kubernetes_validate() -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"app": "x"}},
            "template": {
                "metadata": {"labels": {"app": "x"}},
                "spec": {"containers": [{"name": "x", "image": "y"}]},
            },
        },
    }
    assert validate_document(deployment) == []
    bad = broken(deployment, lambda d: d["spec"].update(replicas="three"))
    assert fields(validate_document(bad)) == ["spec.replicas"]
    bad = broken(
        deployment, lambda d: d["spec"]["template"]["spec"]["containers"][0].update(imagePullPolcy="Always")
    )
    assert validate_document(bad) != []


def test_unknown_kinds_and_non_objects_are_reported() -> None:
    assert fields(validate_document({"apiVersion": "example.com/v1", "kind": "Widget"})) == ["kind"]
    assert fields(validate_document({"kind": "Widget"})) == ["apiVersion"]
    assert validate_document(["not", "a", "mapping"])[0].message.startswith("expected a Kubernetes object")


def test_unparseable_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("kind: Sensor\nspec: [unclosed\n")
    (problem,) = validate_file(path)
    assert (
        problem.source == str(path)
        and problem.field.startswith("line ")
        and "not valid YAML" in problem.message
    )


def test_every_schema_file_names_its_kind() -> None:
    kinds = {kind for _, kind in schema_set().kinds()}
    assert {
        "SeldonDeployment",
        "InferenceService",
        "WorkflowTemplate",
        "CronWorkflow",
        "Workflow",
        "EventSource",
        "Sensor",
        "Application",
        "AppProject",
        "PodMonitor",
        "ServiceMonitor",
    } <= kinds
