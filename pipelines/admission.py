"""Admission policies for the pipelines namespace: whoever may submit a workflow there cannot pair an image of
their choice with the pipeline secrets.

RBAC alone cannot say it: submitting from a template needs `create` on Workflows (gitops/cluster/
pipelines-rbac.yaml), and a Workflow one may create can carry its own templates, images and secretKeyRefs,
which the workflow controller then runs with the secrets of the namespace. So two Kubernetes
ValidatingAdmissionPolicies (CEL, admissionregistration.k8s.io/v1, GA in Kubernetes 1.30) close the gap in
the API server itself:

- `sluice-pipelines-workflows-from-templates`: a Workflow created in the namespace may only reference one
  of Sluice's WorkflowTemplates and give parameter values: no templates of its own, no podSpecPatch, no
  service account, no entrypoint, no parameter read from elsewhere. (Argo's own `workflowRestrictions:
  templateReferencing: Secure` says much the same, but for the whole controller.)
- `sluice-pipelines-pinned-images`: a workflow pod may run only the images the templates pin by digest
  (its `main` container) and Argo's executor (`init`, `wait`, and `main` for a `data` template, where the
  executor itself lists the bucket: only its `argoexec data` command).

The allow-lists are derived from the templates, so they change with them (`make render`).
"""

from __future__ import annotations

from typing import Any

from pipelines.conventions import ARGOEXEC_REPOSITORY, NAMESPACE, labels

WORKFLOWS_POLICY = "sluice-pipelines-workflows-from-templates"
PODS_POLICY = "sluice-pipelines-pinned-images"
API_VERSION = "admissionregistration.k8s.io/v1"
WORKFLOW_LABEL = "workflows.argoproj.io/workflow"  # every pod the workflow controller creates carries it


def _templates() -> list[dict[str, Any]]:
    from pipelines.catalog import catalog

    return [p.build() for p in catalog() if p.kind == "WorkflowTemplate"]


def template_names() -> list[str]:
    return sorted(doc["metadata"]["name"] for doc in _templates())


def pinned_images() -> list[str]:
    """Every image a Sluice template runs (each pinned by digest: a test checks it)."""
    images = set()
    for doc in _templates():
        for template in doc["spec"].get("templates", []):
            pod = template.get("script") or template.get("container")
            if pod:
                images.add(pod["image"])
    return sorted(images)


def lists_with_the_executor() -> bool:
    """Whether a template is a `data` template: Argo runs those in a pod whose `main` container is its own
    executor (`argoexec data ...`, listing the bucket with the template's fixed endpoint and secrets)."""
    return any("data" in t for doc in _templates() for t in doc["spec"].get("templates", []))


def _cel_list(items: list[str]) -> str:
    return "[" + ", ".join("'" + item.replace("\\", "\\\\").replace("'", "\\'") + "'" for item in items) + "]"


def workflow_validations() -> list[dict[str, str]]:
    return [
        {
            "expression": "has(object.spec.workflowTemplateRef) && "
            "object.spec.workflowTemplateRef.all(k, k == 'name') && "
            f"object.spec.workflowTemplateRef.name in {_cel_list(template_names())}",
            "message": f"a Workflow in {NAMESPACE} must reference one of Sluice's WorkflowTemplates "
            f"({', '.join(template_names())}) by name",
        },
        {
            "expression": "object.spec.all(k, k in ['workflowTemplateRef', 'arguments', 'workflowMetadata'])",
            "message": "a Workflow here may set only workflowTemplateRef, arguments and workflowMetadata: no "
            "templates, images, podSpecPatch, serviceAccountName or entrypoint of its own",
        },
        {  # what a CronWorkflow copies into each run: labels and annotations
            "expression": "!has(object.spec.workflowMetadata) || "
            "object.spec.workflowMetadata.all(k, k in ['labels', 'annotations'])",
            "message": "workflowMetadata here holds labels and annotations only",
        },
        {
            "expression": "!has(object.spec.arguments) || (object.spec.arguments.all(k, k == 'parameters') && "
            "object.spec.arguments.parameters.all(p, p.all(k, k in ['name', 'value'])))",
            "message": "workflow arguments here are parameters with a name and a value, nothing else",
        },
    ]


def pod_validations() -> list[dict[str, str]]:
    executor = ARGOEXEC_REPOSITORY + ":"
    data = (
        f"(c.name == 'main' && c.image.startsWith('{executor}') && has(c.command) && c.command.size() >= 2 && "
        "c.command[0] == 'argoexec' && c.command[1] == 'data') || "
        if lists_with_the_executor()
        else ""
    )
    return [
        {
            "expression": "object.spec.containers.all(c, "
            f"(c.name == 'main' && c.image in {_cel_list(pinned_images())}) || {data}"
            f"(c.name == 'wait' && c.image.startsWith('{executor}')))",
            "message": "a workflow pod here runs only the images Sluice's templates pin by digest "
            "(and Argo's executor)",
        },
        {
            "expression": "!has(object.spec.initContainers) || object.spec.initContainers.all(c, "
            f"c.name == 'init' && c.image.startsWith('{executor}'))",
            "message": "the only init container of a workflow pod here is Argo's executor",
        },
    ]


def _policy(
    name: str, description: str, rules: list[dict[str, Any]], validations: list[Any], **match: Any
) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {
            "name": name,
            "labels": labels("admission"),
            "annotations": {"sluice.dev/description": description},
        },
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": rules, **match},
            "validations": validations,
        },
    }


def _binding(policy: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": policy, "labels": labels("admission")},
        "spec": {
            "policyName": policy,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}
            },
        },
    }


def workflows_policy() -> dict[str, Any]:
    return _policy(
        WORKFLOWS_POLICY,
        "Workflows in sluice-pipelines only run Sluice's WorkflowTemplates, with parameter values.",
        [
            {
                "apiGroups": ["argoproj.io"],
                "apiVersions": ["*"],
                "operations": ["CREATE"],
                "resources": ["workflows"],
            }
        ],
        workflow_validations(),
    )


def pods_policy() -> dict[str, Any]:
    return _policy(
        PODS_POLICY,
        "Workflow pods in sluice-pipelines only run the images the templates pin by digest.",
        # UPDATE too: a running pod's container image can be changed in place
        [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["pods"],
            }
        ],
        pod_validations(),
        objectSelector={"matchExpressions": [{"key": WORKFLOW_LABEL, "operator": "Exists"}]},
    )


def workflows_binding() -> dict[str, Any]:
    return _binding(WORKFLOWS_POLICY)


def pods_binding() -> dict[str, Any]:
    return _binding(PODS_POLICY)
