"""`sluice demo --fast` end to end: the outcomes, zero failed client requests, one commit per traffic change,
and a report whose numbers match the commits and the request log."""

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
    }
    assert summary["client"]["failures"] == 0
    assert summary["client"]["requests"] > 500
    for act in summary["acts"]:
        assert act["requests"] > 0 and act["failures"] == 0
        if act["outcome"] == "rolled back":
            assert act["rollback_seconds"] is not None and 0 <= act["rollback_seconds"] < 10


def test_one_commit_per_traffic_change_and_the_champion_moved(demo):
    out, summary = demo
    repo = out / "work" / "repo"
    decisions = [d for a in summary["acts"] for d in a["decisions"]]
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
        last = act["decisions"][-1]
        if act["outcome"] == "rolled back":
            assert last["action"] == "rollback" and last["weights"] == {act["stable"]: 100.0}
    # the promotion moved MLflow's champion to the candidate's version
    from model.registry import Registry

    registry = Registry(repo)
    assert registry.alias("sluice-classifier", "champion").version == "2"
    assert registry.alias("sluice-classifier", "previous").version == "1"


def test_report_numbers_match_the_request_log(demo):
    out, summary = demo
    with (out / "requests.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == summary["client"]["requests"]
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
