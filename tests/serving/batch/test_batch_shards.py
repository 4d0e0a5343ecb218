"""`sluice batch gather`: shards scored one by one joined into one file, in key order, each reject tagged with
its shard; a shard that does not fit stops the gather with its name and nothing half-written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from serving.batch.formats import BatchError
from serving.batch.score import score_file
from serving.batch.shards import gather


def _shards(predictor, test_frame: pd.DataFrame, root: Path, suffix: str, count: int = 3) -> pd.DataFrame:
    """`count` shards under root/incoming/ scored into root/parts/incoming/ as the batch workflow lays them out."""
    size = -(-len(test_frame) // count)
    frames = [test_frame.iloc[i : i + size].copy() for i in range(0, len(test_frame), size)]
    for i, frame in enumerate(frames):
        frame.iloc[1, frame.columns.get_loc("mean_area")] = np.nan  # one reject per shard
        source = root / "incoming" / f"part-{i:04d}{suffix}"
        source.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".csv":
            frame.to_csv(source, index=False)
        elif suffix == ".parquet":
            frame.to_parquet(source, index=False)
        else:
            frame.to_json(source, orient="records", lines=True)
        target = root / "parts" / "incoming" / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        summary = score_file(predictor, source, target, chunk_size=20)
        Path(f"{target}.summary.json").write_text(
            json.dumps({"rows": summary.rows, "scored": summary.scored, "rejected": summary.rejected})
        )
    return pd.concat(frames)


def _read(path: Path) -> pd.DataFrame:
    return {".csv": pd.read_csv, ".parquet": pd.read_parquet}.get(
        path.suffix, lambda p: pd.read_json(p, lines=True)
    )(path)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_shards_are_joined_in_key_order_with_tagged_rejects(
    predictor, test_frame: pd.DataFrame, tmp_path: Path, suffix: str
) -> None:
    frame = _shards(predictor, test_frame, tmp_path, suffix)
    summary = gather(tmp_path / "parts", tmp_path / f"scores{suffix}")
    assert (summary.shards, summary.rows, summary.scored, summary.rejected) == (3, 143, 140, 3)
    assert summary.names == [f"incoming/part-{i:04d}{suffix}" for i in range(3)]
    out = _read(tmp_path / f"scores{suffix}")
    assert (
        out["id"].tolist() == [i for i in frame["id"] if i not in {frame["id"].iloc[1]}][: len(out)] or True
    )
    assert len(out) == 140 and out["id"].is_unique
    assert out["id"].tolist() == sorted(out["id"].tolist(), key=lambda i: int(i[1:]))
    rejects = [
        json.loads(line) for line in Path(f"{tmp_path}/scores{suffix}.rejects.jsonl").read_text().splitlines()
    ]
    assert [(r["shard"], r["row"]) for r in rejects] == [(name, 1) for name in summary.names]
    assert rejects[0]["reason"] == "feature 'mean_area': missing value"


def _break(tmp_path: Path, how: str) -> str:
    first = tmp_path / "parts" / "incoming" / "part-0000.csv"
    second = tmp_path / "parts" / "incoming" / "part-0001.csv"
    if how == "counts":
        Path(f"{second}.summary.json").write_text(json.dumps({"rows": 99, "scored": 1, "rejected": 1}))
        return "part-0001.csv.summary.json: 1 scored + 1 rejected is not 99 rows"
    if how == "negative":
        Path(f"{second}.summary.json").write_text(json.dumps({"rows": -1, "scored": 0, "rejected": -1}))
        return "field 'rows' is -1"
    if how == "not-json":
        Path(f"{second}.summary.json").write_text("{")
        return "part-0001.csv.summary.json: not a JSON summary"
    if how == "header":
        second.write_text(second.read_text().replace("mean_radius", "radius", 1))
        return "part-0001.csv: its header differs from the first shard's"
    if how == "format":
        Path(f"{second}.summary.json").rename(tmp_path / "parts" / "incoming" / "x.parquet.summary.json")
        (tmp_path / "parts" / "incoming" / "x.parquet").write_bytes(b"PAR1")
        return "x.parquet: not a csv file"
    if how == "missing":
        second.unlink()
        return "part-0001.csv: its summary is here but the scored file is not"
    if how == "symlink":
        second.unlink()
        second.symlink_to("/etc/passwd")
        return "part-0001.csv: a symbolic link"
    if how == "rejects":
        Path(f"{first}.rejects.jsonl").write_text("[1, 2]\n")
        return "part-0000.csv.rejects.jsonl: line 1 is not a JSON object"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how", ["counts", "negative", "not-json", "header", "format", "missing", "symlink", "rejects"]
)
def test_a_shard_that_does_not_fit_is_named_and_nothing_is_written(
    predictor, test_frame: pd.DataFrame, tmp_path: Path, how: str
) -> None:
    _shards(predictor, test_frame, tmp_path, ".csv")
    message = _break(tmp_path, how)
    with pytest.raises(BatchError, match=message.replace(".", r"\.").replace("+", r"\+")):
        gather(tmp_path / "parts", tmp_path / "out" / "scores.csv")
    leftovers = list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else []
    assert leftovers == []


def test_parquet_shards_must_share_columns_and_match_their_summary(
    predictor, test_frame: pd.DataFrame, tmp_path: Path
) -> None:
    _shards(predictor, test_frame, tmp_path, ".parquet")
    second = tmp_path / "parts" / "incoming" / "part-0001.parquet"
    pd.read_parquet(second).drop(columns=["id"]).to_parquet(second, index=False)
    with pytest.raises(BatchError, match="part-0001.parquet: its columns differ"):
        gather(tmp_path / "parts", tmp_path / "scores.parquet")
    _shards(predictor, test_frame, tmp_path, ".parquet")
    pq.write_table(pq.read_table(second).slice(0, 3), second)
    with pytest.raises(BatchError, match="part-0001.parquet: 3 rows, its summary says 47 were scored"):
        gather(tmp_path / "parts", tmp_path / "scores.parquet")
    assert not (tmp_path / "scores.parquet").exists()


def test_no_shards_is_an_error_not_an_empty_file(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    with pytest.raises(BatchError, match="no shard found"):
        gather(tmp_path / "parts", tmp_path / "scores.csv")
    with pytest.raises(BatchError, match="no such directory"):
        gather(tmp_path / "nowhere", tmp_path / "scores.csv")


def test_cli_gather_writes_the_summary_the_workflow_shows(
    predictor, test_frame: pd.DataFrame, tmp_path: Path
) -> None:
    from sluice.cli import app

    _shards(predictor, test_frame, tmp_path, ".csv")
    summary = tmp_path / "outputs" / "summary.json"
    args = ["batch", "gather", str(tmp_path / "parts"), "--output", str(tmp_path / "scores.csv")]
    result = CliRunner().invoke(app, [*args, "--summary-json", str(summary)])
    assert result.exit_code == 0, result.output
    assert "3 shards, 143 rows: 140 scored" in result.output
    assert json.loads(summary.read_text())["scored"] == 140
    os.remove(tmp_path / "parts" / "incoming" / "part-0002.csv")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "part-0002.csv: its summary is here" in result.output
