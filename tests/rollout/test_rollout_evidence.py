"""Evidence in Git: every decision commit (and its merge on main) ends with one trailer per gate that Git itself
parses back, and nothing a policy or manifest says can forge a trailer."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from rollout_exporter import Exporter
from rollout_factories import CAND, STABLE, T0, obs, policy, state_for
from rollout_gitops import fast_policy, git, make_env, make_repo

from model.bundle import Bundle
from rollout import evidence
from rollout.decision import Action, Decision, decide
from rollout.gates import GateResult
from rollout.observations import PredictorStats
from rollout.reconciler import start, tick


def git_trailers(message: str) -> list[tuple[str, str]]:
    """What `git interpret-trailers --parse` reads from a message."""
    out = subprocess.run(
        ["git", "interpret-trailers", "--parse"], input=message, capture_output=True, text=True, check=True
    ).stdout
    return [tuple(line.split(": ", 1)) for line in out.splitlines() if line]  # type: ignore[misc]


def test_a_decision_report_ends_with_one_trailer_per_gate() -> None:
    pol = policy(
        "canary",
        gates=[
            {"name": "success", "metric": "success_rate", "margin": 0.01},
            {"name": "accuracy", "metric": "accuracy", "margin": 0.02},
        ],
    )
    good = PredictorStats(requests=8000, feedback=8000, reward=7600)
    d = decide(state_for(pol, 0, entered_at=T0 - 100), pol, obs(good, good), T0)
    assert d.action == Action.ADVANCE
    body = d.report()
    assert "| success | success_rate (difference) | 8000 / 8000 |" in body
    parsed = git_trailers(f"{d.summary('local')}\n\n{body}")
    assert [k for k, _ in parsed] == ["Sluice-Gate", "Sluice-Gate"]
    success = dict(part.split("=", 1) for part in parsed[0][1].split("; ")[1:])
    assert parsed[0][1].startswith("success; ")
    assert success["n"] == "8000/8000" and success["margin"] == "0.01" and success["decision"] == "pass"
    assert success["limit"] == ">= -0.01" and success["interval"].startswith("[-0.00")
    assert evidence.parse_trailers(body) == parsed


def test_nothing_can_forge_a_trailer() -> None:
    """A gate name or a reason with line breaks (past the policy's own check) stays inside its line."""
    hostile = GateResult(
        gate="ok\nSluice-Action: promote\n\nSluice-Gate: fake",
        metric="accuracy",
        verdict="fail",
        n_candidate=10,
        detail="x\n\nSluice-Action: promote",
    )
    d = Decision(Action.ROLLBACK, "bad\n\nSluice-Action: promote", (hostile,))
    parsed = git_trailers(f"title\n\n{d.report()}")
    assert parsed == [
        (
            "Sluice-Gate",
            "ok Sluice-Action: promote Sluice-Gate: fake; n=10; estimate=-; interval=-; margin=0; "
            "limit=-; decision=fail",
        )
    ]
    assert "\nSluice-Action" not in d.report() and "\nSluice-Gate: fake" not in d.report()


def test_a_report_without_gates_ends_in_no_trailer_git_would_read() -> None:
    """Its last line is prose ("**Traffic**: ..."), never `Key: value`: only the trailers added after it count."""
    from rollout.state import Slot

    d = Decision(Action.ADVANCE, "start canary", layout=(Slot(STABLE, 90), Slot(CAND, 10)))
    assert git_trailers(f"title\n\n{d.report()}") == []
    assert evidence.with_trailers("body\n", []) == "body\n"


@pytest.mark.timeout(60)
def test_every_decision_commit_and_its_merge_carry_the_gates(
    tmp_path: Path, exporter: Exporter, bundle_dir: Path, rf_bundle_dir: Path
) -> None:
    stable, cand = Bundle.open(bundle_dir), Bundle.open(rf_bundle_dir)
    repo = make_repo(tmp_path, stable.digest)
    env = make_env(repo, fast_policy("canary"), exporter.url)
    exporter.set("m-" + stable.short_digest, requests=5)
    exporter.set("m-" + cand.short_digest, requests=5)
    start(env, str(rf_bundle_dir), rf_bundle_dir.as_uri(), cand.digest)
    for _ in range(30):
        res = tick(env)
        if res.wrote and res.decision.action == Action.PROMOTE:
            break
    merges = git(repo, "log", "--first-parent", "--format=%H", "main").split()
    decided = [
        m
        for m in merges
        if "advance" in git(repo, "log", "-1", "--format=%s", m)
        or "promote" in git(repo, "log", "-1", "--format=%s", m)
    ]
    assert len(decided) == 2  # canary 50 %, then the promotion
    for merge in decided:
        for commit in (merge, f"{merge}^2"):  # the merge on main, and the proposal it merged
            message = git(repo, "log", "-1", "--format=%B", commit)
            keys = [k for k, _ in git_trailers(message)]
            # success, p90, agree (skipped outside a shadow), then what merging does and on which base
            assert keys == ["Sluice-Gate"] * 3 + ["Sluice-Action", "Sluice-Base"], message
            assert "decision=pass" in message and "n=" in message


def test_quarantine_trailer_names_the_digest() -> None:
    pol = policy("canary", gates=[{"name": "success", "metric": "success_rate", "margin": 0.01}])
    st = state_for(pol, 1)
    bad = PredictorStats(requests=5000, errors=500)
    d = decide(st, pol, obs(bad, PredictorStats(requests=5000)), T0 + 50)
    assert d.action == Action.ROLLBACK and d.quarantine is not None
    assert ("Sluice-Quarantine", CAND) in evidence.parse_trailers(d.report())
    assert STABLE not in [v for k, v in d.trailers() if k == "Sluice-Quarantine"]
