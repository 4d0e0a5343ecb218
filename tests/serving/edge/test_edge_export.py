"""Edge export: reduced-size variants are kept only with parity and a real size saving; the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from serving.edge.export import VariantRefused, VariantReport, export
from sluice.cli import app


def _report(**kw: float) -> VariantReport:
    base = dict(
        variant="float16",
        rows=143,
        label_matches=143,
        max_probability_diff=1e-4,
        tolerance=1e-3,
        full_bytes=1000,
        variant_bytes=600,
    )
    base.update(kw)
    return VariantReport(**base)  # type: ignore[arg-type]


def test_variant_judgement() -> None:
    assert _report().accepted
    assert not _report(label_matches=142).accepted
    assert not _report(max_probability_diff=2e-3).accepted
    assert not _report(variant_bytes=1000).accepted
    assert "labels match on 142/143" in _report(label_matches=142).explain()


@pytest.mark.parametrize("variant", ["float16", "ort"])
def test_variant_is_measured_and_refused_with_numbers(bundle_dir: Path, tmp_path: Path, variant: str) -> None:
    # Neither variant makes this 30-coefficient model smaller, so both must be refused, with the numbers.
    with pytest.raises(VariantRefused) as info:
        export(str(bundle_dir), tmp_path / "out", variant=variant)  # type: ignore[arg-type]
    report = info.value.report
    assert report.rows > 100
    assert report.label_matches == report.rows  # parity itself holds for a linear model
    assert report.variant_bytes >= report.full_bytes
    assert f"/{report.rows} test rows" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_float16_parity_is_measured(bundle_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(VariantRefused) as info:
        export(str(bundle_dir), tmp_path / "out", variant="float16", tolerance=1e-12)
    assert not info.value.report.parity
    assert info.value.report.max_probability_diff > 1e-12
    assert "parity broken" in str(info.value)


def test_cli_export_and_predict(bundle_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "edge"
    result = runner.invoke(app, ["edge", "export", "--model", str(bundle_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "edge bundle" in result.output
    rows = json.loads((out / "selftest.json").read_text())
    features = [f["name"] for f in json.loads((out / "signature.json").read_text())["features"]]
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text(
        ",".join(features)
        + "\n"
        + "\n".join(",".join(repr(v) for v in row) for row in rows["rows"][:3])
        + "\n"
    )
    result = runner.invoke(app, ["edge", "predict", "--bundle", str(out), "--input", str(csv_path)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.strip().splitlines()]
    assert [line["prediction"] for line in lines] == rows["labels"][:3]


def test_cli_predict_names_bad_input(edge_bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "rows.json"
    bad.write_text(json.dumps([{"mean_radius": 1.0}]))
    result = CliRunner().invoke(app, ["edge", "predict", "--bundle", str(edge_bundle), "--input", str(bad)])
    assert result.exit_code == 1
    assert "missing feature" in result.output


def test_cli_refuses_unknown_variant(bundle_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["edge", "export", "--model", str(bundle_dir), "--out", str(tmp_path / "o"), "--variant", "int3"]
    )
    assert result.exit_code == 1
    assert "int3" in result.output
