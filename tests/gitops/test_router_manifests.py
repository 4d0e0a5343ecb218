"""sluice-router in the cluster: what each environment's kustomization renders, and that it connects.

The environment directories are rendered with kustomize (`kubectl kustomize`, what Argo CD runs) and every
object checked: core kinds with kubernetes-validate, the PodMonitor and Kustomization against their schema
subsets, the router's flags against `sluice router --help`, and the generated ConfigMap against the file the
router must route by.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from testkit.services import need

from deployment import seldon
from pipelines.schemas import validate_document

REPO = Path(__file__).resolve().parents[2]
ENVS = ["staging", "production"]
NAMESPACES = {
    "staging": "sluice-staging",
    "production": "sluice-production",
}  # renamed in a generated project


@pytest.fixture(autouse=True)
def _kustomize() -> None:
    need("kubectl", "for kustomize")


def render(env: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(REPO / "gitops" / "environments" / env)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


@pytest.mark.parametrize("env", ENVS)
def test_every_rendered_object_is_valid_and_in_the_environments_namespace(env: str) -> None:
    objects = render(env)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "PodMonitor"):
        assert (kind, "sluice-router") in kinds
    assert ("ConfigMap", "sluice-router-manifest") in kinds
    for o in objects:
        assert o["metadata"]["namespace"] == NAMESPACES[env], o["metadata"]
        assert validate_document(o, f"{env}: {o['kind']}/{o['metadata']['name']}") == []


@pytest.mark.parametrize("env", ENVS)
def test_the_router_routes_by_the_same_manifest_file(env: str, tmp_path: Path) -> None:
    objects = render(env)
    manifest = REPO / "gitops" / "environments" / env / "seldondeployment.yaml"
    config = find(objects, "ConfigMap", "sluice-router-manifest")
    assert config["data"] == {"seldondeployment.yaml": manifest.read_text()}
    # What the pod sees at its mount path reads as the same deployment, in the same namespace.
    mounted = tmp_path / "manifest"
    mounted.mkdir()
    for name, text in config["data"].items():
        (mounted / name).write_text(text)
    sd = seldon.read(mounted)
    seldon.check(sd, mounted)
    assert sd.namespace == NAMESPACES[env] and sd == seldon.read(manifest)

    deployment = find(objects, "Deployment", "sluice-router")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = container["volumeMounts"]
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "sluice-router-manifest"
    assert "subPath" not in mount  # a subPath mount is never updated by kubelet
    assert container["args"][:2] == ["router", mount["mountPath"]]


def test_the_router_flags_exist_and_admin_stays_off_the_service() -> None:
    from typer.testing import CliRunner

    from sluice.cli import app

    objects = render("staging")
    deployment = find(objects, "Deployment", "sluice-router")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    help_text = CliRunner().invoke(app, ["router", "--help"], env={"COLUMNS": "200"}).output
    for flag in (a for a in args if a.startswith("--")):
        assert flag in help_text, f"sluice router has no {flag}"
    option = {args[i]: args[i + 1] for i in range(2, len(args) - 1, 2)}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(option["--port"]) == ports["http"] and int(option["--admin-port"]) == ports["metrics"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    service = find(objects, "Service", "sluice-router")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]  # metrics only via the PodMonitor
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (
        service["spec"]["selector"],
        find(objects, "PodDisruptionBudget", "sluice-router")["spec"]["selector"]["matchLabels"],
        find(objects, "PodMonitor", "sluice-router")["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    target = find(objects, "HorizontalPodAutoscaler", "sluice-router")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "sluice-router")
    monitor = find(objects, "PodMonitor", "sluice-router")["spec"]["podMetricsEndpoints"][0]
    assert monitor["port"] == "metrics" and monitor["path"] == "/metrics" and monitor["honorLabels"] is True


def test_the_prediction_log_comes_from_an_optional_secret_the_cli_reads() -> None:
    """The stream URL (it may hold a password) comes from a Secret; without it the router runs with no log."""
    from sluice.log_options import PredictionLogDir

    (container,) = find(render("staging"), "Deployment", "sluice-router")["spec"]["template"]["spec"][
        "containers"
    ]
    (var,) = [e for e in container.get("env", []) if e["name"] == "SLUICE_PREDICTION_LOG"]
    assert var["valueFrom"]["secretKeyRef"] == {
        "name": "sluice-prediction-log",
        "key": "url",
        "optional": True,
    }
    (option,) = PredictionLogDir.__metadata__
    assert option.envvar == var["name"]
    assert not any(a.startswith("--log-") for a in container["args"])  # they would need the log to be on


@pytest.mark.parametrize("env", ENVS)
def test_requests_are_counted_once(env: str) -> None:
    """The router counts requests and feedback; the executors' copies are dropped at scrape time."""
    import re

    objects = render(env)
    seldon_monitor = find(objects, "PodMonitor", "sluice-classifier")["spec"]["podMetricsEndpoints"][0]
    (drop,) = seldon_monitor["metricRelabelings"]
    assert drop["action"] == "drop" and drop["sourceLabels"] == ["__name__"]
    pattern = re.compile(f"^(?:{drop['regex']})$")  # Prometheus anchors relabel regexes
    for series in (
        "seldon_api_executor_server_requests_seconds_count",
        "seldon_api_executor_client_requests_seconds_bucket",
        "seldon_api_model_feedback_total",
        "seldon_api_model_feedback_reward_total",
    ):
        assert pattern.match(series)
    assert not pattern.match("sluice_model_rows_total")  # the component's own metrics stay


def test_the_kustomization_schema_rejects_what_kustomize_would_not_do() -> None:
    path = REPO / "gitops" / "environments" / "staging" / "kustomization.yaml"
    doc = yaml.safe_load(path.read_text())
    assert validate_document(doc) == []
    patched = copy.deepcopy(doc)
    patched["patches"] = [{"path": "weights.yaml"}]  # would make Git and the cluster differ
    assert [p.field for p in validate_document(patched)] == [""]
    typo = copy.deepcopy(doc)
    typo["configMapGenerator"][0]["file"] = typo["configMapGenerator"][0].pop("files")
    assert [p.field for p in validate_document(typo)] == ["configMapGenerator[0]"]
    bad_namespace = copy.deepcopy(doc)
    bad_namespace["namespace"] = "Sluice_Staging"
    assert [p.field for p in validate_document(bad_namespace)] == ["namespace"]
