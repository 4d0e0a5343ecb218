"""Validate Kubernetes documents: custom resources against the schema subsets in gitops/schemas/, Argo
Workflows kinds also through hera's generated models and a few reference checks, core kinds with
kubernetes-validate. Every problem names the file, the field (a JSON path) and what is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "gitops" / "schemas"
# The Kubernetes version core kinds are validated against (kubernetes-validate ships schemas up to 1.37).
KUBERNETES_VERSION = "1.31"
ARGO_WORKFLOW_KINDS = ("Workflow", "WorkflowTemplate", "CronWorkflow")
_PARAM_REF = re.compile(r"\{\{\s*workflow\.parameters\.([A-Za-z0-9_-]+)\s*\}\}")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one document: where (file, field) and what."""

    source: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.field or '(document)'}: {self.message}"


def json_path(parts: Iterable[Any]) -> str:
    """`spec.predictors[0].traffic` from ("spec", "predictors", 0, "traffic")."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def describe(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    name = meta.get("name") or meta.get("generateName") or "?"
    return f"{doc.get('kind', '?')}/{name}"


# schemas ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SchemaSet:
    """The JSON schemas of gitops/schemas/, by (apiVersion, kind), resolving references between files."""

    by_kind: dict[tuple[str, str], Any]

    def kinds(self) -> list[tuple[str, str]]:
        return sorted(self.by_kind)


@cache
def schema_set(directory: Path = SCHEMA_DIR) -> SchemaSet:
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    documents: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.yaml")):
        documents[path.name] = yaml.safe_load(path.read_text())
    registry: Registry[Any] = Registry().with_resources(
        (name, Resource.from_contents(doc, default_specification=DRAFT202012))
        for name, doc in documents.items()
    )
    by_kind: dict[tuple[str, str], Any] = {}
    for name, doc in documents.items():
        target = doc.get("x-sluice-kind")
        if not target:
            raise ValueError(f"{directory / name}: x-sluice-kind is missing (apiVersion and kind it checks)")
        Draft202012Validator.check_schema(doc)
        key = (target["apiVersion"], target["kind"])
        by_kind[key] = Draft202012Validator({**doc, "$id": name}, registry=registry)
    return SchemaSet(by_kind)


def _schema_problems(doc: dict[str, Any], source: str, validator: Any) -> list[Problem]:
    problems = []
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        problems.append(Problem(source, json_path(error.absolute_path), _short(error.message)))
    return problems


def _short(message: str, limit: int = 200) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


# Argo Workflows: hera's models and references ------------------------------------------------------------
def _hera_model(kind: str) -> Any:
    from hera.workflows import models

    return getattr(models, kind)


def _diff(before: Any, after: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str]]:
    if isinstance(before, dict) and isinstance(after, dict):
        for key in before:
            if key not in after:
                yield (*path, key), "unknown field (not in Argo's schema)"
            else:
                yield from _diff(before[key], after[key], (*path, key))
    elif isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            yield from _diff(b, a, (*path, i))
    elif before != after and not (isinstance(before, str) and str(after) == before):
        yield path, f"value {before!r} does not survive Argo's schema (becomes {after!r})"


def hera_round_trip(doc: dict[str, Any], source: str) -> list[Problem]:
    """Validate an Argo Workflows object with hera's generated pydantic models; report anything dropped."""
    from pydantic import ValidationError

    model = _hera_model(doc["kind"])
    try:
        parsed = model.model_validate(doc)
    except ValidationError as e:
        return [
            Problem(source, json_path(err["loc"]), f"{err['msg']} (got {_short(repr(err.get('input')), 80)})")
            for err in e.errors()
        ]
    dumped = parsed.model_dump(mode="json", by_alias=True, exclude_none=True)
    return [Problem(source, json_path(path), message) for path, message in _diff(doc, dumped)]


def _workflow_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc.get("spec") or {}
    return spec.get("workflowSpec", spec) if doc.get("kind") == "CronWorkflow" else spec


def argo_references(doc: dict[str, Any], source: str) -> list[Problem]:
    """What Argo checks only at submit time: the entrypoint, DAG templates and dependencies, parameters."""
    spec = _workflow_spec(doc)
    prefix = "spec.workflowSpec" if doc.get("kind") == "CronWorkflow" else "spec"
    templates = spec.get("templates") or []
    names = {t.get("name") for t in templates}
    problems = []
    if templates and spec.get("entrypoint") not in names:
        problems.append(
            Problem(source, f"{prefix}.entrypoint", f"{spec.get('entrypoint')!r} is not a template name")
        )
    for i, template in enumerate(templates):
        tasks = (template.get("dag") or {}).get("tasks") or []
        task_names = {t.get("name") for t in tasks}
        for j, task in enumerate(tasks):
            where = f"{prefix}.templates[{i}].dag.tasks[{j}]"
            if "template" in task and task["template"] not in names:
                problems.append(
                    Problem(source, f"{where}.template", f"no template named {task['template']!r}")
                )
            for dep in re.findall(r"[A-Za-z0-9_-]+", task.get("depends", "")):
                if dep not in task_names and dep not in {
                    "Succeeded",
                    "Failed",
                    "Errored",
                    "Skipped",
                    "Omitted",
                }:
                    problems.append(Problem(source, f"{where}.depends", f"no task named {dep!r} in this DAG"))
    if templates:
        declared = {p.get("name") for p in (spec.get("arguments") or {}).get("parameters") or []}
        for ref in sorted(set(_PARAM_REF.findall(yaml.safe_dump(spec)))):
            if ref not in declared:
                problems.append(
                    Problem(
                        source,
                        f"{prefix}.arguments.parameters",
                        f"workflow.parameters.{ref} is used but not declared",
                    )
                )
    return problems


# core kinds ------------------------------------------------------------------------------------------------
def is_core(api_version: str) -> bool:
    """Kubernetes' own groups: no group (v1), a dotless group (apps/v1) or *.k8s.io."""
    if "/" not in api_version:
        return True
    group = api_version.split("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def kubernetes_problems(doc: dict[str, Any], source: str) -> list[Problem]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [Problem(source, json_path(e.absolute_path), _short(e.message))]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [Problem(source, "apiVersion", e.message)]
    return []


# entry points ----------------------------------------------------------------------------------------------
def seldon_pod_specs(doc: dict[str, Any], source: str) -> list[Problem]:
    """A SeldonDeployment's componentSpecs[].spec is a Kubernetes PodSpec: validate it as one (strict)."""
    problems = []
    for i, predictor in enumerate(doc["spec"]["predictors"]):
        for j, component in enumerate(predictor.get("componentSpecs") or []):
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "component"},
                "spec": component["spec"],
            }
            for problem in kubernetes_problems(pod, source):
                where = problem.field.removeprefix("spec").lstrip(".")
                field = f"spec.predictors[{i}].componentSpecs[{j}].spec" + (f".{where}" if where else "")
                problems.append(Problem(source, field, problem.message))
    return problems


# A KServe predictor is a PodSpec inlined with KServe's own fields (ComponentExtensionSpec, the framework and
# model specs, its name): these are set aside before the rest is validated as a Kubernetes PodSpec.
KSERVE_PREDICTOR_FIELDS = frozenset(
    {
        "name", "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType", "autoScaling",
        "containerConcurrency", "timeout", "canaryTrafficPercent", "logger", "batcher", "labels",
        "annotations", "deploymentStrategy", "storageUris", "storageContainerName", "workerSpec", "model",
        "sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "huggingface", "pmml", "lightgbm",
        "paddle",
    }
)  # fmt: skip


def kserve_pod_specs(doc: dict[str, Any], source: str) -> list[Problem]:
    """Each predictor of an InferenceService (the stable one, and every canary that declares its own
    containers) is a Kubernetes PodSpec once KServe's fields are set aside: validate it as one (strict)."""
    spec = doc["spec"]
    predictors = [("spec.predictor", spec["predictor"])] + [
        (f"spec.canary[{i}].predictor", c["predictor"]) for i, c in enumerate(spec.get("canary") or [])
    ]
    problems = []
    for where, predictor in predictors:
        pod_spec = {k: v for k, v in predictor.items() if k not in KSERVE_PREDICTOR_FIELDS}
        if not pod_spec.get("containers"):
            continue  # a framework or model spec, or a canary running the stable predictor's containers
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": pod_spec}
        for problem in kubernetes_problems(pod, source):
            rest = problem.field.removeprefix("spec").lstrip(".")
            problems.append(Problem(source, f"{where}.{rest}" if rest else where, problem.message))
    return problems


def validate_document(doc: Any, source: str = "<document>") -> list[Problem]:
    """Every problem with one Kubernetes object (an empty list when it is valid)."""
    if not isinstance(doc, dict):
        return [Problem(source, "", f"expected a Kubernetes object (mapping), got {type(doc).__name__}")]
    missing = [f for f in ("apiVersion", "kind") if not isinstance(doc.get(f), str)]
    if missing:
        return [Problem(source, f, "is required") for f in missing]
    key = (doc["apiVersion"], doc["kind"])
    schemas = schema_set()
    if key in schemas.by_kind:
        problems = _schema_problems(doc, source, schemas.by_kind[key])
        if (
            not problems
            and doc["apiVersion"] == "argoproj.io/v1alpha1"
            and doc["kind"] in ARGO_WORKFLOW_KINDS
        ):
            problems = hera_round_trip(doc, source) + argo_references(doc, source)
        if not problems and key == ("machinelearning.seldon.io/v1", "SeldonDeployment"):
            problems = seldon_pod_specs(doc, source)
        if not problems and key == ("serving.kserve.io/v1beta1", "InferenceService"):
            problems = kserve_pod_specs(doc, source)
        return problems
    if is_core(doc["apiVersion"]):
        return kubernetes_problems(doc, source)
    return [Problem(source, "kind", f"no schema for {key[0]} {key[1]} (add one to gitops/schemas/)")]


def load_documents(path: Path) -> tuple[list[Any], list[Problem]]:
    """The YAML documents of a file (empty ones skipped), or the parse error as a problem."""
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        return [], [Problem(str(path), where, f"not valid YAML: {getattr(e, 'problem', e)}")]
    return docs, []


def validate_file(path: Path) -> list[Problem]:
    docs, problems = load_documents(path)
    for i, doc in enumerate(docs):
        label = f"{path}" if len(docs) == 1 else f"{path}#{i + 1}"
        problems += validate_document(doc, f"{label} ({describe(doc)})" if isinstance(doc, dict) else label)
    return problems
