"""The reconcilers as shipped: exactly one per environment by default (the in-cluster Deployment; the
scheduled workflow only when opted in), a long-running loop that reads policy and manifest from Git on every
tick (no checkout, so no token in a clone URL or .git/config), the MLflow tracking URI configured, and every
reference it makes (ConfigMap keys, CLI flags, environment variables) resolving."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
RECONCILER = REPO / "gitops" / "cluster" / "reconciler.yaml"
CONFIG = REPO / "gitops" / "cluster" / "config.yaml"
PROMOTE = REPO / ".github" / "workflows" / "promote.yml"
ENVIRONMENTS = ["staging", "production"]
# a credential inside a URL: https://user:$TOKEN@host, https://x-access-token:${{ ... }}@host
CREDENTIAL_IN_URL = re.compile(r"://[^/\s\"']*:[^/\s\"']*@|x-access-token")


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def deployments() -> list[dict[str, Any]]:
    return [d for d in docs(RECONCILER) if d["kind"] == "Deployment"]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(c)


def test_one_long_running_reconciler_per_environment_runs_by_default() -> None:
    envs = sorted(d["metadata"]["labels"]["sluice.dev/environment"] for d in deployments())
    assert envs == sorted(ENVIRONMENTS)
    for d in deployments():
        assert d["spec"]["replicas"] == 1 and d["spec"]["strategy"]["type"] == "Recreate"
        args = container(d)["args"]
        assert "--watch" in args and "--once" not in args  # a loop that idles, never exits for lack of work
        assert "--until-done" not in args and "--max-ticks" not in args


def test_the_scheduled_reconciler_is_opt_in() -> None:
    workflow = yaml.safe_load(PROMOTE.read_text())
    job = workflow["jobs"]["reconcile"]
    # both the schedule and a manual run are skipped unless the repository opts in: never two reconcilers
    assert job["if"] == "vars.SLUICE_RECONCILER == 'github-actions'"
    assert "SLUICE_RECONCILER" in PROMOTE.read_text().split("name: promote")[0]  # documented in its header


def test_policy_and_manifest_come_from_git_on_every_tick_not_from_a_checkout() -> None:
    for d in deployments():
        pod = d["spec"]["template"]["spec"]
        assert "initContainers" not in pod  # no clone of the policies that would go stale
        args = container(d)["args"]
        assert "--policies" not in args and "--repo" not in args
        assert "--github" in args  # manifest and policy through GitHub's API, at each tick's commit
        mounts = {m["name"] for m in container(d)["volumeMounts"]}
        assert mounts == {"tmp"}  # no shared volume holding a repository


def test_no_token_in_a_url_or_a_git_config() -> None:
    for path in (RECONCILER, PROMOTE):
        text = path.read_text()
        assert not CREDENTIAL_IN_URL.search(text), f"{path.name}: a credential in a URL"
        assert "git clone" not in text and "git config" not in text
    for d in deployments():
        env = {e["name"]: e for e in container(d)["env"]}
        assert env["GITHUB_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "sluice-github", "key": "token"}


def test_the_mlflow_tracking_uri_is_configured() -> None:
    config = {d["metadata"]["namespace"]: d["data"] for d in docs(CONFIG) if d["kind"] == "ConfigMap"}
    for d in deployments():
        env = {e["name"]: e for e in container(d)["env"]}
        ref = env["MLFLOW_TRACKING_URI"]["valueFrom"]["configMapKeyRef"]
        assert ref["key"] in config[d["metadata"]["namespace"]]
        assert config[d["metadata"]["namespace"]][ref["key"]].startswith("http")
    step = next(
        s
        for s in yaml.safe_load(PROMOTE.read_text())["jobs"]["reconcile"]["steps"]
        if "reconcile" in s.get("name", "")
    )
    assert step["env"]["MLFLOW_TRACKING_URI"] == "${{ vars.MLFLOW_TRACKING_URI }}"


def test_every_reference_of_the_deployment_resolves() -> None:
    config = {d["metadata"]["namespace"]: d["data"] for d in docs(CONFIG) if d["kind"] == "ConfigMap"}
    for d in deployments():
        namespace = d["metadata"]["namespace"]
        env = container(d)["env"]
        names = {e["name"] for e in env}
        for e in env:
            ref = e.get("valueFrom", {}).get("configMapKeyRef")
            if ref and not ref.get("optional"):
                assert ref["name"] == "sluice-config" and ref["key"] in config[namespace], (e, namespace)
        for arg in container(d)["args"]:
            for var in re.findall(r"\$\((\w+)\)", arg):
                assert var in names, f"$({var}) is not set"
        assert "SLUICE_GITHUB_AUTHOR" in names  # an App token's identity, from the ConfigMap when it is set
