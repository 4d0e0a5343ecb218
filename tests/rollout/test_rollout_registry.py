"""On promotion the MLflow `champion` alias follows Git: a rollout of models:/clf/2 through the CLI, with a real
sqlite registry in the GitOps repository, ends with version 2 as champion (and version 1 as previous)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from rollout_exporter import Exporter
from rollout_gitops import fast_policy, git, weights
from typer.testing import CliRunner

from model.bundle import Bundle
from sluice.cli import app


def _log(registry, bundle_dir: Path):  # type: ignore[no-untyped-def]
    import mlflow

    bundle = Bundle.open(bundle_dir)
    with registry.fluent(), mlflow.start_run(experiment_id=registry.experiment_id()) as run:
        mlflow.log_artifacts(str(bundle_dir), artifact_path="bundle")
    uri = f"runs:/{run.info.run_id}/bundle"
    return registry.register("clf", uri, run.info.run_id, bundle.digest, uri)


def _registry_in_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bundle_dir: Path, rf_bundle_dir: Path):  # type: ignore[no-untyped-def]
    """A GitOps repository whose embedded sqlite registry holds clf versions 1 and 2, version 1 champion."""
    from model.registry import Registry

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SLUICE_CACHE", str(tmp_path / "cache"))
    repo = tmp_path / "gitops"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    registry = Registry(repo)
    _log(registry, bundle_dir)
    v2 = _log(registry, rf_bundle_dir)
    registry.promote("clf", "1")
    return repo, registry, v2


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_promotion_moves_the_champion_alias(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exporter: Exporter, bundle_dir: Path, rf_bundle_dir: Path
) -> None:
    from model.registry import CHAMPION, PREVIOUS

    repo, registry, _ = _registry_in_repo(tmp_path, monkeypatch, bundle_dir, rf_bundle_dir)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "local.yaml").write_text(yaml.safe_dump(fast_policy("canary")))

    runner = CliRunner()

    def sluice(*args: str) -> str:
        result = runner.invoke(app, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    stable = "m-" + Bundle.open(bundle_dir).short_digest
    cand = "m-" + Bundle.open(rf_bundle_dir).short_digest
    exporter.set(stable, requests=5)
    exporter.set(cand, requests=5)
    common = ["--env", "local", "--repo", str(repo), "--policies", str(policies)]
    sluice("rollout", "init", "--env", "local", "--model", "models:/clf/1", "--repo", str(repo))
    sluice("rollout", "start", *common, "--candidate", "models:/clf/2")
    out = ""
    for _ in range(20):
        out += sluice("rollout", "reconcile", *common, "--once", "--metrics-url", exporter.url)
        if json.loads(sluice("rollout", "status", *common, "--json"))["rollout"]["status"] == "promoted":
            break
    assert weights(repo) == {cand: (100, False)}
    assert "version 2 is now champion" in out
    assert registry.alias("clf", CHAMPION).version == "2"  # type: ignore[union-attr]
    assert registry.alias("clf", PREVIOUS).version == "1"  # type: ignore[union-attr]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_champion_follows_the_stable_model_on_every_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bundle_dir: Path, rf_bundle_dir: Path
) -> None:
    """Git names version 2 stable, but the alias update after its promotion failed (MLflow was down): the
    next tick that can reach the registry moves `champion`, and a tick while it is down only says so."""
    from model.registry import CHAMPION
    from rollout.policy import parse_policy
    from rollout.reconciler import Environment, tick
    from rollout.run import ChampionFollowsGit
    from rollout.scm.local import LocalGit
    from rollout.targets.seldon import SeldonDeploymentV1, initial_manifest

    repo, registry, v2 = _registry_in_repo(tmp_path, monkeypatch, bundle_dir, rf_bundle_dir)
    LocalGit(repo).write_initial(
        "local", initial_manifest("local", "models:/clf/2", v2.digest), "v2 is stable"
    )
    (tmp_path / "not-a-dir").write_text("")
    down = ChampionFollowsGit(repo, f"sqlite:///{tmp_path / 'not-a-dir' / 'mlflow.db'}")
    env = Environment(
        "local", LocalGit(repo), SeldonDeploymentV1(), parse_policy(fast_policy("canary")), champion=down
    )
    res = tick(env)
    assert any("champion alias not updated" in n and "retried next tick" in n for n in res.notes), res.notes
    assert registry.alias("clf", CHAMPION).version == "1"  # type: ignore[union-attr]
    env.champion = ChampionFollowsGit(repo, registry.tracking_uri)  # the registry is back
    res = tick(env)
    assert "registry: clf version 2 is now champion (was version 1)" in res.notes
    assert registry.alias("clf", CHAMPION).version == "2"  # type: ignore[union-attr]
    assert not tick(env).notes  # in step: nothing to do, nothing said
