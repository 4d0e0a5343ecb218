"""Every manifest under gitops/ is valid, follows the SeldonDeployment contract, and the Argo CD, RBAC and
reconciler objects connect: each schema subset also rejects wrong documents of its kind."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from testkit.services import need

from pipelines.schemas import validate_document, validate_file
from rollout.guardrails import check_manifest

REPO = Path(__file__).resolve().parents[2]
GITOPS = REPO / "gitops"
MANIFESTS = sorted(p for p in GITOPS.rglob("*.yaml") if "schemas" not in p.relative_to(GITOPS).parts)
CLUSTER_ENVS = ["staging", "production"]
# Each environment's namespace, which also names its Argo CD Application (a generated project renames both)
NAMESPACES = {"staging": "sluice-staging", "production": "sluice-production"}


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_docs() -> list[dict[str, Any]]:
    return [d for p in MANIFESTS for d in docs(p)]


def applied(source: Path) -> list[dict[str, Any]]:
    """What Argo CD applies from a directory: kustomize's output when it holds a kustomization.yaml."""
    if not (source / "kustomization.yaml").exists():
        return [d for path in sorted(source.glob("*.yaml")) for d in docs(path)]
    import subprocess

    kubectl = need("kubectl", "for kustomize")
    out = subprocess.run(
        [kubectl, "kustomize", str(source)], capture_output=True, text=True, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def one(kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    return copy.deepcopy(
        next(
            d
            for d in all_docs()
            if d["kind"] == kind
            and d["metadata"]["name"] == name
            and namespace in (None, d["metadata"].get("namespace"))
        )
    )


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(GITOPS)))
def test_every_manifest_is_valid(path: Path) -> None:
    assert validate_file(path) == []


@pytest.mark.parametrize("env", CLUSTER_ENVS)
def test_cluster_environments_follow_the_seldon_contract(env: str) -> None:
    (sdep,) = docs(GITOPS / "environments" / env / "seldondeployment.yaml")
    local = docs(GITOPS / "environments" / "local" / "seldondeployment.yaml")[0]
    assert sdep["metadata"]["name"] == local["metadata"]["name"]
    assert sdep["metadata"]["namespace"] == NAMESPACES[env]
    assert check_manifest(sdep) == []
    for predictor in sdep["spec"]["predictors"]:
        params = {p["name"]: p for p in predictor["graph"]["parameters"]}
        assert params["model_uri"]["type"] == params["model_digest"]["type"] == "STRING"
        digest = params["model_digest"]["value"]
        assert predictor["name"] == "m-" + digest.removeprefix("sha256:")[:12]
        (component,) = predictor["componentSpecs"]
        pod = component["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert "@sha256:" in container["image"]
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
            secrets = [e for e in container.get("env", []) if "TOKEN" in e["name"]]
            assert all("secretKeyRef" in e["valueFrom"] for e in secrets)


@pytest.mark.parametrize("env", CLUSTER_ENVS)
def test_pod_monitor_selects_the_seldon_pods_of_its_namespace(env: str) -> None:
    (monitor,) = docs(GITOPS / "environments" / env / "podmonitor.yaml")
    (sdep,) = docs(GITOPS / "environments" / env / "seldondeployment.yaml")
    spec = monitor["spec"]
    assert spec["selector"]["matchLabels"]["seldon-deployment-id"] == sdep["metadata"]["name"]
    assert spec["namespaceSelector"]["matchNames"] == [sdep["metadata"]["namespace"]]
    assert spec["podMetricsEndpoints"][0] == {
        **spec["podMetricsEndpoints"][0],
        "port": "metrics",
        "path": "/prometheus",
    }


def test_argocd_applications_sync_what_is_in_git() -> None:
    project = one("AppProject", "sluice")
    apps = [d for d in all_docs() if d["kind"] == "Application"]
    assert {NAMESPACES[env] for env in CLUSTER_ENVS} <= {a["metadata"]["name"] for a in apps}
    allowed_kinds = {(k["group"], k["kind"]) for k in project["spec"]["namespaceResourceWhitelist"]}
    allowed_kinds |= {(k["group"], k["kind"]) for k in project["spec"]["clusterResourceWhitelist"]}
    destinations = {d["namespace"] for d in project["spec"]["destinations"]}
    for app in apps:
        spec = app["spec"]
        assert spec["project"] == project["metadata"]["name"]
        assert spec["source"]["repoURL"] in project["spec"]["sourceRepos"]
        assert spec["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
        source = REPO / spec["source"]["path"]
        assert source.is_dir(), spec["source"]["path"]
        for doc in applied(source):
            group = doc["apiVersion"].rpartition("/")[0]
            assert (group, doc["kind"]) in allowed_kinds, (
                f"{source}: {doc['kind']} not allowed by the AppProject"
            )
            namespace = doc["metadata"].get("namespace")
            assert namespace is None or namespace in destinations, f"{source}: namespace {namespace}"


@pytest.mark.parametrize("env", CLUSTER_ENVS)
def test_ignore_differences_never_hide_what_git_decides(env: str) -> None:
    app = one("Application", NAMESPACES[env])
    ignored = [
        e for rule in app["spec"].get("ignoreDifferences", []) for e in rule.get("jqPathExpressions", [])
    ]
    ignored += [e for rule in app["spec"].get("ignoreDifferences", []) for e in rule.get("jsonPointers", [])]
    for expression in ignored:
        for decided in ("traffic", "shadow", "parameters", "image", "replicas", "annotations"):
            assert not expression.endswith(decided), expression


def test_reconciler_has_no_kubernetes_access_and_a_referenced_token() -> None:
    reconciler_docs = docs(GITOPS / "cluster" / "reconciler.yaml")
    account = next(d for d in reconciler_docs if d["kind"] == "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    bindings = [d for d in all_docs() if d["kind"] in {"RoleBinding", "ClusterRoleBinding"}]
    bound = {s["name"] for b in bindings for s in b["subjects"]}
    assert account["metadata"]["name"] not in bound
    deployments = [d for d in reconciler_docs if d["kind"] == "Deployment"]
    assert sorted(d["metadata"]["labels"]["sluice.dev/environment"] for d in deployments) == sorted(
        CLUSTER_ENVS
    )
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert deployment["spec"]["strategy"]["type"] == "Recreate" and deployment["spec"]["replicas"] == 1
        assert pod["serviceAccountName"] == account["metadata"]["name"]
        (container,) = pod["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["GITHUB_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "sluice-github", "key": "token"}
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        environment = deployment["metadata"]["labels"]["sluice.dev/environment"]
        assert container["args"][container["args"].index("--env") + 1] == environment


def test_pipeline_service_accounts_exist_with_only_their_verbs() -> None:
    from pipelines import events, train

    accounts = {d["metadata"]["name"] for d in all_docs() if d["kind"] == "ServiceAccount"}
    assert train.build().to_dict()["spec"]["serviceAccountName"] in accounts
    assert events.sensor()["spec"]["template"]["serviceAccountName"] in accounts
    for role in (d for d in all_docs() if d["kind"] in {"Role", "ClusterRole"}):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], role["metadata"]["name"]
            assert not set(rule["verbs"]) & {"delete", "deletecollection", "escalate", "bind", "impersonate"}
    assert not [d for d in all_docs() if d["kind"] in {"ClusterRole", "ClusterRoleBinding", "Secret"}]


# each schema subset rejects wrong documents of its kind -------------------------------------------------------
def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node: Any = doc
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    for key in keys[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return doc


_DELETE = object()
SDEP = ("SeldonDeployment", "sluice-classifier", "sluice-staging")
BROKEN = [
    (SDEP, "spec.predictors.0.trafic", 100, "spec.predictors[0]"),
    (SDEP, "spec.predictors.0.traffic", "all", "spec.predictors[0].traffic"),
    (SDEP, "spec.predictors.0.graph.type", "MODLE", "spec.predictors[0].graph.type"),
    (
        SDEP,
        "spec.predictors.0.graph.parameters.1.type",
        "TEXT",
        "spec.predictors[0].graph.parameters[1].type",
    ),
    (SDEP, "spec.predictors.0.name", "M_Bad", "spec.predictors[0].name"),
    (SDEP, "spec.predictors", [], "spec.predictors"),
    (
        SDEP,
        "spec.predictors.0.componentSpecs.0.spec.containers.0.securityContext.runAsUsr",
        1,
        "spec.predictors[0].componentSpecs[0].spec.containers[0].securityContext",
    ),
    (
        ("PodMonitor", "sluice-classifier", "sluice-staging"),
        "spec.podMetricsEndpoints.0.path",
        "prometheus",
        "spec.podMetricsEndpoints[0].path",
    ),
    (
        ("PodMonitor", "sluice-classifier", "sluice-staging"),
        "spec.podMetricsEndpoints.0.interval",
        "10 seconds",
        "spec.podMetricsEndpoints[0].interval",
    ),
    (("PodMonitor", "sluice-classifier", "sluice-staging"), "spec.selector", {}, "spec.selector"),
    (
        ("Application", "sluice-staging"),
        "spec.syncPolicy.automated.selfheal",
        True,
        "spec.syncPolicy.automated",
    ),
    (("Application", "sluice-staging"), "spec.destination.server", _DELETE, "spec.destination"),
    (
        ("Application", "sluice-staging"),
        "spec.ignoreDifferences.0.jqPathExpressions",
        [],
        "spec.ignoreDifferences[0].jqPathExpressions",
    ),
    (("Application", "sluice-staging"), "spec.project", _DELETE, "spec"),
    (("AppProject", "sluice"), "spec.destinations.0.namespace", _DELETE, "spec.destinations[0]"),
    (
        ("AppProject", "sluice"),
        "spec.namespaceResourceWhitelist.0.kind",
        _DELETE,
        "spec.namespaceResourceWhitelist[0]",
    ),
    (("Deployment", "sluice-reconciler-staging"), "spec.replicas", "one", "spec.replicas"),
    (("Role", "sluice-events-submit"), "rules.0.verbs", "create", "rules[0].verbs"),
]


@pytest.mark.parametrize(
    ("target", "path", "value", "field"), BROKEN, ids=[f"{t[0]}:{p}" for t, p, _, _ in BROKEN]
)
def test_schemas_reject_wrong_documents(target: tuple[str, ...], path: str, value: Any, field: str) -> None:
    doc = one(*target)
    assert validate_document(doc) == []
    problems = validate_document(_set(doc, path, value), "f.yaml")
    assert problems, f"{target} with {path}={value!r} was accepted"
    assert field in [p.field for p in problems], problems


def test_reconciler_flags_exist_in_the_cli() -> None:
    from typer.testing import CliRunner

    from sluice.cli import app

    for deployment in (d for d in docs(GITOPS / "cluster" / "reconciler.yaml") if d["kind"] == "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["sluice"]
        args = container["args"]
        help_text = CliRunner().invoke(app, [*args[:2], "--help"], env={"COLUMNS": "200"}).output
        for flag in (a for a in args if a.startswith("--")):
            assert flag in help_text, f"sluice {' '.join(args[:2])} has no {flag}"
        assert "--github" in args and "--prometheus" in args  # GitHub pull requests, cluster Prometheus
        env = {e["name"] for e in container["env"]}
        assert {"GITHUB_REPOSITORY", "PROMETHEUS_URL"} <= env  # what $(...) in args expands


def test_service_monitor_schema_accepts_and_rejects() -> None:
    """No manifest uses a ServiceMonitor today (the PodMonitor covers Seldon's pods); its schema still works."""
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "sluice-gateway", "namespace": "sluice-staging"},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "sluice-gateway"}},
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
        },
    }
    assert validate_document(monitor) == []
    no_port = copy.deepcopy(monitor)
    del no_port["spec"]["endpoints"][0]["port"]
    assert [p.field for p in validate_document(no_port)] == ["spec.endpoints[0]"]
    bad_interval = _set(copy.deepcopy(monitor), "spec.endpoints.0.interval", "15 sec")
    assert [p.field for p in validate_document(bad_interval)] == ["spec.endpoints[0].interval"]
    no_selector = _set(copy.deepcopy(monitor), "spec.selector", _DELETE)
    assert [p.field for p in validate_document(no_selector)] == ["spec"]
