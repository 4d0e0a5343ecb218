"""Which checks run, from what the project and its environment configure: the project's own files always;
Git always; GitHub, MLflow, Prometheus and the cluster APIs when they are given (a flag or the variable their
own clients read), otherwise a skipped row that says how to turn the check on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from doctor import cluster, git, github, images, names, secrets, services
from doctor.names import normalize_repository
from doctor.project import Project
from doctor.report import Finding, Report, missing, skipped


@dataclass
class Options:
    root: Path
    remote: str = "origin"
    check_github: bool = (
        False  # check the GitHub adapter (also on when a token is set and the repository is on GitHub)
    )
    github_token: str | None = None
    github_api: str = github.API
    mlflow_uri: str | None = None
    prometheus_url: str | None = None
    environments: list[str] = field(default_factory=list)  # empty: every environment Argo CD deploys
    argo_server: str | None = None
    argo_token: str | None = None
    argocd_server: str | None = None
    argocd_token: str | None = None
    kube_api: str | None = None
    kube_token: str | None = None
    http: httpx.Client | None = None  # one client for the remote APIs (tests give one with a recorded API)


Step = tuple[str, Callable[[], Iterator[Finding]]]


def _environments(project: Project, chosen: list[str]) -> list[str]:
    if chosen:
        return chosen
    deployed = []
    for app in project.documents:
        if app.kind == "Application":
            path = str(((app.body.get("spec") or {}).get("source") or {}).get("path", ""))
            if path.startswith("gitops/environments/"):
                deployed.append(path.rstrip("/").rsplit("/", 1)[-1])
    return sorted(set(deployed)) or project.environments()


def _namespace(project: Project, env: str) -> str | None:
    doc = project.serving_document(env)
    return doc.namespace if doc is not None else None


def steps(project: Project, opts: Options) -> Iterator[Step]:
    """The checks to run, in the table's order, each named by what it checks (for the progress display)."""
    yield "names", lambda: iter(names.check(project))
    yield "secrets", lambda: secrets.check(project)
    yield "images", lambda: images.check(project)
    yield "git", lambda: git.check(project, opts.remote)
    repo_url = str(project.conventions.get("REPO_URL", ""))
    slug = normalize_repository(repo_url)
    branch = (git.tracked_branch(project) or ("main", ""))[0]
    on_github = slug.startswith("github.com/")
    if opts.check_github or (on_github and opts.github_token):
        if not on_github:
            yield (
                "github",
                lambda: iter(
                    [
                        missing(
                            "github",
                            "repository",
                            f"{repo_url} is not on github.com",
                            "use the local or another SCM",
                        )
                    ]
                ),
            )
        else:
            repo = slug.removeprefix("github.com/")
            yield "github", lambda: github.check(repo, opts.github_token, branch, opts.http, opts.github_api)
    else:
        yield (
            "github",
            lambda: iter(
                [skipped("github", "GitHub adapter", "not checked", "pass --github with GITHUB_TOKEN set")]
            ),
        )
    model = str((project.params.get("registry") or {}).get("model_name", ""))
    if opts.mlflow_uri:
        uri = opts.mlflow_uri
        yield "mlflow", lambda: services.mlflow(uri, model, opts.http)
    else:
        yield (
            "mlflow",
            lambda: iter(
                [skipped("mlflow", "registry", "not checked", "pass --mlflow-uri or set MLFLOW_TRACKING_URI")]
            ),
        )
    envs = _environments(project, opts.environments)
    env_namespaces = [ns for env in envs if (ns := _namespace(project, env))]
    if opts.prometheus_url:
        url = opts.prometheus_url
        yield "prometheus", lambda: services.prometheus(url, model, env_namespaces, opts.http)
    else:
        yield (
            "prometheus",
            lambda: iter(
                [
                    skipped(
                        "prometheus", "series", "not checked", "pass --prometheus-url or set PROMETHEUS_URL"
                    )
                ]
            ),
        )
    pipelines_ns = str(project.conventions.get("NAMESPACE", "sluice-pipelines"))
    if opts.argo_server:
        argo_url = opts.argo_server
        yield "argo", lambda: cluster.argo_server(project, argo_url, opts.argo_token, pipelines_ns, opts.http)
    if opts.argocd_server:
        argocd_url = opts.argocd_server
        yield "argocd", lambda: cluster.argocd(project, argocd_url, opts.argocd_token, opts.http)
    if opts.kube_api:
        kube_url = opts.kube_api
        wanted = sorted({d.name for d in project.documents if d.kind == "Namespace"} | set(env_namespaces))
        yield "kubernetes", lambda: cluster.namespaces(wanted, kube_url, opts.kube_token, opts.http)
    if not (opts.argo_server or opts.argocd_server or opts.kube_api):
        yield (
            "cluster",
            lambda: iter(
                [
                    skipped(
                        "cluster",
                        "Argo Server, Argo CD, namespaces",
                        "not checked",
                        "pass --argo-server, --argocd-server and --kube-api (tokens: ARGO_TOKEN, ARGOCD_AUTH_TOKEN, "
                        "KUBE_TOKEN)",
                    )
                ]
            ),
        )


def diagnose(opts: Options, progress: Callable[[str], None] | None = None) -> Report:
    project = Project(opts.root)
    report = Report()
    for name, step in steps(project, opts):
        if progress is not None:
            progress(name)
        report.extend(step())
    return report
