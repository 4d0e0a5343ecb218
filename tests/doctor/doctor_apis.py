"""Recorded APIs for what cannot run here: GitHub (the rollout tests' repository double, extended with the
routes the doctor reads), and the Argo Server, Argo CD and Kubernetes API answering in the shapes of shapes/."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rollout"))

from github_double import REPO, TOKEN, GitHubDouble

SHAPES = Path(__file__).resolve().parent / "shapes"


def shape(name: str) -> Any:
    return copy.deepcopy(json.loads((SHAPES / f"{name}.json").read_text()))


class RepositoryDouble(GitHubDouble):
    """The repository double, plus `GET /repos/{r}`, `GET /branches/{b}` and the refusals a token without
    write access gets. `can_write` is what the token's permissions allow; `push` what its user's role allows."""

    def __init__(
        self, default_branch: str = "main", can_write: bool = True, push: bool = True, protected: bool = False
    ):
        super().__init__({"README.md": "hello\n"})
        self.default_branch = default_branch
        self.can_write = can_write
        self.push = push
        self.protected = protected
        self.revoked = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.revoked:
            return httpx.Response(401, json=shape("bad_credentials_401"))
        path = request.url.path
        m = request.method
        root = f"/repos/{REPO}"
        if path == root and m == "GET":
            self.requests.append((m, "", None))
            assert request.headers["authorization"] == f"Bearer {TOKEN}"
            repo = shape("repo")
            owner, name = REPO.split("/")
            repo.update(name=name, full_name=REPO, default_branch=self.default_branch)
            repo["owner"]["login"] = owner
            repo["permissions"].update(push=self.push, pull=True)
            return httpx.Response(200, json=repo)
        if path.startswith(f"{root}/branches/") and m == "GET":
            branch = path.removeprefix(f"{root}/branches/")
            self.requests.append((m, f"/branches/{branch}", None))
            if branch not in self.refs:
                return httpx.Response(404, json={"message": "Branch not found", "status": "404"})
            body = shape("branch")
            body.update(name=branch, protected=self.protected)
            body["commit"]["sha"] = self.refs[branch]
            return httpx.Response(200, json=body)
        if m == "POST" and path in (f"{root}/pulls", f"{root}/git/refs"):
            body = json.loads(request.content)
            if not self.can_write:
                self.requests.append((m, path.removeprefix(root), body))
                return httpx.Response(403, json=shape("forbidden_403_pat"))
            if path.endswith("/pulls") and body["head"] not in self.refs:
                self.requests.append((m, "/pulls", body))
                return httpx.Response(422, json=shape("pull_422_invalid_head"))
            if path.endswith("/git/refs") and body["sha"] not in self.commits:
                self.requests.append((m, "/git/refs", body))
                return httpx.Response(422, json=shape("create_ref_422_no_object"))
        return super().handle(request)


class ClusterDouble:
    """The Argo Server, Argo CD and the Kubernetes API on their hosts, holding what the test installed."""

    ARGO, ARGOCD, KUBE = "https://argo.example", "https://argocd.example", "https://kube.example"

    def __init__(self, token: str = "c1uster"):
        self.token = token
        self.templates: dict[str, list[str]] = {}  # namespace -> WorkflowTemplate names
        self.applications: dict[str, tuple[str, str]] = {}  # name -> (sync, health)
        self.namespaces: dict[str, str] = {}  # name -> phase

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle))

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return httpx.Response(401, json={"message": "Unauthorized", "code": 16})
        url, path = str(request.url), request.url.path
        if url.startswith(self.ARGO) and path.startswith("/api/v1/workflow-templates/"):
            namespace = path.rsplit("/", 1)[1]
            names = self.templates.get(namespace, [])
            if not names:
                return httpx.Response(200, json=shape("argo_workflow_templates_empty"))
            body = shape("argo_workflow_templates")
            item = body["items"][0]
            body["items"] = []
            for name in names:
                one = copy.deepcopy(item)
                one["metadata"].update(name=name, namespace=namespace)
                body["items"].append(one)
            return httpx.Response(200, json=body)
        if url.startswith(self.ARGOCD) and path.startswith("/api/v1/applications/"):
            name = path.rsplit("/", 1)[1]
            if name not in self.applications:
                body = shape("argocd_not_found_404")
                body["message"] = body["error"] = f'applications.argoproj.io "{name}" not found'
                return httpx.Response(404, json=body)
            app = shape("argocd_application")
            app["metadata"]["name"] = name
            sync, health = self.applications[name]
            app["status"]["sync"]["status"] = sync
            app["status"]["health"]["status"] = health
            return httpx.Response(200, json=app)
        if url.startswith(self.KUBE) and path.startswith("/api/v1/namespaces/"):
            name = path.rsplit("/", 1)[1]
            if name not in self.namespaces:
                body = shape("k8s_status_404")
                body["message"] = f'namespaces "{name}" not found'
                body["details"]["name"] = name
                return httpx.Response(404, json=body)
            ns = shape("k8s_namespace")
            ns["metadata"]["name"] = name
            ns["status"]["phase"] = self.namespaces[name]
            return httpx.Response(200, json=ns)
        raise AssertionError(f"unexpected request {request.method} {url}")


__all__ = ["REPO", "TOKEN", "ClusterDouble", "RepositoryDouble", "shape"]
