"""Names that must agree across the project: the model, the image registry, the Git repository and the
namespaces. Each has one place that defines it (params.yaml, pipelines/conventions.py, an environment's
manifest); every other mention in a manifest, policy, workflow or rendered pipeline is compared with it.
One missed file would point a cluster at someone else's image or repository, silently."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import yaml

from doctor.project import LOADER, Document, Project, leaves
from doctor.report import Finding, missing, ok

AREA = "names"
MODEL_URI = re.compile(r"models:/([A-Za-z0-9][A-Za-z0-9._-]*)[/@]")
SHOWN = 3  # places named per wrong value; the count says how many more
PLACEHOLDERS = {"name", "NAME", "model", "MODEL"}  # `models:/name@alias` in a usage message
# An image of the project's own: <registry>/<sluice-serving|sluice-runtime|sluice-router>[:tag][@digest]
IMAGE = re.compile(
    r"(?<![\w./-])([a-z0-9][a-z0-9.-]*(?::\d+)?(?:/[a-z0-9._-]+)*)/sluice-(?:serving|runtime|router)\b"
)


@dataclass(frozen=True)
class Mention:
    where: str
    value: str


def normalize_repository(url: str) -> str:
    """`host/owner/repo` of an https, ssh or scp-like Git URL (lower-case host, no `.git`)."""
    text = url.strip()
    m = re.fullmatch(
        r"(?:https?://(?:[^@/]+@)?|ssh://(?:[^@/]+@)?|[\w.-]+@)([^/:]+)(?::\d+)?[:/](.+?)(?:\.git)?/?", text
    )
    if not m:
        return text.removesuffix(".git")
    return f"{m[1].lower()}/{m[2]}"


def _compare(
    check: str, expected: str, source: str, mentions: list[Mention], fix_hint: str
) -> Iterator[Finding]:
    """One finding per wrong value, naming its places (the first three, and how many more)."""
    wrong: dict[str, list[str]] = {}
    for m in mentions:
        if m.value != expected:
            wrong.setdefault(m.value, []).append(m.where)
    agreeing = len(mentions) + 1 - sum(len(places) for places in wrong.values())
    for value, places in wrong.items():
        shown = "; ".join(places[:SHOWN]) + (
            f"; and {len(places) - SHOWN} more" if len(places) > SHOWN else ""
        )
        count = f" in {len(places)} places" if len(places) > 1 else ""
        fix = f"set it to {expected!r} ({fix_hint})"
        if (
            len(places) > agreeing
        ):  # most of the project says otherwise: perhaps the definition is what is stale
            fix += f", or, if {value!r} is right, change {source}"
        yield missing(AREA, check, f"{value!r}{count} where {source} says {expected!r}", fix, shown)
    if not wrong:
        n = len(mentions) + 1
        yield ok(AREA, check, f"{expected!r} in {n} place{'s' if n != 1 else ''}", source)


def model_name(project: Project) -> Iterator[Finding]:
    check = "model name"
    registry = project.params.get("registry")
    expected = registry.get("model_name") if isinstance(registry, dict) else None
    if not isinstance(expected, str) or not expected:
        yield missing(
            AREA, check, "params.yaml has no registry.model_name", "add registry.model_name to params.yaml"
        )
        return
    mentions: list[Mention] = []
    if "MODEL_NAME" in project.conventions:
        mentions.append(
            Mention("pipelines/conventions.py: MODEL_NAME", str(project.conventions["MODEL_NAME"]))
        )
    for env in project.environments():
        doc = project.serving_document(env)
        if doc is None:
            continue
        mentions.append(Mention(doc.where("metadata.name"), doc.name))
        if doc.kind == "SeldonDeployment" and "name" in doc.body.get("spec", {}):
            mentions.append(Mention(doc.where("spec.name"), str(doc.body["spec"]["name"])))
        for other in project.under(f"gitops/environments/{env}/"):
            if other.kind == "PodMonitor":
                labels = other.body.get("spec", {}).get("selector", {}).get("matchLabels", {})
                if "seldon-deployment-id" in labels:
                    mentions.append(
                        Mention(
                            other.where("spec.selector.matchLabels.seldon-deployment-id"),
                            str(labels["seldon-deployment-id"]),
                        )
                    )
    for doc in project.documents:
        for path, value in leaves(doc.body):
            if path.endswith("description"):  # prose: `models:/name@alias` there is the syntax, not a model
                continue
            mentions.extend(
                Mention(doc.where(path), m[1]) for m in MODEL_URI.finditer(value) if m[1] not in PLACEHOLDERS
            )
    yield from _compare(
        check, expected, "params.yaml: registry.model_name", mentions, "the model's registered name"
    )


def image_registry(project: Project) -> Iterator[Finding]:
    check = "image registry"
    repo = project.conventions.get("SERVING_IMAGE_REPO")
    if not isinstance(repo, str) or "/" not in repo:
        yield missing(
            AREA,
            check,
            "pipelines/conventions.py has no SERVING_IMAGE_REPO",
            "define SERVING_IMAGE_REPO there",
        )
        return
    expected = repo.rsplit("/", 1)[0]
    mentions: list[Mention] = []
    runtime = project.conventions.get("RUNTIME_IMAGE")
    if isinstance(runtime, str):
        mentions.extend(
            Mention("pipelines/conventions.py: RUNTIME_IMAGE", m[1]) for m in IMAGE.finditer(runtime)
        )
    for doc in project.documents:
        for path, value in leaves(doc.body):
            mentions.extend(Mention(doc.where(path), m[1]) for m in IMAGE.finditer(value))
    yield from _compare(
        check, expected, "pipelines/conventions.py: SERVING_IMAGE_REPO", mentions, "the registry you push to"
    )


def repository(project: Project) -> Iterator[Finding]:
    check = "repository URL"
    url = project.conventions.get("REPO_URL")
    if not isinstance(url, str) or not url:
        yield missing(AREA, check, "pipelines/conventions.py has no REPO_URL", "define REPO_URL there")
        return
    expected = normalize_repository(url)
    slug = expected.split("/", 1)[1] if "/" in expected else expected
    mentions: list[Mention] = []
    for doc in project.documents:
        if doc.kind == "Application":
            source = doc.body.get("spec", {}).get("source", {})
            if "repoURL" in source:
                mentions.append(
                    Mention(doc.where("spec.source.repoURL"), normalize_repository(str(source["repoURL"])))
                )
        elif doc.kind == "AppProject":
            for i, repo in enumerate(doc.body.get("spec", {}).get("sourceRepos", []) or []):
                mentions.append(Mention(doc.where(f"spec.sourceRepos.{i}"), normalize_repository(str(repo))))
        elif doc.kind == "ConfigMap" and "github-repository" in (doc.body.get("data") or {}):
            value = str(doc.body["data"]["github-repository"])
            mentions.append(Mention(doc.where("data.github-repository"), f"{expected.split('/')[0]}/{value}"))
        elif doc.kind in ("WorkflowTemplate", "CronWorkflow", "Workflow"):
            for path, value in leaves(doc.body):
                if path.endswith(".git.repo"):
                    mentions.append(Mention(doc.where(path), normalize_repository(value)))
    yield from _compare(
        check, expected, "pipelines/conventions.py: REPO_URL", mentions, f"the repository {slug}"
    )


def namespaces(project: Project) -> Iterator[Finding]:
    """Each environment's namespace (from its manifest) everywhere that environment is named, and every
    namespace Sluice uses declared, given a ConfigMap and allowed in the Argo CD project."""
    declared = {d.name for d in project.documents if d.kind == "Namespace"}
    config_namespaces = {
        d.namespace for d in project.documents if d.kind == "ConfigMap" and d.name == "sluice-config"
    }
    project_destinations = {
        str(dest.get("namespace"))
        for d in project.documents
        if d.kind == "AppProject"
        for dest in d.body.get("spec", {}).get("destinations", []) or []
    }
    applications = [d for d in project.documents if d.kind == "Application"]
    cluster_namespaces: dict[str, str] = {}  # namespace -> what defines it
    for env in project.environments():
        doc = project.serving_document(env)
        if doc is None or doc.namespace is None:
            continue
        expected = doc.namespace
        source = doc.where("metadata.namespace")
        mentions: list[Mention] = []
        for other in project.under(f"gitops/environments/{env}/"):
            if other is doc:
                continue
            if other.namespace is not None:
                mentions.append(Mention(other.where("metadata.namespace"), other.namespace))
            if other.kind == "Kustomization" and "namespace" in other.body:
                mentions.append(Mention(other.where("namespace"), str(other.body["namespace"])))
            selector = (other.body.get("spec") or {}).get("namespaceSelector") or {}
            for i, name in enumerate(selector.get("matchNames", []) or []):
                mentions.append(Mention(other.where(f"spec.namespaceSelector.matchNames.{i}"), str(name)))
        for app in applications:
            labels = (app.body.get("metadata") or {}).get("labels") or {}
            path = str(((app.body.get("spec") or {}).get("source") or {}).get("path", ""))
            if (
                labels.get("sluice.dev/environment") == env
                or path.rstrip("/") == f"gitops/environments/{env}"
            ):
                cluster_namespaces[expected] = source
                dest = (app.body.get("spec") or {}).get("destination") or {}
                mentions.append(Mention(app.where("spec.destination.namespace"), str(dest.get("namespace"))))
        yield from _compare(
            f"namespace of {env}", expected, source, mentions, f"the {env} environment's namespace"
        )
    pipelines_ns = project.conventions.get("NAMESPACE")
    if isinstance(pipelines_ns, str):
        source = "pipelines/conventions.py: NAMESPACE"
        cluster_namespaces[pipelines_ns] = source
        mentions = [
            Mention(d.where("metadata.namespace"), d.namespace)
            for d in project.under("pipelines/rendered/")
            if d.namespace is not None
        ]
        for app in applications:
            path = str(((app.body.get("spec") or {}).get("source") or {}).get("path", ""))
            if path.rstrip("/") == "pipelines/rendered":
                dest = (app.body.get("spec") or {}).get("destination") or {}
                mentions.append(Mention(app.where("spec.destination.namespace"), str(dest.get("namespace"))))
        yield from _compare(
            "namespace of pipelines", pipelines_ns, source, mentions, "the pipelines' namespace"
        )
    for namespace, source in sorted(cluster_namespaces.items()):
        gaps = []
        if declared and namespace not in declared:
            gaps.append("no Namespace in gitops/cluster/namespaces.yaml")
        if config_namespaces and namespace not in config_namespaces:
            gaps.append("no sluice-config ConfigMap in gitops/cluster/config.yaml")
        if project_destinations and namespace not in project_destinations:
            gaps.append("not a destination of the Argo CD AppProject (gitops/argocd/project.yaml)")
        if gaps:
            yield missing(
                AREA,
                f"namespace {namespace} declared",
                "; ".join(gaps),
                f"add {namespace} there (it is named by {source})",
                source,
            )


def policies(project: Project) -> Iterator[Finding]:
    """Each environment with manifests has a promotion policy, and each policy an environment."""
    envs = set(project.environments())
    base = project.root / "policies"
    named = {p.stem for p in base.glob("*.yaml")} if base.is_dir() else set()
    for env in sorted(envs - named):
        yield missing(
            AREA,
            f"policy of {env}",
            f"gitops/environments/{env}/ has no policies/{env}.yaml",
            "copy policies/staging.yaml and adjust its stages and gates",
            f"policies/{env}.yaml",
        )
    for env in sorted(named - envs):
        yield missing(
            AREA,
            f"policy of {env}",
            f"policies/{env}.yaml names no environment (no gitops/environments/{env}/)",
            f"rename it to an environment's name ({', '.join(sorted(envs))}) or remove it",
            f"policies/{env}.yaml",
        )
    if envs and envs <= named:
        yield ok(AREA, "policies", f"one per environment ({', '.join(sorted(envs))})", "policies/")


def data_source(project: Project) -> Iterator[Finding]:
    """The contract was profiled from the data params.yaml trains on (a new source needs a new contract)."""
    check = "data source"
    data = project.params.get("data")
    source = data.get("source") if isinstance(data, dict) else None
    path = project.root / "contract.yaml"
    if not isinstance(source, str) or not path.is_file():
        return
    try:
        contract = yaml.load(path.read_text(), Loader=LOADER)
    except yaml.YAMLError as exc:
        yield missing(
            AREA, check, f"contract.yaml: not valid YAML ({exc})", "fix or re-profile it", "contract.yaml"
        )
        return
    meta = contract.get("profiled") if isinstance(contract, dict) else None
    profiled = meta.get("source") if isinstance(meta, dict) else None
    if profiled is None or profiled == source:
        yield ok(AREA, check, f"{source} (contract.yaml profiled from it)", "params.yaml: data.source")
        return
    target = ((contract.get("target") or {}).get("name")) or "<column>"
    yield missing(
        AREA,
        check,
        f"params.yaml trains on {source!r} but contract.yaml was profiled from {profiled!r}",
        f"sluice model profile {source} --target {target} --force",
        "contract.yaml: profiled.source",
    )


def unreadable(project: Project) -> Iterator[Finding]:
    _ = project.documents, project.params, project.conventions
    for problem in project.problems:
        yield missing(AREA, "readable files", problem, "fix the file's syntax", problem.split(":", 1)[0])


def check(project: Project) -> list[Finding]:
    found: list[Finding] = []
    for fn in (unreadable, model_name, image_registry, repository, namespaces, policies, data_source):
        found.extend(fn(project))
    return found


__all__ = ["Document", "check", "normalize_repository"]
