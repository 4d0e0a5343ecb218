"""`sluice demo --fast` end to end: the outcomes, zero failed client requests, one commit per traffic change,
a report whose numbers match the commits and the request log, and Act 5: a drift detected, a retrain, the new
model promoted through staging and production (approved once, in production), timed from the drift's onset."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFEST = "gitops/environments/local/seldondeployment.yaml"

# One demo run serves all three tests: keep them on one xdist worker (make test uses --dist loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900), pytest.mark.xdist_group("demo")]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo")
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(out),
        "GX_ANALYTICS_ENABLED": "false",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "sluice", "demo", "--fast", "--repo", str(REPO), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=840,
        env={**env, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out, json.loads((out / "summary.json").read_text())


def test_every_act_ends_as_expected_with_no_failed_client_request(demo):
    _, summary = demo
    outcomes = {a["name"]: (a["strategy"], a["outcome"]) for a in summary["acts"]}
    assert outcomes == {
        "Act 2": ("canary", "promoted"),
        "Act 3": ("canary", "rolled back"),
        "Act 4 · shadow": ("shadow", "rolled back"),
        "Act 4 · ab": ("ab", "rolled back"),
        "Act 4 · bluegreen": ("bluegreen", "rolled back"),
        "Act 5 · staging": ("canary", "promoted"),
        "Act 5 · production": ("canary", "promoted"),
    }
    assert summary["client"]["failures"] == 0
    assert summary["staging_replay"]["requests"] > 0 and summary["staging_replay"]["failures"] == 0
    assert summary["client"]["requests"] > 500
    for act in summary["acts"]:
        assert act["requests"] > 0 and act["failures"] == 0
        if act["outcome"] == "rolled back":
            assert act["rollback_seconds"] is not None and 0 <= act["rollback_seconds"] < 10


def test_one_commit_per_traffic_change_and_the_champion_moved(demo):
    out, summary = demo
    repo = out / "work" / "repo"
    decisions = [d for a in summary["acts"] if a["env"] == "local" for d in a["decisions"]]
    log = subprocess.run(
        ["git", "log", "--first-parent", "--format=%H", f"{summary['base_commit']}..main", "--", MANIFEST],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    # Every decision is a commit on main that changed the manifest, and each such commit after the demo's
    # first manifest (`sluice rollout init`) is one decision.
    assert [d["commit"] for d in decisions] == list(reversed(log[: len(decisions)]))
    assert len(log) == len(decisions) + 1
    for d in decisions:
        doc = yaml.safe_load(
            subprocess.run(
                ["git", "show", f"{d['commit']}:{MANIFEST}"],
                cwd=repo,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        weights = {
            p["name"]: float(0 if p.get("shadow") else p.get("traffic", 0)) for p in doc["spec"]["predictors"]
        }
        assert d["weights"] == weights
    # rollbacks restore the stable predictor alone at 100
    for act in summary["acts"]:
        if act["env"] != "local":
            continue
        last = act["decisions"][-1]
        if act["outcome"] == "rolled back":
            assert last["action"] == "rollback" and last["weights"] == {act["stable"]: 100.0}
    # each promotion moved MLflow's champion: Act 2's to version 2, Act 5's to the retrained version (the loop
    # opens its rollout by its registered version, not by the bundle path the next retrain overwrites)
    from model.registry import Registry

    registry = Registry(repo)
    champion = registry.alias("sluice-classifier", "champion")
    assert champion.digest == summary["act5"]["digest"] and int(champion.version) > 2
    assert registry.alias("sluice-classifier", "previous").version == "2"


def test_report_numbers_match_the_request_log(demo):
    out, summary = demo
    with (out / "requests.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == summary["client"]["requests"] + summary["staging_replay"]["requests"]
    per_act = Counter(r["act"] for r in rows)
    failed = Counter(r["act"] for r in rows if r["status"] != "200")
    for act in summary["acts"]:
        assert act["requests"] == per_act[act["name"]]
        assert act["failures"] == failed[act["name"]]
        served = Counter(r["predictor"] for r in rows if r["act"] == act["name"] and r["predictor"])
        assert act["served"] == dict(served)
    # a canary that promoted sent part of the traffic to the candidate; a shadow never answered a client
    acts = {a["name"]: a for a in summary["acts"]}
    assert acts["Act 2"]["served"].get(acts["Act 2"]["candidate"], 0) > 0
    shadow = acts["Act 4 · shadow"]
    assert shadow["candidate"] not in shadow["served"]
    table = (out / "strategies.md").read_text()
    for strategy in ("canary", "shadow", "ab", "bluegreen"):
        assert f"| {strategy} |" in table
    assert (out / "rollout.png").stat().st_size > 10_000
    assert "<img" in (out / "rollout.html").read_text()


def _first_parent(repo: Path, base: str, path: str) -> list[tuple[str, str]]:
    """(subject, body) of main's first-parent commits since `base` that changed `path`, oldest first."""
    out = subprocess.run(
        ["git", "log", "--first-parent", "--reverse", "--format=%s%x1f%B%x1e", f"{base}..main", "--", path],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [tuple(e.strip("\n").split("\x1f", 1)) for e in out.split("\x1e") if e.strip()]  # type: ignore[misc]


def test_act5_drift_to_production_with_one_approval_and_no_duplicates(demo):
    out, summary = demo
    repo = out / "work" / "repo"
    act5 = summary["act5"]
    t = act5["timeline"]
    order = ["drift_onset", "detected", "data_committed", "trained", "staging_opened", "staging_promoted",
             "production_opened", "approval_requested", "approved", "production_promoted", "production_serving"]  # fmt: skip
    times = [t[k] for k in order]
    assert all(x is not None for x in times), t
    assert times == sorted(times), t
    # the total runs from the drift's onset to production's router sending 100 % to the new model, in parts
    total = act5["drift_to_production_seconds"]
    assert total == pytest.approx(t["production_serving"] - t["drift_onset"], abs=0.01)
    assert sum(act5["parts_seconds"].values()) == pytest.approx(total, abs=0.05)
    assert all(v >= 0 for v in act5["parts_seconds"].values())

    # the new model serves 100 % of production, pinned by the digest the retrain packaged
    doc = yaml.safe_load((repo / "gitops/environments/production/seldondeployment.yaml").read_text())
    (only,) = doc["spec"]["predictors"]
    params = {p["name"]: p["value"] for p in only["graph"]["parameters"]}
    assert only["traffic"] == 100 and params["model_digest"] == act5["digest"]
    assert only["name"] == act5["candidate"] != act5["stable"]

    # sluice loop did each step once; staging and production each started and promoted the candidate once
    retrain = subprocess.run(
        ["git", "log", "--format=%(trailers:key=Sluice-Retrain-Step,valueonly)", "main"],
        cwd=repo, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert sorted(retrain) == ["data", "promoted", "trained"]
    base = summary["base_commit"]
    for env in ("staging", "production"):
        commits = _first_parent(repo, base, f"gitops/environments/{env}/seldondeployment.yaml")
        starts = [s for s, _ in commits if f"rollout({env}): start canary {act5['candidate']}" in s]
        promotions = [b for _, b in commits if "Sluice-Action: promote" in b]
        assert len(starts) == 1 and len(promotions) == 1, commits
    # production's proposal carries staging's evidence; its promotion is the approval, recorded by whom
    production = _first_parent(repo, base, "gitops/environments/production/seldondeployment.yaml")
    assert any("Sluice-Promoted-In: staging " in b for _, b in production)
    approval = act5["approval"]
    assert approval["approved_by"] and approval["commit"]
    body = subprocess.run(
        ["git", "show", "-s", "--format=%B", approval["commit"]], cwd=repo, capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip
    assert f"approved by {approval['approved_by']}" in body and "Sluice-Action: promote" in body
    # the only approval in the whole run is production's
    acts = {a["name"]: a for a in summary["acts"]}
    assert [a["name"] for a in summary["acts"] if a["approved_at"]] == ["Act 5 · production"]
    assert acts["Act 5 · production"]["failures"] == 0 and acts["Act 5 · staging"]["failures"] == 0
    # the report says it
    html = (out / "rollout.html").read_text()
    assert "Act 5" in html and f"{total:.1f} s" in html and approval["approved_by"] in html
