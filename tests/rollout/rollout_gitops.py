"""Helpers for end-to-end rollout tests: a real git repository holding an environment, and its Environment."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from rollout.metrics.scrape import ScrapeProvider
from rollout.policy import parse_policy
from rollout.reconciler import Environment
from rollout.scm.local import LocalGit
from rollout.targets import kserve, seldon
from rollout.targets.by_kind import ByKind

FAST_GATES = [
    {"name": "success", "metric": "success_rate", "min": 0.9, "min_sample": 10, "no_data_deadline": 3},
    {"name": "p90", "metric": "latency", "quantile": 0.9, "max": 0.25, "no_data_deadline": 3},
    {"name": "agree", "metric": "disagreement", "margin": 0.1, "min_sample": 10, "no_data_deadline": 3},
]


def fast_policy(strategy: str, **over: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "strategy": strategy,
        "interval": 0.1,
        "window": 0.3,
        "stages": [{"weight": 10, "bake": 0}, {"weight": 50, "bake": 0}],
        "gates": FAST_GATES,
        "shadow": {"mirror": 100, "duration": 0, "then": "promote"},
        "ab": {
            "split": 50,
            "metric": "accuracy",
            "min_sample": 200,
            "significance": 0.05,
            "max_duration": 30,
        },
        "bluegreen": {"warmup": 0, "switch": [100], "step_bake": 0, "blue_bake": 0},
    }
    p.update(over)
    return p


def git(repo: Path, *args: str, input_text: str | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True, input=input_text
    ).stdout


def initial(env: str, stable_digest: str, target: str = "seldon") -> str:
    """An environment's first manifest for a target: a SeldonDeployment naming a registered version, or an
    InferenceService naming where its bundle is stored."""
    if target == "kserve":
        return kserve.initial_manifest(env, "s3://sluice-models/stable", stable_digest)
    return seldon.initial_manifest(env, "models:/sluice-classifier/1", stable_digest)


def make_repo(tmp: Path, stable_digest: str, env: str = "local", target: str = "seldon") -> Path:
    repo = tmp / "gitops-repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "test@example.com")
    git(repo, "config", "user.name", "test")
    LocalGit(repo).write_initial(env, initial(env, stable_digest, target), "init")
    return repo


def make_env(repo: Path, policy: dict[str, Any], metrics_url: str | None, env: str = "local") -> Environment:
    return Environment(
        name=env,
        scm=LocalGit(repo),
        target=ByKind(),  # as `sluice rollout` wires it: the manifest's kind picks the target
        policy=parse_policy(policy),
        metrics=ScrapeProvider(metrics_url) if metrics_url else None,
    )


def weights(repo: Path, env: str = "local") -> dict[str, tuple[int, bool]]:
    state = ByKind().state(LocalGit(repo).read(env).text)
    return {p.name: (p.traffic, p.shadow) for p in state.predictors}


def log(repo: Path) -> list[str]:
    return git(repo, "log", "--format=%s", "main").splitlines()
