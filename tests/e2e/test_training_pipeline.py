"""`dvc repro` end to end in a scratch repository: five stages, caching, metrics, the data and model gates."""

from __future__ import annotations

import json

import pytest
import yaml

from model.bundle import Bundle

STAGES = ["prepare", "validate", "train", "evaluate", "package"]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def ran(output: str) -> list[str]:
    return [s for s in STAGES if f"Running stage '{s}'" in output]


def test_repro_runs_five_stages_then_nothing_and_reports_metrics(scratch_repo):
    first = scratch_repo.dvc("repro")
    assert ran(first.stdout) == STAGES

    bundle = Bundle.open(scratch_repo.root / "artifacts" / "model")
    assert bundle.metadata.mlflow_run_id
    assert bundle.metadata.git_commit and len(bundle.metadata.git_commit) == 40

    second = scratch_repo.dvc("repro")
    assert ran(second.stdout) == []

    shown = json.loads(scratch_repo.dvc("metrics", "show", "--json").stdout)
    evaluate = next(v for v in shown.values())["data"]["reports/metrics/evaluate.json"]["data"]
    assert evaluate["accuracy"] > 0.9 and evaluate["gate"]["passed"] is True

    info = json.loads(scratch_repo.sluice("model", "info", "--json").stdout)
    assert info["digest"] == bundle.digest

    plots = scratch_repo.dvc("plots", "show", "--json")
    assert "reports/plots/roc.csv" in plots.stdout and "reports/plots/confusion.csv" in plots.stdout


def test_corrupted_data_stops_the_pipeline_with_a_report(scratch_repo):
    scratch_repo.dvc("repro", "prepare")
    raw = scratch_repo.root / "data" / "raw" / "breast_cancer.csv"
    lines = raw.read_text().splitlines()
    header = lines[0].split(",")
    header[header.index("mean_texture")] = "texture"  # a renamed column
    row = lines[1].split(",")
    row[0] = ""  # a null in mean_radius
    raw.write_text("\n".join([",".join(header), ",".join(row), *lines[2:]]) + "\n")

    proc = scratch_repo.dvc("repro", "--downstream", "validate", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "data validation FAILED" in out
    assert "expect_table_columns_to_match_ordered_list" in out and "'texture'" in out
    assert "expect_column_values_to_not_be_null failed on column 'mean_radius'" in out
    assert "Running stage 'train'" not in out
    assert not (scratch_repo.root / "artifacts" / "model").exists()


def test_worse_model_is_stopped_by_the_evaluate_gate_once_a_champion_exists(scratch_repo):
    scratch_repo.dvc("repro")
    promoted = scratch_repo.sluice("model", "promote-alias", "1")
    assert "sluice-classifier@champion -> version 1" in promoted.stdout
    champion = Bundle.open(scratch_repo.root / "artifacts" / "model")

    params_path = scratch_repo.root / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["data"]["label_noise"] = 0.45  # a deliberately worse model
    params_path.write_text(yaml.safe_dump(params))

    proc = scratch_repo.dvc("repro", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "evaluate gate FAILED" in out and "champion (version 1)" in out
    assert "Running stage 'package'" not in out
    report = json.loads((scratch_repo.root / "reports" / "metrics" / "evaluate.json").read_text())
    assert report["gate"]["passed"] is False
    assert report["gate"]["champion"] > report["gate"]["candidate"] + report["gate"]["tolerance"]
    # The bundle on disk is still the champion's: a failed gate packages nothing.
    assert Bundle.open(scratch_repo.root / "artifacts" / "model").digest == champion.digest
