"""Edge bundles of a model with text, boolean and missing values, and of a regression: exported, verified,
self-tested, and answering like the predictor core, on numpy and onnxruntime alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from serving.core.predictor import Predictor
from serving.edge import export as edge_export
from serving.edge.runtime import EdgeInputError, EdgeModel, read_rows

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def mixed_edge(mixed_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("edge") / "mixed"
    # The split is recreated from the bundle's params: its data source lives under the bundle's work dir.
    edge_export.export(str(mixed_bundle_dir), out, root=mixed_bundle_dir.parent)
    return out


@pytest.fixture(scope="module")
def regression_edge(regression_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("edge") / "regression"
    edge_export.export(str(regression_bundle_dir), out)
    return out


def test_a_mixed_edge_bundle_self_tests_and_matches_the_core(
    mixed_edge: Path, mixed_bundle_dir: Path
) -> None:
    model = EdgeModel.load(mixed_edge)
    assert model.self_test().passed
    golden = json.loads((mixed_edge / "selftest.json").read_text())["rows"]
    assert any(v is None for row in golden for v in row) and any(
        isinstance(v, str) for row in golden for v in row
    )
    core = Predictor.load(mixed_bundle_dir)
    X = edge_export.test_split(core.bundle, root=mixed_bundle_dir.parent)
    edge = model.predict(X)
    expected = core.predict(X)
    assert edge.labels.tolist() == expected.labels.tolist()
    assert np.abs(edge.probabilities - expected.probabilities).max() < 1e-6


@pytest.mark.timeout(60)
def test_the_runtime_reads_a_mixed_csv_with_numpy_and_onnxruntime_alone(
    mixed_edge: Path, tmp_path: Path
) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text(
        "bill_length_mm,flipper length,body_mass_g,island,sex,adult\n"
        "39.1,181,3750,Torgersen,male,True\n"
        ",210,,Biscoe,,\n"  # missing values where the contract allows them
    )
    script = f"""
import json, sys
from pathlib import Path
from serving.edge.runtime import EdgeModel, read_rows
model = EdgeModel.load({str(mixed_edge)!r})
result = model.predict_rows(read_rows(Path({str(rows)!r}), model.features))
heavy = sorted(m for m in ("sklearn", "pandas", "mlflow", "skops", "pydantic", "scipy") if m in sys.modules)
print(json.dumps({{"heavy": heavy, "labels": result.labels.tolist()}}))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [] and len(report["labels"]) == 2
    assert set(report["labels"]) <= {"Adelie", "Chinstrap", "Gentoo"}


def test_the_edge_refuses_what_the_contract_refuses(mixed_edge: Path, tmp_path: Path) -> None:
    model = EdgeModel.load(mixed_edge)
    rows = tmp_path / "rows.csv"
    rows.write_text(
        "bill_length_mm,flipper length,body_mass_g,island,sex,adult\n39.1,181,3750,Atlantis,male,true\n"
    )
    with pytest.raises(EdgeInputError, match="feature 'island': 'Atlantis' is not one of its categories"):
        model.predict_rows(read_rows(rows, model.features))
    rows.write_text(
        "bill_length_mm,flipper length,body_mass_g,island,sex,adult\n39.1,181,3750,Dream,male,perhaps\n"
    )
    with pytest.raises(EdgeInputError, match=r"line 2, column 'adult': 'perhaps' is not a boolean"):
        read_rows(rows, model.features)
    rows.write_text(
        "bill_length_mm,flipper length,body_mass_g,island,sex,adult\n39.1,,3750,Dream,male,true\n"
    )
    with pytest.raises(EdgeInputError, match="feature 'flipper length': missing"):
        model.predict_rows(read_rows(rows, model.features))


def test_a_regression_edge_bundle_answers_values(regression_edge: Path, regression_bundle_dir: Path) -> None:
    model = EdgeModel.load(regression_edge)
    assert model.self_test().passed and not model.is_classifier
    core = Predictor.load(regression_bundle_dir)
    X = edge_export.test_split(core.bundle)
    np.testing.assert_allclose(
        model.predict(X).labels, core.predict(core.validate(X.astype(np.float64))).labels, rtol=1e-6
    )
    out = subprocess.run(
        [sys.executable, "-m", "serving.edge.runtime", "--bundle", str(regression_edge)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    answers = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(answers) == 8 and all(set(a) == {"prediction"} for a in answers)
