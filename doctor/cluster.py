"""The cluster, checked only when its APIs are given: the Argo Server holds the project's WorkflowTemplates,
the Argo CD Applications exist, are synced and healthy, and the namespaces exist. Each over its REST API
(Argo Server `/api/v1`, Argo CD `/api/v1`, Kubernetes `/api/v1`), with a bearer token from the environment."""

from __future__ import annotations

from collections.abc import Iterator

import httpx

from doctor.project import Project
from doctor.report import Finding, missing, ok, warn

TIMEOUT = 10.0


def _get(http: httpx.Client, url: str, token: str | None) -> httpx.Response:
    headers = (
        {"Authorization": token if token and token.startswith("Bearer ") else f"Bearer {token}"}
        if token
        else {}
    )
    return http.get(url, headers=headers)


def argo_server(
    project: Project, url: str, token: str | None, namespace: str, client: httpx.Client | None = None
) -> Iterator[Finding]:
    area = "argo"
    http = client or httpx.Client(timeout=TIMEOUT)
    wanted = sorted(d.name for d in project.under("pipelines/rendered/") if d.kind == "WorkflowTemplate")
    endpoint = f"{url.rstrip('/')}/api/v1/workflow-templates/{namespace}"
    try:
        r = _get(http, endpoint, token)
    except httpx.HTTPError as exc:
        yield missing(
            area, "Argo Server", f"{endpoint}: {exc}", "port-forward argo-server, or check the URL", endpoint
        )
        return
    if r.status_code in (401, 403):
        yield missing(
            area, "Argo Server", f"HTTP {r.status_code}", "set ARGO_TOKEN (argo auth token)", endpoint
        )
        return
    if r.status_code != 200:
        yield missing(
            area, "Argo Server", f"HTTP {r.status_code}: {r.text[:200]}", "check the server", endpoint
        )
        return
    yield ok(area, "Argo Server", f"reachable; namespace {namespace}", endpoint)
    present = {str((i.get("metadata") or {}).get("name")) for i in r.json().get("items") or []}
    for name in wanted:
        if name in present:
            yield ok(area, f"template {name}", "installed", endpoint)
        else:
            yield missing(
                area,
                f"template {name}",
                f"not in namespace {namespace}",
                "sync the sluice-pipelines Argo CD Application (or kubectl apply -f pipelines/rendered/)",
                endpoint,
            )


def argocd(
    project: Project, url: str, token: str | None, client: httpx.Client | None = None
) -> Iterator[Finding]:
    area = "argocd"
    http = client or httpx.Client(timeout=TIMEOUT)
    apps = sorted(d.name for d in project.documents if d.kind == "Application")
    for name in apps:
        endpoint = f"{url.rstrip('/')}/api/v1/applications/{name}"
        try:
            r = _get(http, endpoint, token)
        except httpx.HTTPError as exc:
            yield missing(
                area, f"application {name}", f"{endpoint}: {exc}", "check the Argo CD URL", endpoint
            )
            return
        if r.status_code in (401, 403):
            yield missing(area, "Argo CD", f"HTTP {r.status_code}", "set ARGOCD_AUTH_TOKEN", endpoint)
            return
        if r.status_code == 404:
            yield missing(
                area,
                f"application {name}",
                "not found",
                "kubectl apply -f gitops/argocd/ (docs/cluster.md, step 2)",
                endpoint,
            )
            continue
        if r.status_code != 200:
            yield missing(area, f"application {name}", f"HTTP {r.status_code}", "check Argo CD", endpoint)
            continue
        status = r.json().get("status") or {}
        sync = (status.get("sync") or {}).get("status", "Unknown")
        health = (status.get("health") or {}).get("status", "Unknown")
        detail = f"sync {sync}, health {health}"
        if health in ("Degraded", "Missing"):
            yield missing(area, f"application {name}", detail, f"argocd app get {name} shows why", endpoint)
        elif sync != "Synced" or health != "Healthy":
            yield warn(area, f"application {name}", detail, f"argocd app sync {name}", endpoint)
        else:
            yield ok(area, f"application {name}", detail, endpoint)


def namespaces(
    names: list[str], url: str, token: str | None, client: httpx.Client | None = None
) -> Iterator[Finding]:
    area = "kubernetes"
    http = client or httpx.Client(timeout=TIMEOUT)
    for name in names:
        endpoint = f"{url.rstrip('/')}/api/v1/namespaces/{name}"
        try:
            r = _get(http, endpoint, token)
        except httpx.HTTPError as exc:
            yield missing(
                area, f"namespace {name}", f"{endpoint}: {exc}", "check the API server URL", endpoint
            )
            return
        if r.status_code == 404:
            yield missing(
                area,
                f"namespace {name}",
                "does not exist",
                "kubectl apply -f gitops/cluster/namespaces.yaml (Argo CD's sluice-cluster Application)",
                endpoint,
            )
        elif r.status_code != 200:
            yield missing(
                area,
                f"namespace {name}",
                f"HTTP {r.status_code}",
                "set KUBE_TOKEN with read access",
                endpoint,
            )
        else:
            phase = (r.json().get("status") or {}).get("phase", "")
            if phase == "Active":
                yield ok(area, f"namespace {name}", "Active", endpoint)
            else:
                yield missing(
                    area, f"namespace {name}", f"phase {phase or 'unknown'}", "wait, or recreate it", endpoint
                )
