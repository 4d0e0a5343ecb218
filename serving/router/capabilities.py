"""What each traffic path can do for a rollout, and what a promotion policy asks of it.

    feature            sluice up    cluster:        cluster: Seldon Core       cluster: KServe alone
                       (router)     sluice-router   + Istio only               (Gateway API HTTPRoute)
    weights            yes          yes             yes (weighted routes)      yes (canary trafficPercent)
    mirror             yes          yes             yes (Istio mirror)         no
    mirror comparison  yes          yes             no                         no
    per-user pinning   yes          yes             no                         no
    override           yes          yes             no                         no
    feedback routing   yes          yes             no (split by weight)       no (split by weight)
    retry              yes          yes             no                         no
    request metrics    yes          yes             yes (Seldon's executor)    no (no executor: nothing
                                                                               counts requests per predictor
                                                                               under the gates' names)

An environment's traffic path is read from the repository: one that no Argo CD Application applies runs with
`sluice up` (the router); one that an Application applies runs the router when its manifests include a
container running `sluice router` (gitops/router, through the environment's kustomization.yaml), and its
platform's own routing otherwise: Seldon Core's ingress for a SeldonDeployment, KServe's HTTPRoute for an
InferenceService. `sluice gitops check` refuses a policy whose strategy or gates need a feature its
environment's path lacks: the rollout could never pass its gates, or would judge the wrong model.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from deployment import kinds
from deployment.view import ManifestError

HEADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")


class Feature(StrEnum):
    WEIGHTS = "weights"
    MIRROR = "mirror"
    COMPARISON = "mirror comparison"
    PINNING = "per-user pinning"
    OVERRIDE = "override"
    FEEDBACK = "feedback routing"
    RETRY = "retry"
    METRICS = "request metrics"


@dataclass(frozen=True)
class TrafficPath:
    name: str
    features: frozenset[Feature]


ROUTER_LOCAL = TrafficPath("sluice up (router)", frozenset(Feature))
ROUTER_CLUSTER = TrafficPath("sluice-router", frozenset(Feature))
SELDON_ISTIO = TrafficPath(
    "Seldon Core + Istio", frozenset({Feature.WEIGHTS, Feature.MIRROR, Feature.METRICS})
)
KSERVE = TrafficPath("KServe's HTTPRoute", frozenset({Feature.WEIGHTS}))


def _documents(path: Path) -> Iterator[Any]:
    try:
        yield from (d for d in yaml.safe_load_all(path.read_text()) if d)
    except (OSError, yaml.YAMLError):
        return


def _applied_by_argocd(env_dir: Path, repo: Path) -> bool:
    relative = env_dir.resolve().relative_to(repo.resolve()).as_posix()
    for path in sorted((repo / "gitops" / "argocd").glob("*.yaml")):
        for doc in _documents(path):
            if isinstance(doc, dict) and doc.get("kind") == "Application":
                source = (doc.get("spec") or {}).get("source") or {}
                if str(source.get("path", "")).rstrip("/") == relative:
                    return True
    return False


def _runs_router(directory: Path, seen: set[Path]) -> bool:
    """Whether kustomize's output for `directory` (or its plain YAML files) has a container running the router."""
    directory = directory.resolve()
    if directory in seen or not directory.is_dir():
        return False
    seen.add(directory)
    kustomization = directory / "kustomization.yaml"
    if kustomization.exists():
        doc: Any = next(_documents(kustomization), {})
        entries = [directory / str(r) for r in (doc.get("resources") or [])] if isinstance(doc, dict) else []
    else:
        entries = sorted(directory.glob("*.yaml"))
    for entry in entries:
        if entry.is_dir():
            if _runs_router(entry, seen):
                return True
            continue
        for obj in _documents(entry):
            if isinstance(obj, dict) and obj.get("kind") == "Deployment" and _has_router_container(obj):
                return True
    return False


def _has_router_container(deployment: Mapping[str, Any]) -> bool:
    pod = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in pod.get("containers") or []:
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        if "sluice" in argv and "router" in argv:
            return True
    return False


def traffic_path(env_dir: Path, repo: Path) -> TrafficPath:
    """The path traffic takes to the predictors of the environment in `env_dir` (a gitops/environments/ dir)."""
    if not _applied_by_argocd(env_dir, repo):
        return ROUTER_LOCAL
    if _runs_router(env_dir, set()):
        return ROUTER_CLUSTER
    return KSERVE if _kind(env_dir) == "InferenceService" else SELDON_ISTIO


def _kind(env_dir: Path) -> str | None:
    try:
        return kinds.kind_of(kinds.find(env_dir).read_text())
    except (ManifestError, OSError, UnicodeDecodeError):
        return None


def needs(policy: Mapping[str, Any]) -> Iterator[tuple[str, Feature, str]]:
    """(field, feature, why) for every feature a validated policy (as a plain mapping) relies on."""
    strategy = policy.get("strategy")
    if strategy == "canary":
        yield "strategy", Feature.WEIGHTS, "canary stages shift weights"
    if strategy == "shadow":
        yield "strategy", Feature.MIRROR, "a shadow gets mirrored requests"
        then = (policy.get("shadow") or {}).get("then")
        if then == "canary":
            yield "shadow.then", Feature.WEIGHTS, "canary stages shift weights"
        if then == "bluegreen":
            yield "shadow.then", Feature.OVERRIDE, "green's warm-up is checked on smoke traffic sent to it"
    if strategy == "ab":
        yield "strategy", Feature.PINNING, "an A/B test keeps each user on one arm"
        if (policy.get("ab") or {}).get("metric") == "accuracy":
            yield "ab.metric", Feature.FEEDBACK, "accuracy is read from feedback on each arm's own answers"
        if (policy.get("ab") or {}).get("metric") == "success_rate":
            yield "ab.metric", Feature.METRICS, "the success rate is counted per predictor"
    if strategy == "bluegreen":
        yield "strategy", Feature.OVERRIDE, "green's warm-up is checked on smoke traffic sent to it"
    for i, gate in enumerate(policy.get("gates") or []):
        metric = gate.get("metric") if isinstance(gate, Mapping) else None
        if metric == "disagreement":
            yield f"gates[{i}].metric", Feature.COMPARISON, "disagreement compares the shadow's answers"
        if metric == "accuracy":
            yield (
                f"gates[{i}].metric",
                Feature.FEEDBACK,
                "accuracy is read from feedback on each model's answers",
            )
        if metric in ("success_rate", "latency"):
            yield f"gates[{i}].metric", Feature.METRICS, f"{metric} is counted per predictor"


def problems(policy: Mapping[str, Any], env: str, path: TrafficPath) -> list[tuple[str, str]]:
    """(field, message) for each feature the policy needs that `path` cannot deliver, and a bad sticky key."""
    out = []
    for field, feature, why in needs(policy):
        if feature not in path.features:
            has = ", ".join(sorted(path.features))
            out.append(
                (
                    field,
                    f"needs {feature} ({why}), which {env}'s traffic path ({path.name}) cannot deliver "
                    f"(it has: {has}); put sluice-router in front (gitops/router, included from "
                    f"gitops/environments/{env}/kustomization.yaml)",
                )
            )
    key = (policy.get("ab") or {}).get("sticky_key")
    if isinstance(key, str) and not HEADER_NAME.match(key):
        out.append(("ab.sticky_key", f"{key!r} is not an HTTP header name (letters, digits and '-')"))
    return out
