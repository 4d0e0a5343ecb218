"""Quarantine: a model the gates rolled back is recorded in the rollback's own commit, and `start` refuses it
(naming the reason and the commit) unless forced; only evidence quarantines; a broken record is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rollout_exporter import Exporter
from rollout_gitops import fast_policy, git, make_env, make_repo, weights
from typer.testing import CliRunner

from model.bundle import Bundle
from rollout import quarantine
from rollout.decision import Action
from rollout.reconciler import Environment, RolloutError, start, tick
from rollout.targets.seldon import SeldonDeploymentV1
from sluice.cli import app

MANIFEST = "gitops/environments/local/seldondeployment.yaml"


@pytest.fixture
def setup(tmp_path: Path, bundle_dir: Path, rf_bundle_dir: Path) -> tuple[Path, str, str, Bundle]:
    stable = Bundle.open(bundle_dir)
    cand = Bundle.open(rf_bundle_dir)
    repo = make_repo(tmp_path, stable.digest)
    return repo, "m-" + stable.short_digest, "m-" + cand.short_digest, cand


def begin(env: Environment, cand: Bundle, force: bool = False) -> None:
    uri = cand.path.as_uri()
    start(env, uri, uri, cand.digest, force=force)


def rolled_back(setup, exporter: Exporter) -> Environment:  # type: ignore[no-untyped-def]
    """A canary of the candidate, failing half its requests, run until it is rolled back."""
    repo, stable, cand, bundle = setup
    exporter.set(stable, requests=5)
    exporter.set(cand, requests=5, error_ratio=0.5)
    env = make_env(repo, fast_policy("canary"), exporter.url)
    begin(env, bundle)
    run_until_written(env, Action.ROLLBACK)
    assert weights(repo) == {stable: (100, False)}
    return env


def run_until_written(env: Environment, action: Action, ticks: int = 40) -> None:
    for _ in range(ticks):
        res = tick(env)
        if res.wrote and res.decision.action == action:
            return
    raise AssertionError(f"no {action} after {ticks} ticks")


@pytest.mark.timeout(60)
def test_a_rolled_back_model_is_refused_with_its_reason_and_commit(setup, exporter: Exporter) -> None:  # type: ignore[no-untyped-def]
    repo, _stable, cand, bundle = setup
    env = rolled_back(setup, exporter)

    # recorded in the very commit that rolled the model back
    rollback_commit = git(repo, "rev-parse", "main").strip()
    text = git(repo, "show", f"main:{MANIFEST}")
    (entry,) = quarantine.entries(SeldonDeploymentV1(), text)
    assert entry.digest == bundle.digest and entry.predictor == cand and "success" in entry.reason
    assert entry.after == git(repo, "rev-parse", "main^1").strip()
    before = git(repo, "show", f"main^1:{MANIFEST}")
    assert quarantine.ANNOTATION not in before

    with pytest.raises(RolloutError) as refused:
        begin(env, bundle)
    message = str(refused.value)
    assert f"{cand} ({bundle.digest}) is quarantined" in message and "gate failed" in message
    assert f"rollback commit {rollback_commit}" in message and "--force" in message
    assert git(repo, "rev-parse", "main").strip() == rollback_commit  # nothing written

    exporter.set(cand, requests=5)  # fixed, say: a human decides to try it again
    begin(env, bundle, force=True)
    assert weights(repo)[cand] == (10, False)


@pytest.mark.timeout(60)
def test_the_cli_refuses_unless_forced(setup, exporter: Exporter, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo, _stable, cand, bundle = setup
    rolled_back(setup, exporter)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "local.yaml").write_text(json.dumps(fast_policy("canary")))
    common = ["rollout", "start", "--env", "local", "--repo", str(repo), "--policies", str(policies)]
    runner = CliRunner()
    refused = runner.invoke(app, [*common, "--candidate", str(bundle.path)])
    assert (
        refused.exit_code == 1 and "is quarantined" in refused.output and "rollback commit" in refused.output
    )
    forced = runner.invoke(app, [*common, "--candidate", str(bundle.path), "--force"])
    assert forced.exit_code == 0, forced.output
    assert weights(repo)[cand] == (10, False)


@pytest.mark.timeout(60)
def test_a_rollback_without_evidence_quarantines_nothing(setup, exporter: Exporter) -> None:  # type: ignore[no-untyped-def]
    repo, stable, _cand, bundle = setup
    exporter.set(stable, requests=5)  # the candidate never gets traffic: the gate's deadline runs out
    gates = [{"name": "success", "metric": "success_rate", "min": 0.9, "no_data_deadline": 0.5}]
    env = make_env(repo, fast_policy("canary", gates=gates), exporter.url)
    begin(env, bundle)
    run_until_written(env, Action.ROLLBACK)
    assert quarantine.ANNOTATION not in git(repo, "show", f"main:{MANIFEST}")
    begin(env, bundle)  # not refused


def test_a_broken_record_is_refused_clearly_and_rewritten_by_a_rollback(setup) -> None:  # type: ignore[no-untyped-def]
    repo, _stable, cand, bundle = setup
    target = SeldonDeploymentV1()
    path = repo / MANIFEST
    path.write_text(target.annotate(path.read_text(), quarantine.ANNOTATION, "{not json"))
    git(repo, "commit", "-qam", "a hand-edited, broken quarantine record")
    env = make_env(repo, fast_policy("canary"), None)
    with pytest.raises(RolloutError, match=r"metadata\.annotations\.sluice\.dev/quarantine: not JSON"):
        begin(env, bundle)
    entry = quarantine.Entry(bundle.digest, cand, "gate failed", 1_800_000_000.0, "canary")
    rewritten = quarantine.record(target, path.read_text(), entry)
    assert quarantine.entries(target, rewritten) == [entry]


@pytest.mark.parametrize(
    "raw",
    ['{"predictor": "m-1"}', '[{"digest": "sha256:1"}]', '[{"predictor": "m-1", "at": "yesterday"}]', "[42]"],
)
def test_unreadable_entries_name_the_annotation(raw: str) -> None:
    target = SeldonDeploymentV1()
    from rollout.targets.seldon import initial_manifest

    text = target.annotate(
        initial_manifest("local", "models:/m/1", "sha256:" + "a" * 64), quarantine.ANNOTATION, raw
    )
    with pytest.raises(quarantine.QuarantineError, match=quarantine.ANNOTATION):
        quarantine.entries(target, text)


def test_the_record_stays_bounded_and_replaces_older_entries() -> None:
    from rollout.targets.seldon import initial_manifest

    target = SeldonDeploymentV1()
    text = initial_manifest("local", "models:/m/1", "sha256:" + "a" * 64)
    for i in range(quarantine.LIMIT + 20):
        text = quarantine.record(
            target, text, quarantine.Entry(f"sha256:{i:064x}", f"m-{i:012x}", "r", i, "canary")
        )
    text = quarantine.record(target, text, quarantine.Entry(f"sha256:{119:064x}", "m-x", "again", 1e9, "ab"))
    entries = quarantine.entries(target, text)
    assert len(entries) == quarantine.LIMIT and entries[-1].reason == "again"
    assert sum(e.digest == f"sha256:{119:064x}" for e in entries) == 1
    assert entries[0].digest == f"sha256:{20:064x}"  # the oldest were dropped
