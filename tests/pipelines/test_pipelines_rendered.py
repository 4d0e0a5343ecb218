"""The committed YAML in pipelines/rendered/ is what the hera Python renders, and it reads well in Argo.

SLUICE_REGENERATE=1 rewrites the committed files instead of failing (like hera's HERA_REGENERATE).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.catalog import RENDERED_DIR, catalog, render_all, stale, to_yaml, write_all
from pipelines.conventions import DESCRIPTION, TITLE
from pipelines.schemas import validate_file

PIPELINES = catalog()
IDS = [p.name for p in PIPELINES]


def test_committed_yaml_matches_the_python() -> None:
    if os.environ.get("SLUICE_REGENERATE"):
        write_all()
    assert stale() == [], "pipelines/rendered/ differs from the Python: run `sluice pipelines render`"
    assert set(RENDERED_DIR.glob("*.yaml")) == set(render_all())


def test_staleness_is_about_content_not_formatting(tmp_path: Path) -> None:
    write_all(tmp_path)
    assert stale(tmp_path) == []
    target = tmp_path / "train.workflowtemplate.yaml"
    header, _, body = target.read_text().partition("\n")
    target.write_text(header + "\n" + yaml.safe_dump(yaml.safe_load(body), sort_keys=True, width=60))
    assert stale(tmp_path) == []  # reformatted, same object
    target.write_text(target.read_text().replace("dvc repro\n", "dvc repro --force\n"))
    assert stale(tmp_path) == [target]  # a hand edit
    write_all(tmp_path)
    (tmp_path / "old.workflowtemplate.yaml").write_text("kind: WorkflowTemplate\n")
    (tmp_path / "promote.workflowtemplate.yaml").unlink()
    assert stale(tmp_path) == [
        tmp_path / "old.workflowtemplate.yaml",
        tmp_path / "promote.workflowtemplate.yaml",
    ]


@pytest.mark.parametrize("path", sorted(RENDERED_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_rendered_file_is_valid(path: Path) -> None:
    assert validate_file(path) == []


def _templates(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["spec"].get("templates", [])


def _pods(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The templates that run an image of ours (a `data` template runs Argo's executor, sized by Argo)."""
    return [
        (t["name"], t.get("script") or t["container"])
        for t in _templates(doc)
        if "dag" not in t and "data" not in t
    ]


WORKFLOW_TEMPLATES = [p for p in PIPELINES if p.kind == "WorkflowTemplate"]


@pytest.mark.parametrize("pipe", WORKFLOW_TEMPLATES, ids=[p.name for p in WORKFLOW_TEMPLATES])
def test_reads_well_in_the_argo_ui(pipe: Any) -> None:
    doc = pipe.build()
    runs = doc["spec"]["workflowMetadata"]  # what each run shows in the workflow list
    for holder in [doc["metadata"], runs, *(t["metadata"] for t in _templates(doc))]:
        assert holder["annotations"][TITLE] and holder["annotations"][DESCRIPTION]
        assert "{{" not in holder["annotations"][TITLE] + holder["annotations"][DESCRIPTION]
    assert runs["labels"]["sluice.dev/pipeline"] == pipe.name
    for param in doc["spec"]["arguments"]["parameters"]:
        assert len(param.get("description", "")) > 10, f"{pipe.name}: parameter {param['name']} undescribed"
    assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "sluice"


@pytest.mark.parametrize("pipe", WORKFLOW_TEMPLATES, ids=[p.name for p in WORKFLOW_TEMPLATES])
def test_every_step_has_requests_limits_and_a_deadline(pipe: Any) -> None:
    doc = pipe.build()
    assert doc["spec"]["activeDeadlineSeconds"] > 0
    for name, pod in _pods(doc):
        resources = pod["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(
            resources["limits"]
        ), name


@pytest.mark.parametrize("pipe", WORKFLOW_TEMPLATES, ids=[p.name for p in WORKFLOW_TEMPLATES])
def test_network_steps_retry_and_computation_does_not(pipe: Any) -> None:
    for template in _templates(pipe.build()):
        if "dag" in template:
            continue
        if template["name"] == "dvc-repro":
            assert "retryStrategy" not in template, (
                "a failed dvc repro (data check, gate) must not be retried"
            )
        else:
            assert template["retryStrategy"]["retryPolicy"] == "OnTransientError", template["name"]


SECRETISH = re.compile(r"(TOKEN|SECRET|PASSWORD|ACCESS_KEY)", re.I)


@pytest.mark.parametrize("pipe", PIPELINES, ids=IDS)
def test_secrets_are_referenced_never_inlined(pipe: Any) -> None:
    text = to_yaml(pipe)
    assert not re.search(r"gh[pousr]_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}", text)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "name" in node and SECRETISH.search(str(node["name"])) and "value" in node:
                raise AssertionError(f"{pipe.name}: {node['name']} has an inline value")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    doc = pipe.build()
    walk(doc)
    secret_refs = re.findall(r"secretKeyRef|Secret:|secretName|accessKey|secretKey", text)
    assert secret_refs or pipe.kind in {
        "CronWorkflow",
        "Sensor",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }


def test_train_outputs_digest_and_metrics_as_workflow_outputs() -> None:
    doc = next(p for p in PIPELINES if p.name == "train").build()
    register = next(t for t in _templates(doc) if t["name"] == "register")
    outputs = {p["name"]: p for p in register["outputs"]["parameters"]}
    assert outputs["bundle-digest"]["globalName"] == "bundle-digest"
    assert outputs["metrics"]["globalName"] == "metrics"
    dag = next(t for t in _templates(doc) if "dag" in t)["dag"]["tasks"]
    assert [t["name"] for t in dag] == ["checkout", "dvc-pull", "dvc-repro", "dvc-push", "register"]
    assert [t.get("depends") for t in dag] == [None, "checkout", "dvc-pull", "dvc-repro", "dvc-push"]


def test_the_image_build_pushes_by_digest_and_checks_the_bundle() -> None:
    doc = next(p for p in PIPELINES if p.name == "build-serving-image").build()
    build = next(t for t in _templates(doc) if t["name"] == "buildkit")
    assert build["container"]["command"][:2] == ["sh", "-c"]
    assert "--opt=filename=Dockerfile" in build["container"]["command"][2]
    assert build["outputs"]["parameters"][0]["globalName"] == "image-digest"
    fetch = next(t for t in _templates(doc) if t["name"] == "fetch-bundle")["script"]
    assert {"name": "BUNDLE_DIGEST", "value": "{{workflow.parameters.bundle-digest}}"} in fetch["env"]
    assert '"$actual" != "$BUNDLE_DIGEST"' in fetch["source"] and "exit 1" in fetch["source"]


def test_sensor_submits_the_batch_template_with_the_new_object_key() -> None:
    sensor = next(p for p in PIPELINES if p.kind == "Sensor").build()
    source = next(p for p in PIPELINES if p.kind == "EventSource").build()
    trigger = sensor["spec"]["triggers"][0]["template"]["argoWorkflow"]
    workflow = trigger["source"]["resource"]
    assert trigger["operation"] == "submit"
    assert workflow["spec"]["workflowTemplateRef"]["name"] == "batch-score"
    dep = sensor["spec"]["dependencies"][0]
    assert dep["eventSourceName"] == source["metadata"]["name"]
    assert dep["eventName"] in source["spec"]["minio"]
    dests = {p["dest"] for p in trigger["parameters"]}
    names = [p["name"] for p in workflow["spec"]["arguments"]["parameters"]]
    assert dests == {f"spec.arguments.parameters.{i}.value" for i in range(len(names))}
    batch = next(p for p in PIPELINES if p.name == "batch-score").build()
    declared = {p["name"] for p in batch["spec"]["arguments"]["parameters"]}
    assert set(names) <= declared


def test_cron_runs_the_batch_template_with_declared_parameters() -> None:
    cron = next(p for p in PIPELINES if p.kind == "CronWorkflow").build()
    batch = next(p for p in PIPELINES if p.name == "batch-score").build()
    spec = cron["spec"]
    assert spec["workflowSpec"]["workflowTemplateRef"]["name"] == batch["metadata"]["name"]
    assert spec["concurrencyPolicy"] == "Forbid"
    declared = {p["name"] for p in batch["spec"]["arguments"]["parameters"]}
    assert {p["name"] for p in spec["workflowSpec"]["arguments"]["parameters"]} <= declared


def test_rendered_files_say_where_they_come_from() -> None:
    for path in RENDERED_DIR.glob("*.yaml"):
        first = path.read_text().splitlines()[0]
        module = first.split(" from ")[1].split(":")[0]
        assert (Path(__file__).resolve().parents[2] / module).is_file(), first
        assert yaml.safe_load(path.read_text())["metadata"]["name"] in path.name


@pytest.mark.parametrize("pipe", WORKFLOW_TEMPLATES, ids=[p.name for p in WORKFLOW_TEMPLATES])
def test_steps_run_as_the_image_user_and_none_as_root(pipe: Any) -> None:
    doc = pipe.build()
    pod = doc["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == pod["fsGroup"] == 10001
    for name, container in _pods(doc):
        context = container.get("securityContext") or {}
        assert context.get("runAsUser") != 0 and context.get("privileged") is not True, name
        if name == "buildkit":  # rootless BuildKit: its image's user, in a user namespace it maps itself
            assert context["runAsUser"] == 1000 and context["runAsNonRoot"] is True
            assert context["capabilities"] == {"drop": ["ALL"], "add": ["SETUID", "SETGID"]}
        else:
            assert "securityContext" not in container or "capabilities" not in context, name
