"""Your data, your model: `dvc repro` on three datasets, each configured by commands and files only.

- the default binary set (scikit-learn's breast cancer), as the repository ships it;
- a multiclass table with numeric, categorical and boolean features, each with missing values (written here,
  tracked with DVC and profiled by `sluice model profile`);
- scikit-learn's diabetes set as a regression (`sluice model profile builtin:diabetes`).

One repro per dataset (a module-scoped fixture) serves every test of it: metrics for the task, ONNX parity,
the signature, serving over both protocols, MLflow's own server agreeing with Sluice, and a unit-changed
column refused by validation.
"""

from __future__ import annotations

import filecmp
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from sample_tables import SPECIES, penguins
from scratch_repo import REPO, ScratchRepo, make_scratch
from testkit.services import free_port

from model.bundle import Bundle, onnx_feeds
from model.contract import load_contract

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


@dataclass(frozen=True)
class Dataset:
    name: str
    task: str
    configure: Callable[[ScratchRepo], None]
    unit_change: tuple[str, float]  # a column and the factor a unit change multiplies it by


def _nothing(repo: ScratchRepo) -> None:
    """The default: the repository as it ships."""


def _penguins(repo: ScratchRepo) -> None:
    penguins().to_csv(repo.root / "data" / "source" / "penguins.csv", index=False)
    repo.sluice(
        "model",
        "profile",
        "data/source/penguins.csv",
        "--target",
        "species",
        "--drop",
        "penguin_id",
        "--force",
    )


def _diabetes(repo: ScratchRepo) -> None:
    repo.sluice("model", "profile", "builtin:diabetes", "--target", "target", "--force")


DATASETS = {
    "breast_cancer": Dataset("breast_cancer", "binary", _nothing, ("mean_area", 0.01)),
    "penguins": Dataset("penguins", "multiclass", _penguins, ("body_mass_g", 0.001)),  # grams -> kilograms
    "diabetes": Dataset("diabetes", "regression", _diabetes, ("bmi", 100.0)),
}


@dataclass
class Repro:
    dataset: Dataset
    repo: ScratchRepo
    output: str
    bundle: Bundle


# One repro per dataset serves all the tests of it: they share an xdist worker (make test: --dist loadgroup),
# and the three datasets' repros run side by side on different workers.
@pytest.fixture(
    scope="module",
    params=[pytest.param(name, marks=pytest.mark.xdist_group(f"your-data-{name}")) for name in DATASETS],
)
def repro(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Repro:
    dataset = DATASETS[request.param]
    repo = make_scratch(tmp_path_factory.mktemp(dataset.name) / "repo")
    dataset.configure(repo)
    repo.run("git", "add", "-A")
    repo.git("commit", "-qm", f"data: {dataset.name}", check=False)
    proc = repo.dvc("repro")
    return Repro(dataset, repo, proc.stdout, Bundle.open(repo.root / "artifacts" / "model"))


def test_repro_trains_by_configuration_only(repro: Repro) -> None:
    for stage in ("prepare", "validate", "train", "evaluate", "package"):
        assert f"Running stage '{stage}'" in repro.output
    # No Python was edited: the scratch repository's model/ is the repository's.
    compared = filecmp.dircmp(REPO / "model", repro.repo.root / "model", ignore=["__pycache__"])
    assert not compared.diff_files and not compared.left_only and not compared.right_only
    scores = json.loads((repro.repo.root / "reports" / "metrics" / "evaluate.json").read_text())
    assert scores["task"] == repro.dataset.task
    if repro.dataset.task == "binary":
        assert scores["accuracy"] > 0.9 and scores["roc_auc"] > 0.95
    elif repro.dataset.task == "multiclass":
        assert {"accuracy", "macro_f1", "log_loss"} <= set(scores) and "roc_auc" not in scores
        assert scores["accuracy"] > 0.8 and scores["macro_f1"] > 0.75
    else:
        assert {"rmse", "mae", "r2"} <= set(scores) and "accuracy" not in scores
        assert scores["rmse"] < 65 and scores["mae"] < 55 and scores["r2"] > 0.3
    assert "registered as sluice-classifier version 1" in repro.output


def _test_split(repro: Repro) -> tuple[pd.DataFrame, pd.Series]:
    contract = load_contract(repro.repo.root / "contract.yaml")
    from model.data import read_split

    return read_split(repro.repo.root / "data" / "prepared" / "test.csv", contract)


def test_onnx_matches_scikit_learn_on_the_test_split(repro: Repro) -> None:
    import onnxruntime as ort

    X, _ = _test_split(repro)
    model = repro.bundle.load_sklearn()
    signature = repro.bundle.signature
    session = ort.InferenceSession(str(repro.bundle.onnx_path), providers=["CPUExecutionProvider"])
    outputs = session.run(signature.onnx_outputs, onnx_feeds(signature, X))
    parity = repro.bundle.metrics["onnx_parity"]
    assert parity["rows"] == len(X)
    if signature.is_classifier:
        assert (np.asarray(outputs[0]).reshape(-1) == model.predict(X)).all()
        assert np.abs(outputs[1] - model.predict_proba(X)).max() < 1e-4
        assert parity["label_matches"] == len(X) and parity["max_probability_diff"] < 1e-4
    else:
        predicted = model.predict(X)
        relative = np.abs(np.asarray(outputs[0]).reshape(-1) - predicted) / np.maximum(1.0, np.abs(predicted))
        assert relative.max() < 1e-4 and parity["max_prediction_diff"] < 1e-4


def test_the_signature_carries_types_and_categories(repro: Repro) -> None:
    signature = repro.bundle.signature
    assert signature.task == repro.dataset.task
    if repro.dataset.name == "penguins":
        assert signature.classes == list(SPECIES) and signature.layout == "columns"
        island = next(f for f in signature.features if f.name == "island")
        assert (island.type, island.dtype, island.nullable) == ("categorical", "string", True)
        assert island.categories == ["Biscoe", "Dream", "Torgersen"]
        adult = next(f for f in signature.features if f.name == "adult")
        assert (adult.type, adult.nullable) == ("boolean", True)
        assert "penguin_id" not in signature.feature_names
        assert len(signature.onnx_inputs or []) == len(signature.features)
    elif repro.dataset.name == "diabetes":
        assert signature.classes == [] and signature.onnx_outputs == ["variable"]
        assert all(f.type == "numeric" for f in signature.features)
    else:
        assert signature.classes == [0, 1] and signature.layout == "matrix" and len(signature.features) == 30


def test_a_unit_changed_column_fails_validation(repro: Repro, tmp_path: Path) -> None:
    column, factor = repro.dataset.unit_change
    copy = ScratchRepo(
        shutil.copytree(repro.repo.root, tmp_path / "repo", symlinks=True), dict(repro.repo.env)
    )
    if repro.dataset.name == "penguins":  # a new version of the source file: the real path, through dvc repro
        source = copy.root / "data" / "source" / "penguins.csv"
        frame = pd.read_csv(source)
        frame[column] = frame[column] * factor
        frame.to_csv(source, index=False)
        proc = copy.dvc("repro", check=False)
    else:  # a built-in source cannot change: the raw table the stage validates does
        raw = copy.root / "data" / "raw" / "table.csv"
        frame = pd.read_csv(raw)
        frame[column] = frame[column] * factor
        frame.to_csv(raw, index=False)
        proc = copy.sluice("model", "validate", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "data validation FAILED" in out and "data/raw/table.csv against" in out and "contract.yaml" in out
    assert f"expect_column_quantile_values_to_be_between failed on column '{column}'" in out
    assert "Running stage 'train'" not in out
    median = float(np.quantile(frame[column].dropna(), 0.5, method="nearest"))
    assert f"quantile 0.5 is {median:.6g}" in out


def _json_rows(repro: Repro, n: int = 12) -> list[dict[str, Any]]:
    """Test-split rows as a JSON client sends them: null for missing, true/false, text, numbers."""
    signature = repro.bundle.signature
    frame = pd.read_csv(
        repro.repo.root / "data" / "prepared" / "test.csv", dtype=signature.read_dtypes() or None
    )
    rows = []
    for record in frame.head(n).to_dict(orient="records"):
        row: dict[str, Any] = {}
        for f in signature.features:
            value = record[f.name]
            missing = value is None or (isinstance(value, float) and math.isnan(value))
            row[f.name] = None if missing else bool(value) if f.type == "boolean" else value
        rows.append(row)
    return rows


def _start(repo: ScratchRepo, command: list[str], port: int, ready: str) -> subprocess.Popen[bytes]:
    env = {**repo.env, "MLFLOW_TRACKING_URI": f"sqlite:///{repo.root / 'mlflow.db'}"}
    process = subprocess.Popen(
        command,
        cwd=repo.root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"{command[:3]} exited {process.returncode}: {process.stderr.read()[-2000:]!r}"
            )  # type: ignore[union-attr]
        try:
            if httpx.get(f"http://127.0.0.1:{port}{ready}", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    _stop(process)
    raise AssertionError(f"{command[:3]} not ready on port {port} after 120 s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def test_served_from_the_registry_over_both_protocols_and_by_mlflow_alike(repro: Repro) -> None:
    """`models:/sluice-classifier/1` to `sluice serve` and to `mlflow models serve`: the same answers."""
    signature = repro.bundle.signature
    uri = "models:/sluice-classifier/1"
    rows = _json_rows(repro)
    sluice_port, mlflow_port = free_port(), free_port()
    sluice = _start(
        repro.repo,
        [sys.executable, "-m", "sluice", "serve", "--model", uri, "--port", str(sluice_port)],
        sluice_port,
        "/v2/health/ready",
    )
    try:
        mlflow = _start(
            repro.repo,
            [
                str(Path(sys.executable).parent / "mlflow"),
                "models",
                "serve",
                "-m",
                uri,
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(mlflow_port),
            ],
            mlflow_port,
            "/ping",
        )
    except BaseException:
        _stop(sluice)
        raise
    try:
        base = f"http://127.0.0.1:{sluice_port}"
        v1 = httpx.post(f"{base}/api/v1.0/predictions", json={"jsonData": rows}, timeout=30)
        assert v1.status_code == 200, v1.text
        if signature.layout == "columns":  # one tensor per feature
            datatype = {"numeric": "FP64", "boolean": "BOOL", "categorical": "BYTES"}
            inputs = [
                {
                    "name": f.name,
                    "shape": [len(rows)],
                    "datatype": datatype[f.type],
                    "data": [r[f.name] for r in rows],
                }
                for f in signature.features
            ]
        else:
            matrix = [[r[n] for n in signature.feature_names] for r in rows]
            inputs = [
                {"name": "input", "shape": [len(rows), len(matrix[0])], "datatype": "FP64", "data": matrix}
            ]
        v2 = httpx.post(f"{base}/v2/models/sluice-classifier/infer", json={"inputs": inputs}, timeout=30)
        assert v2.status_code == 200, v2.text
        outputs = {o["name"]: o for o in v2.json()["outputs"]}

        columns = list(rows[0])
        split = {"columns": columns, "data": [[r[c] for c in columns] for r in rows]}
        answer = httpx.post(
            f"http://127.0.0.1:{mlflow_port}/invocations", json={"dataframe_split": split}, timeout=60
        )
        assert answer.status_code == 200, answer.text
        by_mlflow = pd.DataFrame(answer.json()["predictions"])
        if signature.is_classifier:
            sluice_probabilities = np.asarray(v1.json()["jsonData"]["probabilities"])
            v2_probabilities = np.reshape(outputs["probabilities"]["data"], outputs["probabilities"]["shape"])
            np.testing.assert_allclose(v2_probabilities, sluice_probabilities, atol=1e-6)
            assert list(by_mlflow.columns) == [str(c) for c in signature.classes]
            np.testing.assert_allclose(by_mlflow.to_numpy(), sluice_probabilities, atol=1e-6)
            assert outputs["label"]["data"] == v1.json()["jsonData"]["labels"]
        else:
            values = np.asarray(v1.json()["jsonData"]["predictions"])
            np.testing.assert_allclose(outputs["prediction"]["data"], values, rtol=1e-9)
            np.testing.assert_allclose(by_mlflow["prediction"], values, rtol=1e-6)
        text = [f.name for f in signature.features if f.type == "categorical"]
        if text:  # a category the contract does not list: refused by both, with a 400 that names it
            hostile = {**rows[0], text[0]: "Atlantis"}
            refused = httpx.post(f"{base}/api/v1.0/predictions", json={"jsonData": [hostile]}, timeout=30)
            assert refused.status_code == 400 and "'Atlantis' is not one of its categories" in refused.text
            split = {"columns": columns, "data": [[hostile[c] for c in columns]]}
            refused = httpx.post(
                f"http://127.0.0.1:{mlflow_port}/invocations", json={"dataframe_split": split}, timeout=60
            )
            assert refused.status_code == 400 and "'Atlantis' is not one of its categories" in refused.text
    finally:
        _stop(mlflow)
        _stop(sluice)
