"""Engines: local, dask and spark cut the file the same way and write the same bytes; the parallel ones resume
per chunk after a crash and refuse a work directory that is not theirs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from serving.batch import parts
from serving.batch.engines import DaskEngine, EngineUnavailable, LocalEngine, SparkEngine, make_engine
from serving.batch.formats import BatchError
from serving.batch.plan import make_plan
from serving.batch.score import score_file

REPO = Path(__file__).resolve().parents[3]


def _input(test_frame: pd.DataFrame, path: Path, copies: int = 4) -> Path:
    """The held-out rows `copies` times, with rejects (NaN, text in a feature), and for CSV lines that do not
    split into the header's fields."""
    frame = pd.concat([test_frame] * copies, ignore_index=True)
    frame["id"] = [f"r{i}" for i in range(len(frame))]
    frame.loc[::37, "mean_radius"] = np.nan
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
        lines = path.read_text().splitlines(keepends=True)
        for at in (3, 200, 401):
            lines.insert(at, "r-bad,1.0,2.0\n")
        path.write_text("".join(lines))
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False, row_group_size=90)
    else:
        frame.to_json(path, orient="records", lines=True)
        lines = path.read_text().splitlines(keepends=True)
        lines[5] = "{not json\n"
        path.write_text("".join(lines))
    return path


def _same(a: Path, b: Path) -> None:
    assert a.read_bytes() == b.read_bytes(), f"{a} and {b} differ"
    assert Path(f"{a}.rejects.jsonl").read_bytes() == Path(f"{b}.rejects.jsonl").read_bytes()


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("in.csv", "out.parquet"),
        ("in.parquet", "out.parquet"),
        ("in.csv", "out.csv"),
        ("in.jsonl", "out.jsonl"),
    ],
)
def test_dask_writes_the_bytes_the_local_engine_writes(
    predictor, test_frame: pd.DataFrame, tmp_path: Path, dask_cluster: str, source: str, target: str
) -> None:
    path = _input(test_frame, tmp_path / source)
    local = score_file(predictor, path, tmp_path / f"local-{target}", chunk_size=50)
    dask = score_file(
        predictor, path, tmp_path / f"dask-{target}", chunk_size=50, engine=DaskEngine(address=dask_cluster)
    )
    _same(tmp_path / f"local-{target}", tmp_path / f"dask-{target}")
    assert (dask.rows, dask.scored, dask.rejected, dask.chunks) == (
        local.rows,
        local.scored,
        local.rejected,
        local.chunks,
    )
    assert local.chunks > 5 and local.rejected > 10 and dask.engine == "dask"
    rejects = [
        json.loads(line)
        for line in Path(f"{tmp_path / f'dask-{target}'}.rejects.jsonl").read_text().splitlines()
    ]
    rows = [r["row"] for r in rejects if "row" in r]
    assert rows == sorted(rows) and len(set(rows)) == len(rows)  # numbered within the file, not the chunk
    assert not (tmp_path / f"dask-{target}.partial").exists()


def test_quoted_csv_is_scored_as_one_piece_by_every_engine(
    predictor, test_frame: pd.DataFrame, tmp_path: Path, dask_cluster: str
) -> None:
    frame = test_frame.copy()
    frame["note"] = ["line one\nline two" if i % 10 == 0 else "plain" for i in range(len(frame))]
    frame.to_csv(tmp_path / "in.csv", index=False)
    score_file(predictor, tmp_path / "in.csv", tmp_path / "local.csv", chunk_size=20)
    summary = score_file(
        predictor,
        tmp_path / "in.csv",
        tmp_path / "dask.csv",
        chunk_size=20,
        engine=DaskEngine(address=dask_cluster),
    )
    _same(tmp_path / "local.csv", tmp_path / "dask.csv")
    assert "read as one piece" in summary.note
    assert pd.read_csv(tmp_path / "dask.csv")["note"].tolist() == frame["note"].tolist()


class CrashingEngine(LocalEngine):
    """Runs tasks here, and dies (as a killed driver or lost cluster would) after `survive` of them."""

    def __init__(self, survive: int):
        super().__init__(name="dask", workers=4)
        self.survive = survive

    def map(self, fn: Any, tasks: list[Any], on_result: Any) -> None:
        for task in tasks[: self.survive]:
            on_result(fn(task))
        raise KeyboardInterrupt("cluster lost")


@pytest.mark.parametrize("target", ["out.parquet", "out.csv"])
def test_a_crashed_parallel_run_resumes_with_the_finished_chunks(
    predictor, test_frame: pd.DataFrame, tmp_path: Path, dask_cluster: str, target: str
) -> None:
    path = _input(test_frame, tmp_path / "in.csv")
    score_file(predictor, path, tmp_path / f"ref-{target}", chunk_size=40)
    out = tmp_path / target
    with pytest.raises(KeyboardInterrupt):
        score_file(predictor, path, out, chunk_size=40, engine=CrashingEngine(survive=3))
    work = out.with_name(out.name + ".partial")
    done = sorted(p.name for p in work.glob("chunk-*.json"))
    assert 3 <= len(done) < 15 and not out.exists()
    scored_before = {p: p.stat().st_mtime_ns for p in work.glob("chunk-*.out")}
    summary = score_file(predictor, path, out, chunk_size=40, engine=DaskEngine(address=dask_cluster))
    assert summary.resumed_chunks == len(done)
    _same(tmp_path / f"ref-{target}", out)
    assert len(scored_before) == len(done)  # parts of finished chunks are reused, never rewritten
    assert not work.exists()


def test_a_work_directory_from_another_run_is_not_reused(
    predictor, test_frame: pd.DataFrame, tmp_path: Path, dask_cluster: str
) -> None:
    path = _input(test_frame, tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    with pytest.raises(KeyboardInterrupt):
        score_file(predictor, path, out, chunk_size=40, engine=CrashingEngine(survive=2))
    work = out.with_name(out.name + ".partial")
    # a part that claims to be done, planted with another run's rows: it must not reach the output
    planted = json.loads(parts.part(work, 0, "json").read_text()) | {"rows": 1, "scored": 1}
    parts.part(work, 0, "json").write_text(json.dumps(planted))
    stamp = json.loads((work / "run.json").read_text())
    (work / "run.json").write_text(json.dumps(stamp | {"chunk_size": 99}))
    summary = score_file(predictor, path, out, chunk_size=40, engine=DaskEngine(address=dask_cluster))
    assert summary.resumed_chunks == 0 and "started over" in summary.note
    score_file(predictor, path, tmp_path / "ref.parquet", chunk_size=40)
    _same(tmp_path / "ref.parquet", out)


def test_a_chunk_missing_a_part_is_scored_again(
    predictor, test_frame: pd.DataFrame, tmp_path: Path, dask_cluster: str
) -> None:
    path = _input(test_frame, tmp_path / "in.csv")
    out = tmp_path / "out.csv"
    with pytest.raises(KeyboardInterrupt):
        score_file(predictor, path, out, chunk_size=40, engine=CrashingEngine(survive=2))
    work = out.with_name(out.name + ".partial")
    done = sum(1 for _ in work.glob("chunk-*.json"))
    parts.part(work, 1, "out").unlink()  # the .json says done, the rows are gone (a disk problem)
    with pytest.raises(BatchError, match=r"chunk-000001\.out: missing"):
        parts.gather(predictor, make_plan(path, "csv", 40), work, done, "csv", "output.csv", 0)
    summary = score_file(predictor, path, out, chunk_size=40, engine=DaskEngine(address=dask_cluster))
    assert summary.resumed_chunks == done - 1
    score_file(predictor, path, tmp_path / "ref.csv", chunk_size=40)
    _same(tmp_path / "ref.csv", out)


def test_engine_choice_and_missing_libraries_are_clear(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert isinstance(make_engine("local"), LocalEngine)
    assert isinstance(make_engine("dask", 3), DaskEngine) and make_engine("dask", 3).workers == 3
    with pytest.raises(BatchError, match="expected one of local, dask, spark"):
        make_engine("ray", 2)
    with pytest.raises(BatchError, match="local engine takes no cluster"):
        make_engine("local", 1, "tcp://10.0.0.1:8786")
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(EngineUnavailable, match=r"pip install 'sluice\[dask\]'"):
        DaskEngine(2).map(parts.run_task, [], lambda r: None)
    monkeypatch.setitem(sys.modules, "pyspark", None)
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    with pytest.raises(EngineUnavailable, match=r"pip install 'sluice\[spark\]'"):
        SparkEngine(2).map(parts.run_task, [], lambda r: None)


def test_cli_engine_options(bundle_dir: Path, test_frame: pd.DataFrame, tmp_path: Path) -> None:
    from sluice.cli import app

    test_frame.to_csv(tmp_path / "in.csv", index=False)
    base = ["batch", "score", "--model", str(bundle_dir), "--input", str(tmp_path / "in.csv")]
    result = CliRunner().invoke(app, [*base, "--output", str(tmp_path / "o.csv"), "--engine", "ray"])
    assert result.exit_code == 1 and "expected one of local, dask, spark" in result.output
    result = CliRunner().invoke(app, [*base, "--output", str(tmp_path / "o.csv"), "--workers", "0"])
    assert result.exit_code == 2


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_dask_embedded_cluster_from_the_cli_survives_a_kill(
    bundle_dir: Path, test_frame: pd.DataFrame, tmp_path: Path
) -> None:
    """`sluice batch score --workers 2` (dask by default), killed with its whole process group mid-run, then
    rerun: it carries on from the finished chunks and writes what the local engine writes."""
    pytest.importorskip("distributed")
    source = _input(test_frame, tmp_path / "in.parquet", copies=300)  # 42,900 rows
    args = ["--model", str(bundle_dir), "--input", str(source), "--chunk-size", "500"]

    def run(out: Path, *extra: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "sluice", "batch", "score", *args, "--output", str(out), *extra]
        return subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )

    reference = run(tmp_path / "ref.parquet", "--engine", "local")
    assert reference.wait(timeout=120) == 0, reference.stderr.read() if reference.stderr else ""
    out = tmp_path / "out.parquet"
    work = out.with_name(out.name + ".partial")
    victim = run(out, "--workers", "2")
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and victim.poll() is None:
            if sum(1 for _ in work.glob("chunk-*.json")) >= 10:
                break
            time.sleep(0.05)
        assert victim.poll() is None, "the run finished before it could be killed"
    finally:
        os.killpg(victim.pid, signal.SIGKILL)  # the driver, its scheduler and its worker processes
        victim.wait(timeout=10)
    done = sum(1 for _ in work.glob("chunk-*.json"))
    assert 10 <= done < 86 and not out.exists()
    rerun = run(out, "--workers", "2")
    stdout, stderr = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, stderr.decode()
    assert b"dask, resumed after" in stdout
    _same(tmp_path / "ref.parquet", out)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_spark_local_writes_the_bytes_the_local_engine_writes(
    predictor, test_frame: pd.DataFrame, tmp_path: Path
) -> None:
    pytest.importorskip(
        "pyspark", reason="the spark engine is an optional extra: pip install 'sluice[spark]'"
    )
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        pytest.skip("the spark engine needs Java 17 or later (no java on PATH and no JAVA_HOME)")
    for source, target in (("in.csv", "out.parquet"), ("in.jsonl", "out.jsonl")):
        path = _input(test_frame, tmp_path / source)
        score_file(predictor, path, tmp_path / f"local-{target}", chunk_size=60)
        summary = score_file(
            predictor, path, tmp_path / f"spark-{target}", chunk_size=60, engine=SparkEngine(workers=2)
        )
        assert summary.engine == "spark" and summary.chunks > 5
        _same(tmp_path / f"local-{target}", tmp_path / f"spark-{target}")
