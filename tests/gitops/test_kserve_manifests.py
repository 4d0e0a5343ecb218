"""The KServe path in Git: the InferenceService schema subset (KServe 0.20's CRD) with its PodSpecs checked as
Kubernetes would, the cluster example rendered by kustomize (what Argo CD applies), the router reading the
same file, and `sluice gitops check` refusing what KServe alone cannot deliver."""

from __future__ import annotations

import asyncio
import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from testkit.services import need
from typer.testing import CliRunner

from deployment import kinds, kserve
from pipelines.schemas import validate_document
from rollout.guardrails import check_manifest
from rollout.state import Slot
from rollout.targets.kserve import InferenceServiceV1Beta1, initial_manifest
from serving.router.capabilities import KSERVE, ROUTER_CLUSTER, Feature, traffic_path
from serving.router.cluster import ClusterRouter, ClusterSettings
from sluice.cli import app

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "gitops" / "examples" / "kserve-staging"
T = InferenceServiceV1Beta1()
DA, DB = "sha256:" + "a" * 64, "sha256:" + "b" * 64
B = "m-bbbbbbbbbbbb"

needs_kubectl = pytest.mark.usefixtures("kustomize")


@pytest.fixture
def kustomize() -> None:
    need("kubectl", "for kustomize")


def render(directory: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def every_step() -> list[str]:
    """The manifests one rollout writes through the target: each must be a valid InferenceService."""
    one = initial_manifest("staging", "s3://models/a", DA, namespace="sluice-staging")
    two = T.add_candidate(one, B, "s3://models/b", DB)
    a = "m-aaaaaaaaaaaa"
    return [
        one,
        two,
        T.apply(two, (Slot(a, 100), Slot(B, 100, shadow=True)), None),
        T.apply(two, (Slot(a, 90), Slot(B, 10)), None),
        T.apply(two, (Slot(a, 0), Slot(B, 100)), None),
        T.apply(two, (Slot(B, 100),), None),
    ]


@pytest.mark.parametrize("step", range(6))
def test_every_manifest_a_rollout_writes_passes_the_crd_schema_and_kubernetes(step: int) -> None:
    doc = yaml.safe_load(every_step()[step])
    assert validate_document(doc) == []
    assert check_manifest(doc) == []


BROKEN = [
    ("spec.canary.0.trafficPercnt", 5, "spec.canary[0]"),
    ("spec.canary.0.trafficPercent", 101, "spec.canary[0].trafficPercent"),
    ("spec.canary.0.trafficPercent", "10", "spec.canary[0].trafficPercent"),
    ("spec.canary.0.predictor.minReplica", 1, "spec.canary[0].predictor"),
    ("spec.canary.0.predictor.name", "M-B", "spec.canary[0].predictor.name"),
    ("spec.canarys", [], "spec"),
    ("spec.predictor.canaryTraficPercent", 10, "spec.predictor"),
    ("spec.predictor.scaleMetric", "gpu", "spec.predictor.scaleMetric"),
    ("spec.predictor.containers.0.env.0.valu", "s3://x", "spec.predictor.containers[0].env[0]"),
    ("spec.predictor.containers.0.ports.0.containerPort", "http", "spec.predictor.containers[0].ports[0].containerPort"),
    ("spec.predictor.containers.0.readinessProbe.httpGet.prot", 1, "spec.predictor.containers[0].readinessProbe.httpGet"),
    ("spec.predictor.securityContext", {"runAsUser": "root"}, "spec.predictor.securityContext.runAsUser"),
    ("spec.predictor.serviceAccountName", 7, "spec.predictor.serviceAccountName"),
    ("metadata.name", "1-classifier", "metadata.name"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "value", "field"), BROKEN, ids=[p for p, _, _ in BROKEN])
def test_the_schema_refuses_what_kserve_or_kubernetes_would(path: str, value: Any, field: str) -> None:
    doc = yaml.safe_load(every_step()[1])
    node: Any = doc
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    problems = validate_document(doc, "inferenceservice.yaml")
    assert field in [p.field for p in problems], problems


@needs_kubectl
def test_the_cluster_example_renders_valid_objects_in_its_namespace() -> None:
    objects = render(EXAMPLE)
    kinds_found = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert ("InferenceService", "sluice-classifier") in kinds_found
    assert ("Deployment", "sluice-router") in kinds_found and (
        "ConfigMap",
        "sluice-router-manifest",
    ) in kinds_found
    for o in objects:
        assert o["metadata"]["namespace"] == "sluice-staging"
        assert validate_document(o, f"{o['kind']}/{o['metadata']['name']}") == []
    project = yaml.safe_load((REPO / "gitops" / "argocd" / "project.yaml").read_text())
    allowed = {(k["group"], k["kind"]) for k in project["spec"]["namespaceResourceWhitelist"]}
    for o in objects:
        assert (o["apiVersion"].rpartition("/")[0], o["kind"]) in allowed, o["kind"]


@needs_kubectl
def test_the_router_routes_by_the_inferenceservice_at_kserves_services(tmp_path: Path) -> None:
    objects = render(EXAMPLE)
    (config,) = [o for o in objects if o["kind"] == "ConfigMap"]
    manifest = EXAMPLE / "inferenceservice.yaml"
    assert config["data"] == {"inferenceservice.yaml": manifest.read_text()}
    mounted = tmp_path / "manifest"
    mounted.mkdir()
    for name, text in config["data"].items():
        (mounted / name).write_text(text)
    view = kinds.read(mounted)
    kinds.check(view, mounted)
    assert isinstance(view, kserve.InferenceService) and view == kinds.read(manifest)
    router = ClusterRouter(ClusterSettings(mounted))
    stable = view.stable
    assert router.authority(view, stable) == (
        "sluice-classifier-m-e83667c21250-predictor.sluice-staging.svc.cluster.local:80"
    )

    async def apply() -> dict[str, str]:
        await router.watch.check()
        return {b.name: path for b, path in router.probes.items()}

    probes = asyncio.run(apply())
    assert probes == {stable.name: f"/v2/models/sluice-classifier/versions/{stable.model_digest}/ready"}


@pytest.fixture()
def kserve_repo(tmp_path: Path) -> Path:
    """A copy of gitops/ and policies/ whose staging runs on KServe (the example copied over it)."""
    shutil.copytree(REPO / "gitops", tmp_path / "gitops", ignore=shutil.ignore_patterns("schemas"))
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    staging = tmp_path / "gitops" / "environments" / "staging"
    for name in ("seldondeployment.yaml", "podmonitor.yaml"):
        (staging / name).unlink()
    for f in EXAMPLE.iterdir():
        shutil.copy(f, staging / f.name)
    return tmp_path


def check(*paths: Path) -> Any:
    return CliRunner().invoke(app, ["gitops", "check", *map(str, paths)], env={"COLUMNS": "300"})


def test_staging_on_kserve_with_the_router_has_every_feature(kserve_repo: Path) -> None:
    staging = kserve_repo / "gitops" / "environments" / "staging"
    assert traffic_path(staging, kserve_repo) is ROUTER_CLUSTER
    result = check(kserve_repo / "gitops", kserve_repo / "policies")
    assert result.exit_code == 0, result.output  # staging's shadow policy, through the router


def test_kserve_alone_gives_weights_only_and_gitops_check_says_so(kserve_repo: Path) -> None:
    staging = kserve_repo / "gitops" / "environments" / "staging"
    kustomization = yaml.safe_load((staging / "kustomization.yaml").read_text())
    kustomization["resources"] = ["inferenceservice.yaml"]
    del kustomization["configMapGenerator"]
    (staging / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    assert traffic_path(staging, kserve_repo) is KSERVE and KSERVE.features == {Feature.WEIGHTS}
    result = check(kserve_repo / "policies" / "staging.yaml")
    assert result.exit_code == 1
    assert "strategy: needs mirror" in result.output and "KServe's HTTPRoute" in result.output
    assert "gates[0].metric: needs request metrics" in result.output
    # A canary whose gates KServe's own metrics can feed (PromQL) is what KServe alone can run.
    policy = yaml.safe_load((kserve_repo / "policies" / "staging.yaml").read_text())
    policy.update(
        strategy="canary",
        gates=[
            {
                "name": "errors",
                "metric": "promql",
                "query": 'sum(rate(sluice_model_requests_total{namespace="{namespace}",code=~"5.."}[1m]))',
                "sample_query": 'sum(rate(sluice_model_requests_total{namespace="{namespace}"}[1m]))',
                "max": 1,
            }
        ],
    )
    (kserve_repo / "policies" / "staging.yaml").write_text(yaml.safe_dump(policy))
    result = check(kserve_repo / "policies" / "staging.yaml")
    assert result.exit_code == 0, result.output


def test_gitops_check_runs_the_guardrails_on_inferenceservices(tmp_path: Path) -> None:
    doc = yaml.safe_load(every_step()[3])
    doc["spec"]["canary"][0]["predictor"]["containers"][0]["image"] = "ghcr.io/x/serving:latest"
    bad = copy.deepcopy(doc)
    (tmp_path / "inferenceservice.yaml").write_text(yaml.safe_dump(bad))
    result = check(tmp_path)
    assert result.exit_code == 1
    assert "spec.canary[0].predictor.containers[0].image" in result.output and "pinning" in result.output


def test_markup_in_a_manifest_is_printed_as_text_not_interpreted(tmp_path: Path) -> None:
    """A value that looks like terminal markup (`[/]`, `[link=...]`) is shown as written, never crashes the check."""
    doc = yaml.safe_load(every_step()[1])
    doc["spec"]["predictor"]["containers"][0]["image"] = "ghcr.io/x/serving:[/]"
    doc["spec"]["canary"][0]["predictor"]["containers"][0]["image"] = "[link=http://example.com]click[/link]"
    (tmp_path / "inferenceservice.yaml").write_text(yaml.safe_dump(doc))
    result = check(tmp_path)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # refused, not crashed
    assert "got 'ghcr.io/x/serving:[/]'" in result.output
    assert "got '[link=http://example.com]click[/link]'" in result.output
    assert "[pinning]" in result.output
