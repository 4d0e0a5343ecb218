"""Scoring in parallel workers: each worker scores runs of chunks into parts in the work directory, and the
driver gathers the parts, in chunk order, into the output.

Each chunk leaves three files: `chunk-000123.out` (its encoded rows; an Arrow IPC file for a Parquet
output), `chunk-000123.rej` (its reject lines, rows numbered within the chunk) and `chunk-000123.json` (its
counts and the lines that are not rows). Each is written under a temporary name, fsynced and renamed, and
the .json comes last: a chunk is done when its .json exists. A rerun skips the done chunks, so a crash (of
the driver or of a worker) costs only the chunks that were being scored. Gathering renumbers the reject rows
and appends the parts exactly as the local engine appends its chunks, so both write the same bytes.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.batch.formats import BatchError, Format
from serving.batch.output import AppendFile, fsync_dir
from serving.batch.plan import Plan, read_chunks
from serving.batch.scoring import (
    EngineResult,
    Progress,
    RunKey,
    ScoredChunk,
    empty_output,
    renumber,
    score_chunk,
    typed_features,
    unquoted_columns,
)
from serving.core.predictor import Predictor

if TYPE_CHECKING:
    from serving.batch.engines import Engine

LAYOUT = "parts"
END = "end.json"  # written by the task of a sequential plan once it has read the whole file


@dataclass(frozen=True)
class Task:
    """One unit of work for a worker: a run of chunks of a plan (picklable, names only paths)."""

    bundle: str
    digest: str
    plan: Plan
    first: int
    stop: int  # -1: to the end of the file (a sequential plan)
    work: str
    out_fmt: Format


@dataclass
class TaskResult:
    first: int
    scored_chunks: int  # chunks this task scored (the others were done before)
    rows: int  # rows in the chunks it scored


_predictors: dict[tuple[str, str], Predictor] = {}
_lock = threading.Lock()


def _predictor(bundle: str, digest: str) -> Predictor:
    """The worker process's predictor for `bundle`, loaded once (a worker runs many tasks)."""
    with _lock:
        key = (bundle, digest)
        if key not in _predictors:
            _predictors[key] = Predictor.load(bundle, digest)
        return _predictors[key]


def part(work: Path, index: int, suffix: str) -> Path:
    return work / f"chunk-{index:06d}.{suffix}"


def is_done(work: Path, index: int) -> bool:
    """Whether chunk `index` has all its parts (its .json is written last, but a disk can lose any file)."""
    return all(part(work, index, suffix).exists() for suffix in ("json", "out", "rej"))


def _write(path: Path, data: bytes | Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(data, bytes):
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        from serving.batch.output import write_ipc

        write_ipc(path, data)


def save_chunk(work: Path, scored: ScoredChunk) -> None:
    """A scored chunk's parts, the .json last (it marks the chunk done)."""
    _write(part(work, scored.index, "out"), scored.output)
    _write(part(work, scored.index, "rej"), scored.refused)
    record = {
        "rows": scored.rows,
        "scored": scored.scored,
        "rejected": scored.rejected,
        "malformed": scored.malformed.decode(),
    }
    _write(part(work, scored.index, "json"), json.dumps(record).encode())


def run_task(task: Task) -> TaskResult:
    """Score the chunks of `task` that are not done yet (on a worker)."""
    work = Path(task.work)
    predictor = _predictor(task.bundle, task.digest)
    stop = task.stop
    chunks = range(task.first, stop)
    todo = [i for i in chunks if not is_done(work, i)]
    result = TaskResult(task.first, 0, 0)
    if stop >= 0 and not todo:
        return result
    # A sequential plan is read from its start whatever is done; a splittable one from its first chunk to do.
    first = todo[0] if todo else task.first
    numeric = unquoted_columns(predictor)
    for chunk in read_chunks(
        task.plan, predictor.feature_names, range(first, stop), typed_features(predictor)
    ):
        if is_done(work, chunk.index):
            continue
        save_chunk(work, score_chunk(predictor, chunk, task.out_fmt, numeric))
        result.scored_chunks += 1
        result.rows += chunk.rows
    if stop < 0:
        last = max((int(p.name[6:12]) for p in work.glob("chunk-*.json")), default=-1)
        _write(work / END, json.dumps({"chunks": last + 1}).encode())
    return result


def _done_chunks(work: Path) -> int:
    return sum(1 for p in work.glob("chunk-*.json") if is_done(work, int(p.name[6:12])))


def run(
    engine: Engine,
    predictor: Predictor,
    plan: Plan,
    work: Path,
    key: RunKey,
    out_fmt: Format,
    out_name: str,
    progress: Progress | None = None,
) -> tuple[EngineResult, str]:
    """Score `plan` with `engine`'s workers into parts in `work`, then gather them into `work/out_name`."""
    note = ""
    stamp = work / "run.json"
    try:
        previous = json.loads(stamp.read_text())
    except (OSError, ValueError):
        previous = None
    if previous != key.as_dict(LAYOUT):
        if previous is not None or work.exists():
            note = "the previous partial run was for another input, model, chunk size or engine: started over"
        key.fresh_workdir(work)
        _write(stamp, json.dumps(key.as_dict(LAYOUT)).encode())
    resumed = _done_chunks(work)
    tasks = [
        Task(str(predictor.bundle.path), predictor.digest, plan, r.start, r.stop, str(work), out_fmt)
        for r in plan.tasks(engine.workers)
    ]
    rows = 0

    def finished(result: TaskResult) -> None:
        nonlocal rows
        rows += result.rows
        if progress:
            progress(rows)

    todo = [t for t in tasks if t.stop < 0 or any(not is_done(work, i) for i in range(t.first, t.stop))]
    if todo:
        engine.map(run_task, todo, finished)
    total = plan.chunks
    if total is None:
        total = int(json.loads((work / END).read_text())["chunks"])
    return gather(predictor, plan, work, total, out_fmt, out_name, resumed, progress), note


def gather(
    predictor: Predictor,
    plan: Plan,
    work: Path,
    total: int,
    out_fmt: Format,
    out_name: str,
    resumed: int,
    progress: Progress | None = None,
) -> EngineResult:
    """Append the parts of chunks 0..total-1 to one output and one reject file, as the local engine would."""
    missing = [
        part(work, i, suffix)
        for i in range(total)
        for suffix in ("json", "out", "rej")
        if not part(work, i, suffix).exists()
    ]
    if missing:  # never expected (a chunk's .json is written last): a disk or hand got at the work directory
        raise BatchError(
            f"{missing[0]}: missing, so the output cannot be gathered ({len(missing)} parts missing)"
        )
    out_path, rejects_path = work / out_name, work / "rejects.jsonl"
    rejects_out = AppendFile(rejects_path, 0)
    text_out = AppendFile(out_path, 0) if out_fmt != "parquet" else None
    parquet_out = None
    if out_fmt == "parquet":
        from serving.batch.output import ParquetOutput

        parquet_out = ParquetOutput(out_path, work)
    result = EngineResult((out_path, rejects_path), total, 0, 0, 0, 0, resumed)
    malformed: list[bytes] = []
    try:
        for index in range(total):
            record = json.loads(part(work, index, "json").read_bytes())
            if parquet_out is not None:
                import pyarrow as pa

                with pa.memory_map(str(part(work, index, "out"))) as source:
                    parquet_out.write(pa.ipc.open_file(source).read_all())
            else:
                assert text_out is not None
                text_out.append(part(work, index, "out").read_bytes())
            rejects_out.append(renumber(part(work, index, "rej").read_bytes(), result.data_rows))
            malformed.append(record["malformed"].encode())
            result.data_rows += record["rows"]
            result.scored += record["scored"]
            result.rejected += record["rejected"]
            result.malformed += record["malformed"].count("\n")
        if total == 0:
            empty = empty_output(predictor, plan, out_fmt)
            if parquet_out is not None:
                parquet_out.write(empty)
            elif text_out is not None:
                text_out.append(empty)
        if parquet_out is not None:
            parquet_out.close()
        rejects_out.append(b"".join(malformed))
    finally:
        rejects_out.close()
        if text_out is not None:
            text_out.close()
    fsync_dir(work)
    if progress:
        progress(result.data_rows)
    return result
