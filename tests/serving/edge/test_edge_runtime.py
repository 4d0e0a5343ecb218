"""The edge runtime: loads only what a device has, verifies its files, and agrees with the predictor core."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from serving.edge.manifest import EdgeBundleError, sha256_file
from serving.edge.runtime import EdgeInputError, EdgeModel, read_rows

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.timeout(60)
def test_runtime_imports_no_training_stack(edge_bundle: Path) -> None:
    script = f"""
import json, sys
from serving.edge.runtime import EdgeModel, golden_rows
model = EdgeModel.load({str(edge_bundle)!r})
result = model.predict_rows(golden_rows(model.directory))
heavy = sorted(m for m in ("sklearn", "pandas", "mlflow", "skops", "pydantic", "scipy") if m in sys.modules)
print(json.dumps({{"heavy": heavy, "rows": len(result.labels), "onnx": "onnxruntime" in sys.modules}}))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"heavy": [], "rows": 8, "onnx": True}


def test_export_writes_manifest_with_checksums(edge_bundle: Path, bundle_dir: Path) -> None:
    manifest = json.loads((edge_bundle / "manifest.json").read_text())
    names = {f["name"] for f in manifest["files"]}
    assert names == {"model.onnx", "signature.json", "metadata.json", "selftest.json"}
    for entry in manifest["files"]:
        assert sha256_file(edge_bundle / entry["name"]) == entry["sha256"]
    source = json.loads((bundle_dir / "metadata.json").read_text())
    assert manifest["model_digest"] == source["digest"]
    assert (edge_bundle / "model.onnx").read_bytes() == (bundle_dir / "model.onnx").read_bytes()


def test_predictions_match_the_predictor_core(edge_bundle: Path, bundle_dir: Path) -> None:
    from serving.core.predictor import Predictor
    from serving.edge.export import test_split

    core = Predictor.load(bundle_dir)
    X = test_split(core.bundle)
    edge = EdgeModel.load(edge_bundle).predict(X)
    expected = core.predict(core.validate(X.astype(np.float64)))
    assert np.array_equal(edge.labels, expected.labels)
    assert np.abs(edge.probabilities - expected.probabilities).max() < 1e-6


def test_records_lists_and_csv_give_the_same_answer(edge_bundle: Path, tmp_path: Path) -> None:
    model = EdgeModel.load(edge_bundle)
    row = json.loads((edge_bundle / "selftest.json").read_text())["rows"][0]
    record = dict(zip(model.feature_names, row, strict=True))
    csv_file = tmp_path / "rows.csv"
    csv_file.write_text(",".join(record) + "\n" + ",".join(repr(v) for v in record.values()) + "\n")
    a = model.predict_rows([record])
    b = model.predict_rows(row)
    c = model.predict_rows(record)  # one record
    d = model.predict_rows(read_rows(csv_file))
    assert a.labels.tolist() == b.labels.tolist() == c.labels.tolist() == d.labels.tolist()
    assert np.allclose(a.probabilities, d.probabilities)


def test_csv_cells_are_numbers_or_refused_by_line_and_column(edge_bundle: Path, tmp_path: Path) -> None:
    model = EdgeModel.load(edge_bundle)
    names = model.feature_names
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(names) + "\n" + ",".join(["1.0"] * 29 + ["big"]) + "\n")
    with pytest.raises(
        EdgeInputError, match=f"bad.csv, line 2, column {names[-1]!r}: non-numeric value 'big'"
    ):
        read_rows(bad)
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(names) + "\n" + ",".join(["1.0"] * 31) + "\n")
    with pytest.raises(EdgeInputError, match="line 2: more cells than the header"):
        read_rows(wide)


def test_edge_and_core_share_one_validator(edge_bundle: Path, bundle_dir: Path) -> None:
    """The same hostile rows get the same verdict, word for word, on a device and on a predictor."""
    from serving.core.predictor import Predictor, RequestError

    edge, core = EdgeModel.load(edge_bundle), Predictor.load(bundle_dir)
    names = core.feature_names
    hostile = [
        [[1e39] * 30],  # finite in float64, infinite in the model's float32 input
        [dict.fromkeys(names, 1.0) | {names[3]: -1e39}],
        [[1.0] * 29 + [True]],
        {n: ["1.0"] for n in names},
        [[1.0] * 29],
        [[1.0] * 30, [2.0] * 30, [float("nan")] * 30],
    ]
    for rows in hostile:
        with pytest.raises(RequestError) as on_core:
            core.validate(rows)
        with pytest.raises(EdgeInputError) as on_edge:
            edge.validate(rows)
        assert str(on_edge.value) == str(on_core.value)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.pop("mean_radius"), "missing feature 'mean_radius'"),
        (lambda r: r.update(colour=1.0), "unknown feature 'colour'"),
        (lambda r: r.update(mean_radius="big"), "feature 'mean_radius': non-numeric value 'big'"),
        (lambda r: r.update(mean_radius=float("nan")), "feature 'mean_radius': nan is not a finite number"),
        (lambda r: r.update(mean_radius=None), "feature 'mean_radius': non-numeric value None"),
        (lambda r: r.update(mean_radius="17.9"), "feature 'mean_radius': non-numeric value '17.9'"),
        (
            lambda r: r.update(mean_radius=1e39),
            "feature 'mean_radius': 1e\\+39 is beyond the range the model takes",
        ),
    ],
)
def test_bad_rows_are_refused_by_name(edge_bundle: Path, mutate, message: str) -> None:
    model = EdgeModel.load(edge_bundle)
    row = json.loads((edge_bundle / "selftest.json").read_text())["rows"][0]
    record = dict(zip(model.feature_names, row, strict=True))
    mutate(record)
    with pytest.raises(EdgeInputError, match=message.replace("(", r"\(")):
        model.predict_rows([record])


def test_tampered_file_is_refused(edge_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(edge_bundle, copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(EdgeBundleError, match=r"model\.onnx: sha256 .* the manifest says"):
        EdgeModel.load(copy)


def test_self_test_passes_on_export(edge_bundle: Path) -> None:
    result = EdgeModel.load(edge_bundle).self_test()
    assert result.passed, result.explain()
    assert result.rows == 8


def test_self_test_fails_for_a_different_model(
    edge_bundle: Path, bad_edge_bundle: Path, tmp_path: Path
) -> None:
    from serving.edge.manifest import write_manifest

    copy = tmp_path / "b"
    shutil.copytree(edge_bundle, copy)
    shutil.copyfile(bad_edge_bundle / "model.onnx", copy / "model.onnx")
    write_manifest(copy, "model.onnx", "sha256:" + "0" * 64)
    result = EdgeModel.load(copy).self_test()
    assert not result.passed
    assert result.max_probability_diff > result.tolerance
