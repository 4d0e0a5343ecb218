"""The environment chain on a real git repository with the local SCM: a promotion in local becomes a proposal
in staging carrying local's gate evidence, once; a model quarantined in staging is never proposed there."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from rollout import quarantine
from rollout.chain import PROMOTED_IN, chain_step
from rollout.scm.local import LocalGit
from rollout.targets.by_kind import ByKind

REPO = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32
NAME = "m-" + "ab" * 6
GATE = "success-rate; n=400/410; estimate=+0.001; interval=[-0.004, +0.006]; margin=0.01; limit=-0.01; decision=pass"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def chain_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    for env in ("local", "staging"):
        (repo / "gitops" / "environments" / env).mkdir(parents=True)
        shutil.copy(
            REPO / "gitops/environments/local/seldondeployment.yaml", repo / f"gitops/environments/{env}/"
        )
    shutil.copytree(REPO / "policies", repo / "policies")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "init")
    return repo


def promote_in_local(repo: Path) -> str:
    """What the reconciler's promote step leaves in Git: the new model alone at 100 %, `Sluice-Action: promote`
    and the gate table in the trailers (written through the real local SCM)."""
    scm = LocalGit(repo)
    path = repo / "gitops/environments/local/seldondeployment.yaml"
    doc = yaml.safe_load(path.read_text())
    p = doc["spec"]["predictors"][0]
    p["name"] = NAME
    for param in p["graph"]["parameters"]:
        if param["name"] == "model_digest":
            param["value"] = DIGEST
        if param["name"] == "model_uri":
            param["value"] = "models:/sluice-classifier/2"
    head = scm.rev("refs/heads/main")
    body = f"promoted\n\nSluice-Action: promote\nSluice-Base: {head}\nSluice-Gate: {GATE}\n"
    outcome = scm.propose("local", yaml.safe_dump(doc, sort_keys=False), f"rollout(local): promote {NAME}", body,
                          head, "auto", merge=True)  # fmt: skip
    assert outcome.merged and outcome.revision
    return outcome.revision


def test_a_promotion_is_proposed_to_the_next_environment_once_with_its_evidence(tmp_path: Path) -> None:
    repo = chain_repo(tmp_path)
    assert [o.step for o in chain_step(repo, ["local", "staging"])] == ["nothing"]
    promotion = promote_in_local(repo)
    (first,) = chain_step(repo, ["local", "staging"])
    assert first.step == "proposed", first.detail
    staging = yaml.safe_load((repo / "gitops/environments/staging/seldondeployment.yaml").read_text())
    assert [p["name"] for p in staging["spec"]["predictors"]] == ["m-000000000000", NAME]
    assert f"{PROMOTED_IN}: local {promotion}" in git(repo, "log", "-1", "--format=%B", "main")
    message = git(repo, "log", "-1", "--format=%B", "main^2")  # the proposal the merge brought in
    assert f"{PROMOTED_IN}: local {promotion}" in message
    assert GATE in message and f"Promoted in local by {promotion[:12]}" in message
    head = git(repo, "rev-parse", "main")
    (again,) = chain_step(repo, ["local", "staging"])
    assert again.step in ("done", "waiting") and git(repo, "rev-parse", "main") == head


def test_a_model_quarantined_in_the_next_environment_is_never_proposed(tmp_path: Path) -> None:
    repo = chain_repo(tmp_path)
    path = repo / "gitops/environments/staging/seldondeployment.yaml"
    path.write_text(
        quarantine.record(
            ByKind(), path.read_text(), quarantine.Entry(DIGEST, NAME, "gate failed", 1.0e9, "canary")
        )
    )
    git(repo, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qam", "rollback recorded")
    promote_in_local(repo)
    head = git(repo, "rev-parse", "main")
    (outcome,) = chain_step(repo, ["local", "staging"])
    assert outcome.step == "refused" and "rolled back in staging" in outcome.detail
    assert git(repo, "rev-parse", "main") == head


def test_the_reconciler_follows_its_policy_s_promote_from(tmp_path: Path) -> None:
    """`promote_from: local` in staging's policy: staging's own reconciler opens the proposal a promotion in
    local makes eligible, once, whatever number of ticks run."""
    from rollout.run import Options, Tick, build_environment, run

    repo = chain_repo(tmp_path)
    policy_path = repo / "policies" / "staging.yaml"
    policy = yaml.safe_load(policy_path.read_text())
    policy["promote_from"] = "local"
    policy_path.write_text(yaml.safe_dump(policy, sort_keys=False))
    git(repo, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qam", "staging follows local")
    ticks: list[Tick] = []
    env = build_environment(Options(env="staging", repo=repo))
    run(env, max_ticks=1, sleep=lambda _: None, on_tick=ticks.append)
    assert PROMOTED_IN not in git(repo, "log", "--format=%B", "main")  # nothing promoted in local yet

    promotion = promote_in_local(repo)
    run(env, max_ticks=1, sleep=lambda _: None, on_tick=ticks.append)
    assert ticks[-1].result is not None
    assert any("chain local -> staging: proposed" in n for n in ticks[-1].result.notes), ticks[-1]
    staging = yaml.safe_load((repo / "gitops/environments/staging/seldondeployment.yaml").read_text())
    assert NAME in [p["name"] for p in staging["spec"]["predictors"]]
    for _ in range(2):
        run(env, max_ticks=1, sleep=lambda _: None, on_tick=ticks.append)
    carried = [
        m for m in git(repo, "log", "--format=%B%x1e", "main").split("\x1e") if f"{PROMOTED_IN}: local" in m
    ]
    assert len({m for m in carried if promotion in m}) >= 1
    proposals = git(
        repo, "log", "--no-merges", "--format=%H", f"--grep={PROMOTED_IN}: local {promotion}", "main"
    )
    assert len(proposals.split()) == 1  # one proposal commit, however many ticks


def test_a_policy_naming_a_bad_environment_in_promote_from_is_refused() -> None:
    import pytest

    from rollout.policy import PolicyError, loads_policy

    text = (REPO / "policies" / "staging.yaml").read_text() + "\npromote_from: ../production\n"
    with pytest.raises(PolicyError, match="promote_from"):
        loads_policy(text, "policies/staging.yaml")
