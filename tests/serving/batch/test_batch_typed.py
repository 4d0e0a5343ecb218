"""Batch scoring of a model with text, boolean and missing values, and of a regression, in every format."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model.bundle import Bundle
from model.contract import typed_frame
from serving.batch.engines import DaskEngine, SparkEngine
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


# every engine, and a resumed run ---------------------------------------------------------------------------


def _bad_mixed(frame: pd.DataFrame, copies: int = 3) -> pd.DataFrame:
    """The mixed split `copies` times, with rows the contract refuses scattered through the chunks."""
    bad = pd.concat([frame] * copies, ignore_index=True).astype({"body_mass_g": object, "adult": object})
    bad.loc[3::41, "island"] = "Atlantis"
    bad.loc[7::53, "adult"] = "sometimes"
    bad.loc[11::67, "body_mass_g"] = "heavy"
    return bad


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.astype({"body_mass_g": str, "adult": str}).to_parquet(path, index=False, row_group_size=50)
    else:
        frame.to_json(path, orient="records", lines=True)
    return path


def _same(a: Path, b: Path) -> None:
    assert a.read_bytes() == b.read_bytes(), f"{a} and {b} differ"
    assert Path(f"{a}.rejects.jsonl").read_bytes() == Path(f"{b}.rejects.jsonl").read_bytes()


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("in.csv", "out.csv"),
        ("in.csv", "out.parquet"),
        ("in.parquet", "out.parquet"),
        ("in.jsonl", "out.jsonl"),
    ],
)
def test_dask_scores_mixed_rows_and_text_labels_as_the_local_engine_does(
    mixed, tmp_path: Path, dask_cluster: str, source: str, target: str
) -> None:
    predictor, frame, _ = mixed
    path = _write(_bad_mixed(frame), tmp_path / source)
    local = score_file(predictor, path, tmp_path / f"local-{target}", chunk_size=40)
    dask = score_file(
        predictor, path, tmp_path / f"dask-{target}", chunk_size=40, engine=DaskEngine(address=dask_cluster)
    )
    _same(tmp_path / f"local-{target}", tmp_path / f"dask-{target}")
    assert dask.engine == "dask" and dask.chunks == local.chunks > 5
    assert (dask.scored, dask.rejected) == (local.scored, local.rejected) and 10 < local.rejected < 40
    out = _read(tmp_path / f"dask-{target}")
    assert set(out["prediction"]) <= {"Adelie", "Chinstrap", "Gentoo"}
    rejects = Path(f"{tmp_path}/dask-{target}.rejects.jsonl").read_text().splitlines()
    reasons = [json.loads(line)["reason"] for line in rejects]
    assert any("'Atlantis' is not one of its categories" in r for r in reasons)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_dask_writes_a_regressions_values_as_the_local_engine_does(
    regression_bundle_dir: Path, tmp_path: Path, dask_cluster: str, suffix: str
) -> None:
    bundle = Bundle.open(regression_bundle_dir)
    frame = pd.read_csv(regression_bundle_dir.parent / "data" / "prepared" / "test.csv").drop(
        columns=["target"]
    )
    frame = pd.concat([frame] * 3, ignore_index=True)
    frame.loc[::29, "bmi"] = np.nan  # rejected rows: some chunks' kept rows are fewer
    path = tmp_path / f"in{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path, index=False)
    predictor = Predictor(bundle)
    local = score_file(predictor, path, tmp_path / f"local{suffix}", chunk_size=25)
    dask = score_file(
        predictor, path, tmp_path / f"dask{suffix}", chunk_size=25, engine=DaskEngine(address=dask_cluster)
    )
    _same(tmp_path / f"local{suffix}", tmp_path / f"dask{suffix}")
    assert dask.chunks == local.chunks > 5 and local.rejected == len(frame.loc[::29])
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        assert pq.read_schema(tmp_path / "dask.parquet").field("prediction").type == "double"


def test_a_chunk_with_every_row_refused_keeps_the_output_columns_types(mixed, tmp_path: Path) -> None:
    """A Parquet output has one schema: a chunk whose rows were all refused still has a text prediction."""
    import pyarrow.parquet as pq

    predictor, frame, _ = mixed
    bad = frame.copy()
    bad.loc[:39, "island"] = "Atlantis"  # the whole first chunk
    path = _write(bad, tmp_path / "in.csv")
    summary = score_file(predictor, path, tmp_path / "out.parquet", chunk_size=40)
    assert (summary.scored, summary.rejected) == (len(frame) - 40, 40)
    assert pq.read_schema(tmp_path / "out.parquet").field("prediction").type == "string"


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_crashed_run_with_text_labels_resumes_to_the_same_bytes(
    mixed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    """The local engine rebuilds a Parquet output's finished chunks from their saved answers (text labels
    included); a CSV output is cut back to the checkpoint."""
    import serving.batch.local as local

    predictor, frame, _ = mixed
    path = _write(_bad_mixed(frame), tmp_path / "in.csv")
    score_file(predictor, path, tmp_path / f"ref{suffix}", chunk_size=30)
    real = local.score_chunk

    def crash_at_5(predictor, chunk, *args):  # type: ignore[no-untyped-def]
        if chunk.index == 5:
            raise KeyboardInterrupt("power cut")
        return real(predictor, chunk, *args)

    monkeypatch.setattr(local, "score_chunk", crash_at_5)
    out = tmp_path / f"out{suffix}"
    with pytest.raises(KeyboardInterrupt):
        score_file(predictor, path, out, chunk_size=30, checkpoint_every=0)
    monkeypatch.undo()
    summary = score_file(predictor, path, out, chunk_size=30, checkpoint_every=0)
    assert summary.resumed_chunks >= 3
    _same(tmp_path / f"ref{suffix}", out)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_spark_scores_mixed_rows_and_a_regression_as_the_local_engine_does(
    mixed, regression_bundle_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip(
        "pyspark", reason="the spark engine is an optional extra: pip install 'sluice[spark]'"
    )
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        pytest.skip("the spark engine needs Java 17 or later (no java on PATH and no JAVA_HOME)")
    predictor, frame, _ = mixed
    for source, target in (("in.csv", "out.parquet"), ("in.jsonl", "out.jsonl")):
        path = _write(_bad_mixed(frame), tmp_path / source)
        score_file(predictor, path, tmp_path / f"local-{target}", chunk_size=60)
        summary = score_file(
            predictor, path, tmp_path / f"spark-{target}", chunk_size=60, engine=SparkEngine(workers=2)
        )
        assert summary.engine == "spark" and summary.chunks > 5 and summary.rejected > 10
        _same(tmp_path / f"local-{target}", tmp_path / f"spark-{target}")
    regression = Predictor(Bundle.open(regression_bundle_dir))
    values = pd.read_csv(regression_bundle_dir.parent / "data" / "prepared" / "test.csv").drop(
        columns=["target"]
    )
    values.to_parquet(tmp_path / "values.parquet", index=False)
    score_file(regression, tmp_path / "values.parquet", tmp_path / "local-values.parquet", chunk_size=20)
    score_file(
        regression,
        tmp_path / "values.parquet",
        tmp_path / "spark-values.parquet",
        chunk_size=20,
        engine=SparkEngine(workers=2),
    )
    _same(tmp_path / "local-values.parquet", tmp_path / "spark-values.parquet")
