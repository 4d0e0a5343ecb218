"""Argo CD's view of a SeldonDeployment after Seldon's webhook has defaulted it: with the Applications'
`ignoreDifferences` applied (each expression run as `jq 'del(EXPR)'`, as Argo CD's jq normalizer does), the
live object equals Git, so the app is Synced; and anything Git decides still shows as a difference."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from testkit.services import need

REPO = Path(__file__).resolve().parents[2]
ENVS = ["staging", "production"]
PODINFO = {"name": "seldon-podinfo", "mountPath": "/etc/podinfo"}


@pytest.fixture(autouse=True)
def _jq() -> None:
    need("jq", "Argo CD's jq normalizer")


def seldon_defaulted(sdep: dict[str, Any]) -> dict[str, Any]:
    """What the API server stores after Seldon Core v1's defaulting (DefaultSeldonDeployment) and its
    controller: each predictor labelled `version: <name>`; the graph's type, implementation and endpoint;
    each predictive unit's container given the `seldon-podinfo` mount (downward API) and the ports, probes,
    lifecycle, termination message path and pull policy of the operator's defaults."""
    live = copy.deepcopy(sdep)
    for predictor in live["spec"]["predictors"]:
        predictor.setdefault("labels", {}).setdefault("version", predictor["name"])
        graph = predictor["graph"]
        graph.setdefault("type", "UNKNOWN_TYPE")
        graph.setdefault("implementation", "UNKNOWN_IMPLEMENTATION")
        graph.setdefault("endpoint", {"type": "REST", "service_host": "localhost", "service_port": 9000})
        for component in predictor.get("componentSpecs", []):
            for container in component["spec"]["containers"]:
                if container["name"] != graph["name"]:
                    continue
                mounts = container.setdefault("volumeMounts", [])
                if not any(m["name"] == PODINFO["name"] for m in mounts):
                    mounts.append(dict(PODINFO))
                container.setdefault(
                    "ports",
                    [
                        {"name": "http", "containerPort": 9000, "protocol": "TCP"},
                        {"name": "metrics", "containerPort": 6000, "protocol": "TCP"},
                    ],
                )
                probe = {"httpGet": {"path": "/health/ping", "port": "http", "scheme": "HTTP"}}
                container.setdefault("livenessProbe", {**probe, "initialDelaySeconds": 60})
                container.setdefault("readinessProbe", {**probe, "initialDelaySeconds": 20})
                container.setdefault(
                    "lifecycle", {"preStop": {"exec": {"command": ["/bin/sh", "-c", "sleep 10"]}}}
                )
                container.setdefault("terminationMessagePath", "/dev/termination-log")
                container.setdefault("imagePullPolicy", "IfNotPresent")
    return live


def application(env: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "gitops" / "argocd" / f"{env}.yaml").read_text())


def normalized(obj: dict[str, Any], app: dict[str, Any]) -> dict[str, Any]:
    for rule in app["spec"].get("ignoreDifferences", []):
        if rule.get("kind") != obj["kind"]:
            continue
        for expression in rule.get("jqPathExpressions", []):
            result = subprocess.run(
                ["jq", "-c", f"del({expression})"],
                input=json.dumps(obj),
                capture_output=True,
                text=True,
                check=True,
            )
            obj = json.loads(result.stdout)
    return obj


def manifest(env: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "gitops" / "environments" / env / "seldondeployment.yaml").read_text())


@pytest.mark.parametrize("env", ENVS)
def test_a_defaulted_seldondeployment_is_in_sync_with_git(env: str) -> None:
    git, app = manifest(env), application(env)
    live = seldon_defaulted(git)
    assert live != git
    assert normalized(live, app) == normalized(git, app)


@pytest.mark.parametrize("env", ENVS)
def test_what_git_decides_still_shows_as_a_difference(env: str) -> None:
    git, app = manifest(env), application(env)
    container = git["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0]
    container["volumeMounts"] = [{"name": "model-cache", "mountPath": "/cache"}]
    live = seldon_defaulted(git)
    assert normalized(live, app) == normalized(git, app)  # Git's own mount plus Seldon's: in sync
    edits = [
        lambda d: d["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0]["volumeMounts"][
            0
        ].update(mountPath="/elsewhere"),
        lambda d: d["spec"]["predictors"][0].update(traffic=50),
        lambda d: d["spec"]["predictors"][0]["labels"].update(team="other"),
        lambda d: d["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0].update(
            image="x@sha256:1"
        ),
        lambda d: d["spec"]["predictors"][0]["graph"]["parameters"][1].update(value="sha256:" + "f" * 64),
    ]
    for edit in edits:
        drifted = copy.deepcopy(live)
        edit(drifted)
        assert normalized(drifted, app) != normalized(git, app)
