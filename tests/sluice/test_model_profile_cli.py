"""`sluice model profile` and `sluice model champion` in a real git + DVC repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from sample_tables import penguins

from model.contract import load_contract

REPO = Path(__file__).resolve().parents[2]


def run(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "GX_ANALYTICS_ENABLED": "false"}
    proc = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def sluice(root: Path, *args: str, check: bool = True) -> Result:
    """The CLI in this process (the libraries are imported once), run from `root`."""
    from typer.testing import CliRunner

    from sluice.cli import app

    cwd = Path.cwd()
    os.chdir(root)
    try:
        result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    finally:
        os.chdir(cwd)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    if check and result.exit_code != 0:
        raise AssertionError(f"sluice {' '.join(args)} exited {result.exit_code}\n{result.output}")
    return Result(result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # the repository's own sqlite store, whatever the shell running the tests points MLflow at
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("params.yaml", "contract.yaml", "dvc.yaml", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    (root / "data" / "source").mkdir(parents=True)
    run(root, "git", "init", "-q", "-b", "main")
    run(root, sys.executable, "-m", "dvc", "init", "-q")
    run(root, sys.executable, "-m", "dvc", "config", "core.autostage", "true")
    return root


def test_profile_writes_the_contract_tracks_the_file_and_points_params_at_it(repo: Path) -> None:
    penguins().to_csv(repo / "data" / "source" / "penguins.csv", index=False)
    before = (repo / "params.yaml").read_text()
    out = sluice(
        repo,
        "model",
        "profile",
        "data/source/penguins.csv",
        "-t",
        "species",
        "--drop",
        "penguin_id",
        "--force",
    ).stdout
    assert "wrote" in out and "task multiclass on 'species'" in out
    assert "6 features (3 numeric, 2 categorical, 1 boolean)" in out
    assert "tracked with `dvc add data/source/penguins.csv`" in out
    assert (repo / "data" / "source" / "penguins.csv.dvc").exists()
    staged = run(repo, "git", "diff", "--cached", "--name-only").stdout.split()
    assert "data/source/penguins.csv.dvc" in staged  # core.autostage: ready to commit

    contract = load_contract(repo / "contract.yaml")
    assert contract.ignored == ["penguin_id"] and contract.layout == "columns"
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["data"]["source"] == "data/source/penguins.csv"
    assert params["train"]["model"] == "logistic_regression"  # a classifier already: left alone
    assert params["evaluate"]["gate_metric"] == "macro_f1"  # roc_auc is binary only: fitted to the task
    assert "params.yaml: evaluate.gate_metric = macro_f1" in out
    # the file's comments survive the update
    assert before.splitlines()[0] == (repo / "params.yaml").read_text().splitlines()[0]

    again = sluice(
        repo,
        "model",
        "profile",
        "data/source/penguins.csv",
        "-t",
        "species",
        "--drop",
        "penguin_id",
        "--force",
    ).stdout
    assert "already tracked by DVC (data/source/penguins.csv.dvc)" in again


def test_a_regression_set_fits_the_model_and_metric_to_its_task(repo: Path) -> None:
    out = sluice(repo, "model", "profile", "builtin:diabetes", "--target", "target", "--force").stdout
    assert "task regression on 'target'" in out and "tracked" not in out
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["data"]["source"] == "builtin:diabetes"
    assert (params["train"]["model"], params["evaluate"]["gate_metric"]) == ("ridge", "rmse")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["builtin:iris", "-t", "target"], "contract.yaml: exists; --force replaces it"),
        (["builtin:iris", "-t", "species", "--force"], "no target column 'species'"),
        (
            ["builtin:iris", "-t", "target", "--task", "ordinal", "--force"],
            "--task 'ordinal': expected one of",
        ),
        (["builtin:titanic", "-t", "target", "--force"], "unknown built-in set 'titanic'"),
        (["data/source/nope.csv", "-t", "y", "--force"], "nope.csv: no such file"),
    ],
)
def test_profile_errors_name_what_is_wrong(repo: Path, args: list[str], message: str) -> None:
    before = (repo / "contract.yaml").read_text()
    proc = sluice(repo, "model", "profile", *args, check=False)
    assert proc.returncode == 1
    assert message in " ".join(proc.stderr.split())
    assert (repo / "contract.yaml").read_text() == before  # nothing half-written


def test_a_file_outside_data_source_is_profiled_but_not_made_the_source(repo: Path) -> None:
    penguins().to_csv(repo / "elsewhere.csv", index=False)
    out = sluice(
        repo, "model", "profile", "elsewhere.csv", "-t", "species", "--drop", "penguin_id", "--force"
    ).stdout
    assert (
        "params.yaml left as it is: data.source 'elsewhere.csv': a file source must be under data/source/"
        in " ".join(out.split())
    )
    assert yaml.safe_load((repo / "params.yaml").read_text())["data"]["source"] == "builtin:breast_cancer"
    assert not (repo / "elsewhere.csv.dvc").exists()


def test_champion_unpin_and_pin_without_a_registry_champion(repo: Path) -> None:
    proc = sluice(repo, "model", "champion", "--pin", check=False)
    assert proc.returncode == 1 and "has no @champion in the registry to pin" in proc.stderr
    shown = sluice(repo, "model", "champion").stdout
    assert "pinned (params.yaml): none" in shown and "registry @champion: none" in shown
    assert "evaluate.champion cleared" in sluice(repo, "model", "champion", "--unpin").stdout


def test_a_file_git_already_tracks_is_refused_before_anything_is_written(repo: Path) -> None:
    penguins().to_csv(repo / "data" / "source" / "penguins.csv", index=False)
    run(repo, "git", "add", "data/source/penguins.csv")
    run(repo, "git", "-c", "user.email=t@sluice.invalid", "-c", "user.name=t", "commit", "-qm", "csv in git")
    before = (repo / "contract.yaml").read_text(), (repo / "params.yaml").read_text()
    proc = sluice(
        repo,
        "model",
        "profile",
        "data/source/penguins.csv",
        "-t",
        "species",
        "--drop",
        "penguin_id",
        "--force",
        check=False,
    )
    assert proc.returncode == 1
    assert (
        "`dvc add data/source/penguins.csv` failed" in proc.stderr and "already tracked by SCM" in proc.stderr
    )
    assert ((repo / "contract.yaml").read_text(), (repo / "params.yaml").read_text()) == before
    # --no-track profiles it all the same (a small table kept in Git is the user's call)
    sluice(
        repo,
        "model",
        "profile",
        "data/source/penguins.csv",
        "-t",
        "species",
        "--drop",
        "penguin_id",
        "--force",
        "--no-track",
    )
    assert load_contract(repo / "contract.yaml").target.name == "species"
