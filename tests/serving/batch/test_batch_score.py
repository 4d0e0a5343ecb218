"""Batch scoring: every row out with the core's prediction or in the reject file with a reason, in any format."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from serving.batch.formats import BatchError
from serving.batch.score import score_file


def _read(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_json(path, lines=True)


def _write(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_scores_every_row_like_the_core(
    predictor, test_frame: pd.DataFrame, tmp_path: Path, suffix: str
) -> None:
    source = tmp_path / f"in{suffix}"
    _write(test_frame, source)
    summary = score_file(predictor, source, tmp_path / f"out{suffix}", chunk_size=40)
    assert (summary.rows, summary.scored, summary.rejected, summary.chunks) == (
        len(test_frame),
        len(test_frame),
        0,
        4,
    )
    out = _read(tmp_path / f"out{suffix}")
    assert out["id"].tolist() == test_frame["id"].tolist()
    expected = predictor.predict(predictor.validate(test_frame[predictor.feature_names].to_numpy()))
    assert out["prediction"].tolist() == expected.labels.tolist()
    assert np.allclose(out[["probability_0", "probability_1"]].to_numpy(), expected.probabilities, atol=1e-7)
    assert set(out["model_digest"]) == {predictor.digest}
    assert np.allclose(
        out[predictor.feature_names].to_numpy(), test_frame[predictor.feature_names].to_numpy()
    )
    assert not (tmp_path / f"out{suffix}.partial").exists()


def test_csv_rejects_carry_row_and_reason(predictor, test_frame: pd.DataFrame, tmp_path: Path) -> None:
    frame = test_frame.astype({"mean_texture": object})
    frame.loc[3, "mean_radius"] = np.nan  # an empty cell
    frame.loc[5, "mean_texture"] = "abc"
    frame.loc[77, "worst_area"] = np.inf
    frame.to_csv(tmp_path / "in.csv", index=False)
    summary = score_file(predictor, tmp_path / "in.csv", tmp_path / "out.csv", chunk_size=50)
    assert (summary.rows, summary.scored, summary.rejected) == (143, 140, 3)
    rejects = [json.loads(line) for line in (tmp_path / "out.csv.rejects.jsonl").read_text().splitlines()]
    assert [r["row"] for r in rejects] == [3, 5, 77]
    assert rejects[0]["reason"] == "feature 'mean_radius': missing value"
    assert rejects[1]["reason"] == "feature 'mean_texture': non-numeric value 'abc'"
    assert "feature 'worst_area'" in rejects[2]["reason"] and "not a finite number" in rejects[2]["reason"]
    assert rejects[1]["record"]["id"] == "r5"
    out = pd.read_csv(tmp_path / "out.csv")
    assert "r5" not in set(out["id"]) and len(out) == 140


def test_jsonl_rejects_bad_lines_without_losing_the_rest(
    predictor, test_frame: pd.DataFrame, tmp_path: Path
) -> None:
    lines = [json.dumps(r) for r in test_frame.head(10).to_dict(orient="records")]
    lines[2] = "{not json"
    broken = json.loads(lines[4])
    del broken["mean_area"]
    lines[4] = json.dumps(broken)
    lines[6] = json.dumps([1, 2, 3])
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    summary = score_file(predictor, tmp_path / "in.jsonl", tmp_path / "out.jsonl", chunk_size=4)
    assert (summary.scored, summary.rejected) == (7, 3)
    reasons = {
        r["row"]: r["reason"]
        for r in map(json.loads, (tmp_path / "out.jsonl.rejects.jsonl").read_text().splitlines())
    }
    assert reasons[2].startswith("not valid JSON")
    assert reasons[4] == "feature 'mean_area': missing value"
    assert reasons[6] == "expected a JSON object per line, got list"


def test_parquet_nulls_are_rejected(predictor, test_frame: pd.DataFrame, tmp_path: Path) -> None:
    frame = test_frame.copy()
    frame.loc[10, "mean_area"] = None
    frame.to_parquet(tmp_path / "in.parquet")
    summary = score_file(predictor, tmp_path / "in.parquet", tmp_path / "out.parquet", chunk_size=64)
    assert (summary.scored, summary.rejected) == (142, 1)


def test_chunk_size_does_not_change_the_output(predictor, test_frame: pd.DataFrame, tmp_path: Path) -> None:
    test_frame.to_csv(tmp_path / "in.csv", index=False)
    score_file(predictor, tmp_path / "in.csv", tmp_path / "a.csv", chunk_size=7)
    score_file(predictor, tmp_path / "in.csv", tmp_path / "b.csv", chunk_size=1000)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_whole_file_problems_name_file_and_column(
    predictor, test_frame: pd.DataFrame, tmp_path: Path
) -> None:
    test_frame.drop(columns=["mean_area"]).to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(BatchError, match=r"in\.csv: missing feature column 'mean_area'"):
        score_file(predictor, tmp_path / "in.csv", tmp_path / "out.csv")
    with pytest.raises(BatchError, match=r"unknown file type '\.xlsx'"):
        score_file(predictor, tmp_path / "in.csv", tmp_path / "out.xlsx")
    test_frame.to_json(tmp_path / "in.jsonl", orient="records", lines=True)
    with pytest.raises(BatchError, match="JSON Lines input"):
        score_file(predictor, tmp_path / "in.jsonl", tmp_path / "out.csv")
    with pytest.raises(BatchError, match="no such file"):
        score_file(predictor, tmp_path / "nope.csv", tmp_path / "out.csv")


def test_stale_checkpoint_for_another_input_starts_over(
    predictor, test_frame: pd.DataFrame, tmp_path: Path
) -> None:
    test_frame.to_csv(tmp_path / "in.csv", index=False)
    work = tmp_path / "out.csv.partial"
    work.mkdir()
    (work / "checkpoint.json").write_text(
        json.dumps(
            {
                "input": "/elsewhere.csv",
                "input_size": 1,
                "input_mtime_ns": 1,
                "model_digest": "x",
                "chunk_size": 50,
                "output_format": "csv",
                "done": 2,
                "rows": 100,
                "scored": 100,
                "rejected": 0,
            }
        )
    )
    (work / "part-000000.csv").write_text("garbage\n")
    summary = score_file(predictor, tmp_path / "in.csv", tmp_path / "out.csv", chunk_size=50)
    assert summary.resumed_chunks == 0 and "started over" in summary.note
    assert len(pd.read_csv(tmp_path / "out.csv")) == 143


def test_empty_input_gives_an_empty_output(predictor, test_frame: pd.DataFrame, tmp_path: Path) -> None:
    test_frame.head(0).to_csv(tmp_path / "in.csv", index=False)
    summary = score_file(predictor, tmp_path / "in.csv", tmp_path / "out.parquet")
    assert summary.rows == 0
    assert len(pd.read_parquet(tmp_path / "out.parquet")) == 0


def test_cli_score_and_digest_pin(bundle_dir: Path, test_frame: pd.DataFrame, tmp_path: Path) -> None:
    from sluice.cli import app

    test_frame.to_csv(tmp_path / "in.csv", index=False)
    args = ["batch", "score", "--model", str(bundle_dir), "--input", str(tmp_path / "in.csv")]
    result = CliRunner().invoke(
        app, [*args, "--output", str(tmp_path / "out.parquet"), "--chunk-size", "100"]
    )
    assert result.exit_code == 0, result.output
    assert "143 rows in 2 chunks: 143 scored" in result.output
    result = CliRunner().invoke(
        app, [*args, "--output", str(tmp_path / "o.csv"), "--model-digest", "sha256:" + "0" * 64]
    )
    assert result.exit_code == 1
    assert "does not match the pinned model_digest" in result.output


def test_csv_text_cells_round_trip_with_quotes_only_where_needed(
    predictor, test_frame: pd.DataFrame, tmp_path: Path
) -> None:
    frame = test_frame.head(6).copy()
    frame["note"] = ["a,b", "plain", 'say "hi"', "two\nlines", "x", "y"]
    frame.to_csv(tmp_path / "in.csv", index=False)
    score_file(predictor, tmp_path / "in.csv", tmp_path / "out.csv", chunk_size=2)
    out = pd.read_csv(tmp_path / "out.csv")
    assert out["note"].tolist() == frame["note"].tolist()
    last_chunk = (tmp_path / "out.csv").read_text().splitlines()[-2:]
    assert all(not line.startswith('"') for line in last_chunk)  # a chunk without such cells is unquoted


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("crash_at", ["output", "cleanup"])
def test_crash_while_moving_results_into_place_is_recovered(
    predictor, test_frame: pd.DataFrame, tmp_path: Path, monkeypatch, suffix: str, crash_at: str
) -> None:  # type: ignore[no-untyped-def]
    import serving.batch.score as score

    frame = test_frame.copy()
    frame.loc[[4, 90], "mean_area"] = np.nan  # rejects, so the reject file has bytes to lose
    frame.to_csv(tmp_path / "in.csv", index=False)
    score_file(predictor, tmp_path / "in.csv", tmp_path / f"ref{suffix}", chunk_size=30)
    out = tmp_path / f"out{suffix}"
    real_replace, real_rmtree = os.replace, score.shutil.rmtree

    def replace(src, dst):  # type: ignore[no-untyped-def]
        if crash_at == "output" and Path(dst) == out:  # the reject file has just been moved into place
            raise KeyboardInterrupt("power cut")
        return real_replace(src, dst)

    def rmtree(path, **kw):  # type: ignore[no-untyped-def]
        if crash_at == "cleanup" and out.exists():  # both files are in place, the work directory is not gone
            raise KeyboardInterrupt("power cut")
        return real_rmtree(path, **kw)

    monkeypatch.setattr(score.os, "replace", replace)
    monkeypatch.setattr(score.shutil, "rmtree", rmtree)
    with pytest.raises(KeyboardInterrupt):
        score_file(predictor, tmp_path / "in.csv", out, chunk_size=30)
    monkeypatch.undo()
    summary = score_file(predictor, tmp_path / "in.csv", out, chunk_size=30)
    assert out.read_bytes() == (tmp_path / f"ref{suffix}").read_bytes()
    assert (
        Path(f"{out}.rejects.jsonl").read_bytes()
        == Path(f"{tmp_path / f'ref{suffix}'}.rejects.jsonl").read_bytes()
    )
    assert (summary.rows, summary.rejected) == (143, 2)


def test_csv_lines_that_do_not_split_are_rejected_not_fatal(
    predictor, test_frame: pd.DataFrame, tmp_path: Path
) -> None:
    test_frame.to_csv(tmp_path / "in.csv", index=False)
    lines = (tmp_path / "in.csv").read_text().splitlines(keepends=True)
    lines.insert(5, "r-short,1.0\n")
    lines.insert(60, ",".join(["9"] * 40) + "\n")
    (tmp_path / "in.csv").write_text("".join(lines))
    summary = score_file(predictor, tmp_path / "in.csv", tmp_path / "out.csv", chunk_size=25)
    assert (summary.rows, summary.scored, summary.rejected) == (145, 143, 2)
    rejects = [json.loads(line) for line in (tmp_path / "out.csv.rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == [6, 61]
    assert rejects[0]["reason"] == "CSV line 6: 2 fields, the header has 31"
    assert rejects[0]["text"] == "r-short,1.0"
    assert pd.read_csv(tmp_path / "out.csv")["id"].tolist() == test_frame["id"].tolist()


def test_a_corrupt_parquet_file_is_named(predictor, tmp_path: Path) -> None:
    (tmp_path / "in.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(BatchError, match=r"in\.parquet: cannot read it as Parquet"):
        score_file(predictor, tmp_path / "in.parquet", tmp_path / "out.parquet")


def test_rows_the_model_cannot_compute_are_rejected_with_the_core_reason(
    predictor, test_frame: pd.DataFrame, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """A model whose arithmetic overflows on some rows (probabilities NaN; no bundle here does so within the
    values the core accepts, so the model's answer is altered for rows 7 and 60): those rows go to the rejects
    with the reason every serving mode gives, the others are scored."""
    from serving.core.predictor import Prediction

    real = predictor.predict

    def overflowing(X):  # type: ignore[no-untyped-def]
        answer = real(X)
        probabilities = answer.probabilities.copy()
        probabilities[np.isin(np.arange(len(X)), [7 % len(X), 60 % len(X)]) & (len(X) > 60)] = np.nan
        return Prediction(answer.labels, probabilities)

    monkeypatch.setattr(predictor, "predict", overflowing)
    test_frame.to_csv(tmp_path / "in.csv", index=False)
    summary = score_file(predictor, tmp_path / "in.csv", tmp_path / "out.csv", chunk_size=100)
    assert (summary.rows, summary.scored, summary.rejected) == (143, 141, 2)
    rejects = [json.loads(line) for line in (tmp_path / "out.csv.rejects.jsonl").read_text().splitlines()]
    assert [r["row"] for r in rejects] == [7, 60]
    assert all(r["reason"].startswith("the model cannot compute an answer") for r in rejects)
    out = pd.read_csv(tmp_path / "out.csv")
    assert "r7" not in set(out["id"]) and len(out) == 141 and out["probability_0"].notna().all()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize(("every", "resumed"), [(0.0, range(3, 6)), (3600.0, range(0, 1))])
def test_a_crash_costs_the_chunks_since_the_last_durable_checkpoint(
    predictor,
    test_frame: pd.DataFrame,
    tmp_path: Path,
    monkeypatch,
    suffix: str,
    every: float,
    resumed: range,
) -> None:  # type: ignore[no-untyped-def]
    """Chunks written after the last durable checkpoint are cut off and scored again; the output is the same
    bytes either way. With a checkpoint after every chunk a crash in chunk 5 keeps those written (up to two wait
    for the writer thread when it stops); with one an hour, none."""
    import serving.batch.local as local

    frame = test_frame.copy()
    frame.loc[[4, 90], "mean_area"] = np.nan
    frame.to_csv(tmp_path / "in.csv", index=False)
    score_file(predictor, tmp_path / "in.csv", tmp_path / f"ref{suffix}", chunk_size=10)
    real = local.score_chunk

    def crash_at_5(predictor, chunk, *args):  # type: ignore[no-untyped-def]
        if chunk.index == 5:
            raise KeyboardInterrupt("power cut")
        return real(predictor, chunk, *args)

    monkeypatch.setattr(local, "score_chunk", crash_at_5)
    out = tmp_path / f"out{suffix}"
    with pytest.raises(KeyboardInterrupt):
        score_file(predictor, tmp_path / "in.csv", out, chunk_size=10, checkpoint_every=every)
    monkeypatch.undo()
    summary = score_file(predictor, tmp_path / "in.csv", out, chunk_size=10, checkpoint_every=every)
    assert summary.resumed_chunks in resumed
    assert out.read_bytes() == (tmp_path / f"ref{suffix}").read_bytes()
    assert (
        Path(f"{out}.rejects.jsonl").read_bytes()
        == Path(f"{tmp_path}/ref{suffix}.rejects.jsonl").read_bytes()
    )
