"""The end-to-end gate benchmark at a tiny scale, so that it cannot rot: one real rollout through `sluice up`
runs, is counted, and both results files are written with counts that add up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.xdist_group("gates-e2e")
def test_the_end_to_end_gate_benchmark_at_a_tiny_scale(tmp_path: Path, bundle_dir: Path) -> None:
    from benchmarks import gates_e2e

    gates_e2e.main(tmp_path, runs=1, pairs=[("canary", "worse")], bundle=bundle_dir)
    data = json.loads((tmp_path / "gates_e2e.json").read_text())
    assert data["runs"] == 1 and data["policy"] == "policies/local.yaml"
    [row] = data["results"]
    assert (row["strategy"], row["candidate"], row["runs"]) == ("canary", "worse", 1)
    assert row["promoted"] + row["rolled_back"] + row["undecided"] == 1 == len(row["outcomes"])
    assert row["rolled_back"] == 1, row["outcomes"]
    assert 0 < row["median_s"] == row["max_s"] <= data["timeout_s"]
    assert row["commits"] == row["outcomes"][0]["commits"] >= 2
    text = (tmp_path / "gates_e2e.md").read_text()
    assert "| canary | worse | 1 | 0 | 1 | 0 | **0** |" in text and "load average" in text


def test_the_run_count_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import gates_e2e

    monkeypatch.delenv(gates_e2e.RUNS_VAR, raising=False)
    assert gates_e2e.runs_from_env() == 5
    monkeypatch.setenv(gates_e2e.RUNS_VAR, "2")
    assert gates_e2e.runs_from_env() == 2
    for bad in ("two", "0", "-1"):
        monkeypatch.setenv(gates_e2e.RUNS_VAR, bad)
        with pytest.raises(ValueError, match=f"{gates_e2e.RUNS_VAR}='{bad}'"):
            gates_e2e.runs_from_env()
