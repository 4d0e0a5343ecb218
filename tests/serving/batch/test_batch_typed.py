"""Batch scoring of a model with text, boolean and missing values, and of a regression, in every format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model.bundle import Bundle
from model.contract import typed_frame
from serving.batch.score import score_file
from serving.core.predictor import Predictor


@pytest.fixture(scope="module")
def mixed(mixed_bundle_dir: Path) -> tuple[Predictor, pd.DataFrame, pd.DataFrame]:
    """The predictor, the test split as written on disk (with its ID column), and scikit-learn's answers."""
    bundle = Bundle.open(mixed_bundle_dir)
    text = {f.name: str for f in bundle.signature.features if f.type == "categorical"}
    frame = pd.read_csv(mixed_bundle_dir.parent / "data" / "prepared" / "test.csv", dtype=text)
    frame = frame.drop(columns=["species"])
    model = bundle.load_sklearn()
    typed = typed_frame(frame, bundle.signature.features, "test")
    expected = pd.DataFrame(model.predict_proba(typed), columns=[f"probability_{c}" for c in model.classes_])
    expected["prediction"] = model.predict(typed)
    return Predictor(bundle), frame, expected


def _read(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype={"island": str, "sex": str})
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_json(path, lines=True, dtype=False)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_mixed_rows_are_scored_like_scikit_learn(mixed, tmp_path: Path, suffix: str) -> None:
    predictor, frame, expected = mixed
    source = tmp_path / f"in{suffix}"
    if suffix == ".csv":
        frame.to_csv(source, index=False)
    elif suffix == ".parquet":
        frame.to_parquet(source, index=False)
    else:
        frame.to_json(source, orient="records", lines=True)
    summary = score_file(predictor, source, tmp_path / f"out{suffix}", chunk_size=40)
    assert (summary.rows, summary.scored, summary.rejected) == (len(frame), len(frame), 0)
    out = _read(tmp_path / f"out{suffix}")
    assert out["penguin_id"].tolist() == frame["penguin_id"].tolist()
    assert out["prediction"].tolist() == expected["prediction"].tolist()
    columns = [c for c in expected.columns if c.startswith("probability_")]
    assert columns == ["probability_Adelie", "probability_Chinstrap", "probability_Gentoo"]
    np.testing.assert_allclose(out[columns].to_numpy(), expected[columns].to_numpy(), atol=1e-5)


def test_rows_the_contract_refuses_are_rejected_with_their_reason(mixed, tmp_path: Path) -> None:
    predictor, frame, expected = mixed
    bad = frame.astype({"body_mass_g": object, "adult": object})
    bad.loc[3, "island"] = "Atlantis"
    bad.loc[5, "flipper length"] = None  # not nullable
    bad.loc[7, "adult"] = "sometimes"
    bad.loc[9, "body_mass_g"] = "heavy"
    source = tmp_path / "in.csv"
    bad.to_csv(source, index=False)
    summary = score_file(predictor, source, tmp_path / "out.csv", chunk_size=40)
    assert (summary.scored, summary.rejected) == (len(frame) - 4, 4)
    rejects = {
        r["row"]: r["reason"]
        for r in map(json.loads, (tmp_path / "out.csv.rejects.jsonl").read_text().splitlines())
    }
    assert "'Atlantis' is not one of its categories" in rejects[3]
    assert "feature 'flipper length': missing (null)" in rejects[5]
    assert "feature 'adult': 'sometimes' is not a boolean" in rejects[7]
    assert "feature 'body_mass_g': non-numeric value 'heavy'" in rejects[9]
    out = pd.read_csv(tmp_path / "out.csv", dtype={"island": str, "sex": str})
    kept = [i for i in range(len(frame)) if i not in (3, 5, 7, 9)]
    assert out["prediction"].tolist() == expected["prediction"].iloc[kept].tolist()


def test_a_regression_writes_its_values(regression_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = Bundle.open(regression_bundle_dir)
    frame = pd.read_csv(regression_bundle_dir.parent / "data" / "prepared" / "test.csv").drop(
        columns=["target"]
    )
    expected = bundle.load_sklearn().predict(frame[bundle.signature.feature_names])
    for suffix in (".csv", ".parquet"):
        source = tmp_path / f"in{suffix}"
        frame.to_csv(source, index=False) if suffix == ".csv" else frame.to_parquet(source, index=False)
        score_file(Predictor(bundle), source, tmp_path / f"out{suffix}", chunk_size=50)
        out = (
            pd.read_csv(tmp_path / "out.csv")
            if suffix == ".csv"
            else pd.read_parquet(tmp_path / "out.parquet")
        )
        assert [c for c in out.columns if c not in frame.columns] == ["prediction", "model_digest"]
        np.testing.assert_allclose(out["prediction"], expected, rtol=1e-5)
