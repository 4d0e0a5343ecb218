"""`dvc repro` end to end in a scratch repository: five stages, caching, metrics, declared dependencies,
experiments that register nothing, and the data and model gates."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass

import pytest
import yaml
from scratch_repo import ScratchRepo, make_scratch

from model.bundle import Bundle

STAGES = ["prepare", "validate", "train", "evaluate", "package"]
# One scratch repository taken through a fixed sequence serves the tests: keep them on one xdist worker.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900), pytest.mark.xdist_group("training-pipeline")]


def ran(output: str) -> list[str]:
    return [s for s in STAGES if f"Running stage '{s}'" in output]


def versions(repo: ScratchRepo) -> list[str]:
    from model.registry import Registry

    registry = Registry(repo.root, tracking_uri=f"sqlite:///{repo.root / 'mlflow.db'}")
    return sorted(str(v.version) for v in registry.client.search_model_versions("name = 'sluice-classifier'"))


@dataclass
class Run:
    """One scratch repository taken through a fixed sequence; each test reads the step it is about."""

    repo: ScratchRepo
    first: str
    second: str
    metrics: dict
    plots: str
    traced: dict[str, list[str]]
    bundle: Bundle
    after_repro: list[str]
    experiment: str
    after_experiment: list[str]
    runs_after_experiment: int
    pinned_status: str
    worse_returncode: int
    worse: str


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    base = tmp_path_factory.mktemp("pipeline")
    repo = make_scratch(base / "repo")
    repo.trace_imports(base / "imports")
    first = repo.dvc("repro").stdout
    traced = repo.traced(base / "imports")
    second = repo.dvc("repro").stdout
    metrics = json.loads(repo.dvc("metrics", "show", "--json").stdout)
    plots = repo.dvc("plots", "show", "--json").stdout
    bundle = Bundle.open(shutil.copytree(repo.root / "artifacts" / "model", base / "first-bundle"))
    after_repro = versions(repo)
    repo.git("commit", "-qam", "first model")

    # In a temporary copy, as queued experiments run: MLflow still records to the repository's store.
    experiment = repo.dvc("exp", "run", "--temp", "-S", "train.logistic_regression.C=0.5")
    after_experiment = versions(repo)
    runs_after_experiment = int(
        repo.run(
            sys.executable, "-c", "import mlflow; print(len(mlflow.search_runs(experiment_names=['sluice'])))"
        ).stdout.split()[-1]
    )

    repo.sluice("model", "promote-alias", "1")
    pinned_status = repo.dvc("status", "--json").stdout
    params_path = repo.root / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["data"]["label_noise"] = 0.45  # a deliberately worse model
    params_path.write_text(yaml.safe_dump(params))
    worse = repo.dvc("repro", check=False)
    return Run(
        repo,
        first,
        second,
        metrics,
        plots,
        traced,
        bundle,
        after_repro,
        experiment.stdout + experiment.stderr,
        after_experiment,
        runs_after_experiment,
        pinned_status,
        worse.returncode,
        worse.stdout + worse.stderr,
    )


def test_repro_runs_five_stages_then_nothing_and_reports_metrics(run):
    assert ran(run.first) == STAGES
    assert ran(run.second) == []
    assert run.bundle.metadata.mlflow_run_id
    assert run.bundle.metadata.git_commit and len(run.bundle.metadata.git_commit) == 40
    shown = next(iter(run.metrics.values()))["data"]
    evaluate = shown["reports/metrics/evaluate.json"]["data"]
    assert evaluate["task"] == "binary" and evaluate["accuracy"] > 0.9
    assert shown["reports/metrics/gate.json"]["data"]["passed"] is True
    plots = json.loads(run.plots)
    assert "errors" not in plots  # the regression's plot folder is empty, and that is no error
    assert set(plots["data"]) == {"reports/plots/roc/roc.csv", "reports/plots/confusion/confusion.csv"}
    assert run.after_repro == ["1"]


def test_every_model_module_a_stage_imports_is_one_of_its_dependencies(run):
    stages = yaml.safe_load((run.repo.root / "dvc.yaml").read_text())["stages"]
    assert set(run.traced) == set(STAGES)
    for stage, modules in run.traced.items():
        imported = {m.replace(".", "/") + ".py" for m in modules if m != "model"}
        declared = {d for d in stages[stage]["deps"] if d.startswith("model/")}
        assert imported - declared == set(), f"{stage} imports modules dvc.yaml does not list"
        assert declared - imported == set(), f"{stage} lists modules it does not import"
    # the modules the pipeline was found not to re-run for
    assert {"model/serialization.py", "model/bundle.py"} <= set(stages["package"]["deps"])
    assert "model/serialization.py" in stages["train"]["deps"]


def test_dvc_exp_run_trains_and_packages_but_registers_no_version(run):
    assert "not registered (registry.register_experiments is false" in run.experiment
    assert run.after_experiment == run.after_repro == ["1"]
    assert (
        run.runs_after_experiment == 2
    )  # the experiment's run landed in the repository's store all the same


def test_the_pinned_champion_is_a_declared_dependency_of_evaluate(run):
    status = json.loads(run.pinned_status)
    changed = [entry["changed deps"] for entry in status.get("evaluate", []) if "changed deps" in entry]
    assert changed and changed[0]["params.yaml"] == {"evaluate.champion": "modified"}
    assert "package" not in status  # pinning re-runs the gate, not the packaging (no new version)
    pin = yaml.safe_load((run.repo.root / "params.yaml").read_text())["evaluate"]["champion"]
    assert pin == {"version": "1", "digest": run.bundle.digest}


def test_a_worse_model_is_stopped_by_the_gate_against_the_pinned_champion(run):
    assert run.worse_returncode != 0
    assert "evaluate gate FAILED" in run.worse and "champion (version 1)" in run.worse
    assert "Running stage 'package'" not in run.worse
    gate = json.loads((run.repo.root / "reports" / "metrics" / "gate.json").read_text())
    assert gate["passed"] is False and gate["champion_version"] == "1"
    assert gate["champion"] > gate["candidate"] + gate["tolerance"]
    # what `sluice loop` reads to record the retrain as rejected by a verdict (not a crash, which is retried)
    from monitor.loop import _gate_failed

    said = _gate_failed(run.repo.root, since=0.0)
    assert said is not None and said.startswith("evaluate gate FAILED: candidate "), said
    # The bundle on disk is still the champion's: a failed gate packages nothing.
    assert Bundle.open(run.repo.root / "artifacts" / "model").digest == run.bundle.digest


def test_corrupted_data_stops_the_pipeline_with_a_report(scratch_repo):
    scratch_repo.dvc("repro", "prepare")
    raw = scratch_repo.root / "data" / "raw" / "table.csv"
    lines = raw.read_text().splitlines()
    header = lines[0].split(",")
    header[header.index("mean_texture")] = "texture"  # a renamed column
    row = lines[1].split(",")
    row[0] = ""  # a null in mean_radius
    raw.write_text("\n".join([",".join(header), ",".join(row), *lines[2:]]) + "\n")

    proc = scratch_repo.dvc("repro", "--downstream", "validate", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "data validation FAILED" in out and "data/raw/table.csv against" in out
    assert "expect_table_columns_to_match_set failed on table" in out
    assert "missing 'mean_texture'; unexpected 'texture'" in out
    assert "expect_column_values_to_not_be_null failed on column 'mean_radius'" in out
    assert "Running stage 'train'" not in out
    assert not (scratch_repo.root / "artifacts" / "model").exists()
