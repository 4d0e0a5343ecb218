"""Guardrails on manifests: each rule can fire, and the shipped manifest passes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from rollout.guardrails import check_manifest

REPO = Path(__file__).resolve().parents[2]
D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64
IMG = "ghcr.io/x/serving@sha256:" + "c" * 64


def predictor(name: str, traffic: int | None, digest: str = D1, **extra: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "name": name,
        "componentSpecs": [{"spec": {"containers": [{"name": "classifier", "image": IMG}]}}],
        "graph": {
            "name": "classifier",
            "type": "MODEL",
            "parameters": [
                {"name": "model_uri", "type": "STRING", "value": "file:///b"},
                {"name": "model_digest", "type": "STRING", "value": digest},
            ],
        },
        **extra,
    }
    if traffic is not None:
        p["traffic"] = traffic
    return p


def sdep(*predictors: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "machinelearning.seldon.io/v1",
        "kind": "SeldonDeployment",
        "metadata": {"name": "x"},
        "spec": {"predictors": list(predictors)},
    }


def rules(doc: dict[str, Any]) -> set[str]:
    return {v.rule for v in check_manifest(doc)}


def test_shipped_manifest_passes() -> None:
    text = (REPO / "gitops/environments/local/seldondeployment.yaml").read_text()
    assert check_manifest(text) == []
    assert check_manifest(yaml.safe_load(text)) == []


def test_valid_layouts() -> None:
    assert rules(sdep(predictor("a", 100))) == set()
    assert rules(sdep(predictor("a", None))) == set()  # Seldon's default for a lone predictor
    assert rules(sdep(predictor("a", 90), predictor("b", 10, D2))) == set()
    assert rules(sdep(predictor("a", 100), predictor("b", 100, D2, shadow=True))) == set()
    assert rules(sdep(predictor("a", 0), predictor("b", 100, D2))) == set()


@pytest.mark.parametrize(
    ("doc", "rule"),
    [
        (sdep(predictor("a", 90), predictor("b", 20, D2)), "weights"),
        (sdep(predictor("a", 50)), "weights"),
        (
            sdep(predictor("a", 100), predictor("b", 5, D2, shadow=True), predictor("c", 5, D2, shadow=True)),
            "shadow",
        ),
        (sdep(predictor("b", 100, D2, shadow=True)), "shadow"),
        (sdep(predictor("a", 50), predictor("a", 50, D2)), "names"),
        (sdep(predictor("a", 100, "sha256:short")), "pinning"),
        (sdep(predictor("a", 100, "latest")), "pinning"),
        (sdep(predictor("a", 150)), "weights"),
        ({"kind": "SeldonDeployment", "spec": {"predictors": []}}, "shape"),
        (sdep(), "shape"),
        (sdep(predictor("a", "lots")), "shape"),  # type: ignore[arg-type]
    ],
)
def test_each_rule_fires(doc: dict[str, Any], rule: str) -> None:
    found = check_manifest(doc)
    assert rule in {v.rule for v in found}, found
    assert all(str(v) for v in found)


def test_unpinned_image_is_named() -> None:
    doc = sdep(predictor("a", 100))
    bad = copy.deepcopy(doc)
    bad["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0]["image"] = "ghcr.io/x:latest"
    (v,) = check_manifest(bad)
    assert v.rule == "pinning" and "ghcr.io/x:latest" in v.message and "containers[0].image" in v.path
