"""Which traffic path an environment has, what a policy needs, and `sluice gitops check` refusing the gap."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from rollout.policy import load_policy
from serving.router.capabilities import (
    ROUTER_CLUSTER,
    ROUTER_LOCAL,
    SELDON_ISTIO,
    Feature,
    needs,
    problems,
    traffic_path,
)
from sluice.cli import app

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    """A copy of the repository's gitops/ and policies/."""
    shutil.copytree(REPO / "gitops", tmp_path / "gitops", ignore=shutil.ignore_patterns("schemas"))
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    return tmp_path


def without_router(repo: Path, env: str) -> None:
    path = repo / "gitops" / "environments" / env / "kustomization.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["resources"] = [r for r in doc["resources"] if "router" not in r]
    del doc["configMapGenerator"]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def policy(repo: Path, env: str, **changes: Any) -> Path:
    path = repo / "policies" / f"{env}.yaml"
    doc = yaml.safe_load(path.read_text())
    doc.update(changes)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_each_environment_of_the_repository_has_the_router() -> None:
    environments = REPO / "gitops" / "environments"
    assert traffic_path(environments / "local", REPO) is ROUTER_LOCAL  # no Argo CD app: sluice up
    assert traffic_path(environments / "staging", REPO) is ROUTER_CLUSTER
    assert traffic_path(environments / "production", REPO) is ROUTER_CLUSTER


def test_a_cluster_environment_without_the_router_has_seldons_path_only(repo: Path) -> None:
    without_router(repo, "staging")
    assert traffic_path(repo / "gitops" / "environments" / "staging", repo) is SELDON_ISTIO
    assert SELDON_ISTIO.features == {Feature.WEIGHTS, Feature.MIRROR, Feature.METRICS}


def test_what_each_strategy_needs() -> None:
    def features(**policy: Any) -> set[Feature]:
        return {f for _, f, _ in needs(policy)}

    assert features(strategy="canary") == {Feature.WEIGHTS}
    assert features(strategy="shadow", shadow={"then": "canary"}) == {Feature.MIRROR, Feature.WEIGHTS}
    assert features(strategy="ab", ab={"metric": "accuracy"}) == {Feature.PINNING, Feature.FEEDBACK}
    assert features(strategy="ab", ab={"metric": "success_rate"}) == {Feature.PINNING, Feature.METRICS}
    assert features(strategy="bluegreen") == {Feature.OVERRIDE}
    assert features(strategy="canary", gates=[{"metric": "disagreement"}, {"metric": "accuracy"}]) == {
        Feature.WEIGHTS,
        Feature.COMPARISON,
        Feature.FEEDBACK,
    }


@pytest.mark.parametrize(
    ("changes", "field", "feature"),
    [
        ({}, "gates[2].metric", "feedback routing"),  # production's accuracy gate
        ({"strategy": "ab"}, "strategy", "per-user pinning"),
        ({"strategy": "bluegreen"}, "strategy", "override"),
    ],
)
def test_gitops_check_refuses_a_policy_its_traffic_path_cannot_serve(
    repo: Path, changes: dict[str, Any], field: str, feature: str
) -> None:
    without_router(repo, "production")
    path = policy(repo, "production", **changes)
    found = problems(load_policy(path).model_dump(), "production", SELDON_ISTIO)
    assert field in [f for f, _ in found]
    result = CliRunner().invoke(
        app, ["gitops", "check", str(repo / "policies"), str(repo / "gitops")], env={"COLUMNS": "300"}
    )
    assert result.exit_code == 1
    assert f"{field}: needs {feature}" in result.output
    assert "Seldon Core + Istio" in result.output
    # The same policy passes once sluice-router is back in front.
    shutil.copy(
        REPO / "gitops" / "environments" / "production" / "kustomization.yaml",
        repo / "gitops" / "environments" / "production",
    )
    assert CliRunner().invoke(app, ["gitops", "check", str(repo / "policies")]).exit_code == 0


def test_a_shadow_policy_with_a_disagreement_gate_needs_the_comparison(repo: Path) -> None:
    without_router(repo, "staging")
    gates = [{"name": "agree", "metric": "disagreement", "margin": 0.05}]
    path = policy(repo, "staging", strategy="shadow", gates=gates)
    found = dict(problems(load_policy(path).model_dump(), "staging", SELDON_ISTIO))
    assert "mirror comparison" in found["gates[0].metric"]
    assert "strategy" not in found  # Istio does mirror


def test_a_sticky_key_that_is_no_header_name_is_refused(repo: Path) -> None:
    path = policy(repo, "local", ab={"sticky_key": "user id"})
    result = CliRunner().invoke(app, ["gitops", "check", str(path)], env={"COLUMNS": "300"})
    assert result.exit_code == 1 and "ab.sticky_key: 'user id' is not an HTTP header name" in result.output
