"""The gate benchmark at a tiny scale, so that it cannot rot: it runs, writes its results and plots, and its
simulation reproduces what it is there to show (the old point thresholds roll back an identical candidate
often; the new gates do not; the bandit loses less to a worse candidate than a 50/50 split)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_gate_benchmark_at_a_tiny_scale(tmp_path: Path) -> None:
    from benchmarks import gates

    gates.main(tmp_path, runs=30, policies=("local",), workers=1)
    data = json.loads((tmp_path / "gates.json").read_text())
    rows = {(r["kind"], r["candidate"]): r["methods"] for r in data["gates"]}
    assert {r["policy"] for r in data["gates"]} == {"local"}
    kinds = {"accuracy", "disagreement", "latency", "success_rate", "policy", "promql"}
    assert {k for k, _ in rows} == kinds and all((k, "worse") in rows for k in kinds)
    assert all(m[d]["runs"] == 30 for m in rows.values() for d in ("old", "fixed", "new"))
    # the failure, reproduced: a point threshold on a few seconds of traffic rolls back an identical model
    assert rows[("accuracy", "identical")]["old"]["wrong"] > 0.2
    assert rows[("policy", "identical")]["new"]["wrong"] <= 0.05
    assert rows[("policy", "worse")]["new"]["wrong"] <= 0.05
    # a cold start only matters without the warm-up
    assert (
        rows[("latency", "cold-start")]["new"]["wrong"]
        < rows[("latency", "cold-start-no-warmup")]["new"]["wrong"]
    )
    same = next(r for r in data["gates"] if r["kind"] == "policy" and r["candidate"] == "identical")[
        "same_power"
    ]
    assert 0.9 <= same["power"] < 1 and same["seconds"] > 0
    bandit = {b["name"]: b for b in data["bandit"]}
    worse = bandit["candidate 5 points worse"]
    assert worse["regret_per_run"] < worse["ab_regret_per_run"] and worse["wrong_stop"] <= 0.1
    text = (tmp_path / "gates.md").read_text()
    assert "| local | accuracy | identical |" in text and "Bandit (Thompson sampling)" in text
    for name in ("gates.png", "gates_time.png", "bandit.png"):
        assert (tmp_path / name).stat().st_size > 10_000
