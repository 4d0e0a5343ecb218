"""`sluice batch score`: a file in, the same rows out with prediction, probabilities and model digest per row.

The input is read in fixed-size chunks on a background thread (at most two chunks ahead, so memory follows
the chunk size, not the file size). Each chunk is validated and predicted by the predictor core, its rows
are appended to the output and its rejects to the reject file (both fsynced), and only then is the
checkpoint advanced. Both files grow in the work directory `<output>.partial/` and are renamed into place
when the last chunk is done. After a crash, a rerun with the same input, model and chunk size cuts the files
back to the checkpoint, skips the finished chunks and produces the same bytes as an uninterrupted run (see
`output.py` for Parquet). Every input row is either in the output or in the reject file with its reason;
the summary counts both.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serving.batch.formats import (
    BatchError,
    Chunk,
    Format,
    MalformedLine,
    detect_format,
    read_chunks,
    reject_lines,
    scored_rows,
)
from serving.batch.output import AppendFile, ParquetOutput, fsync_dir
from serving.core.predictor import Predictor, RequestError

DEFAULT_CHUNK_SIZE = 50_000
OUTPUT_SUFFIX: dict[str, str] = {
    "csv": ".csv",
    "parquet": ".parquet",
    "jsonl": ".jsonl",
}  # of the output file
Progress = Callable[[int], None]


@dataclass
class RunSummary:
    input: str
    output: str
    rejects: str
    model_digest: str
    chunks: int
    rows: int
    scored: int
    rejected: int
    resumed_chunks: int
    seconds: float
    note: str = ""

    def explain(self) -> str:
        resumed = f", resumed after {self.resumed_chunks} finished chunks" if self.resumed_chunks else ""
        return (
            f"{self.rows} rows in {self.chunks} chunks: {self.scored} scored -> {self.output}, "
            f"{self.rejected} rejected -> {self.rejects} ({self.seconds:.1f} s{resumed}){self.note}"
        )


@dataclass
class Checkpoint:
    """What a rerun must match to resume, and how far the run got (chunks fully written, in order)."""

    input: str
    input_size: int
    input_mtime_ns: int
    model_digest: str
    chunk_size: int
    output_format: str
    done: int = 0
    malformed_written: bool = False  # CSV lines that could not be split, appended to the rejects at the end
    output_bytes: int = 0
    rejects_bytes: int = 0
    rows: int = 0
    scored: int = 0
    rejected: int = 0

    def same_run(self, other: Checkpoint) -> bool:
        keys = ("input", "input_size", "input_mtime_ns", "model_digest", "chunk_size", "output_format")
        return all(getattr(self, k) == getattr(other, k) for k in keys)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as f:
            f.write(json.dumps(asdict(self), indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Checkpoint | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def default_rejects(output: Path) -> Path:
    return output.with_name(f"{output.name}.rejects.jsonl")


def count_rows(path: Path, fmt: Format) -> int:
    """Rows in the input, for the progress bar (a line count for text formats: a quoted newline may skew it)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    lines = 0
    last = b"\n"
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            lines += block.count(b"\n")
            last = block[-1:]
    lines += last != b"\n"
    return max(lines - (1 if fmt == "csv" else 0), 0)


def validate_chunk(
    predictor: Predictor, chunk: Chunk
) -> tuple[np.ndarray, np.ndarray | None, dict[int, str]]:
    """The rows of `chunk` the core accepts (mask and validated matrix) and a reason for each refused row."""
    if not chunk.problems and chunk.rows:
        try:  # the common case, a clean chunk: the core checks it once
            return np.ones(chunk.rows, dtype=bool), predictor.validate(chunk.X), {}
        except RequestError:
            pass
    reasons = dict(chunk.problems)
    # Typed features (an object matrix): the validator alone knows what each value may be.
    typed = chunk.X.dtype == object
    keep = np.ones(chunk.rows, dtype=bool) if typed else np.isfinite(chunk.X).all(axis=1)
    keep[list(reasons)] = False
    for i in np.flatnonzero(~keep):
        if int(i) not in reasons:
            reasons[int(i)] = _reason(predictor, chunk.X[i : i + 1])
    if not keep.any():
        return keep, None, reasons
    try:
        return keep, predictor.validate(chunk.X if keep.all() else chunk.X[keep]), reasons
    except RequestError:
        pass
    for i in np.flatnonzero(keep):  # a rule the fast check above does not know: ask the core row by row
        reason = _reason(predictor, chunk.X[i : i + 1])
        if reason:
            reasons[int(i)] = reason
            keep[i] = False
    return keep, (predictor.validate(chunk.X[keep]) if keep.any() else None), reasons


def _reason(predictor: Predictor, row: np.ndarray) -> str:
    try:
        predictor.validate(row)
    except RequestError as e:
        return str(e).removeprefix("row 0, ")
    return ""


def _prefetch(chunks: Iterator[Chunk], depth: int = 2) -> Iterator[Chunk]:
    """Read ahead on a thread (parsing releases the GIL), holding at most `depth` chunks."""
    q: queue.Queue[Chunk | BaseException | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                while not stop.is_set():
                    try:
                        q.put(chunk, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(None)
        except BaseException as e:
            q.put(e)

    thread = threading.Thread(target=produce, name="batch-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def score_file(
    predictor: Predictor,
    input: Path,
    output: Path,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    rejects: Path | None = None,
    progress: Progress | None = None,
) -> RunSummary:
    """Score `input` into `output` (format by extension), resuming from `<output>.partial/` if it matches."""
    started = time.perf_counter()
    if chunk_size < 1:
        raise BatchError(f"chunk size {chunk_size}: must be at least 1")
    input, output = Path(input), Path(output)
    in_fmt, out_fmt = detect_format(input), detect_format(output)
    if not input.is_file():
        raise BatchError(f"{input}: no such file")
    if in_fmt == "jsonl" and out_fmt != "jsonl":
        raise BatchError(f"{output}: JSON Lines input can only be written as JSON Lines (.jsonl)")
    rejects = rejects or default_rejects(output)
    work = output.with_name(output.name + ".partial")
    stat = input.stat()
    fresh = Checkpoint(
        str(input.resolve()), stat.st_size, stat.st_mtime_ns, predictor.digest, chunk_size, out_fmt
    )
    note = ""
    state = Checkpoint.load(work / "checkpoint.json")
    if state is not None and not state.same_run(fresh):
        note = "; the previous partial run was for another input, model or chunk size: started over"
        state = None
    elif state is not None and not _partial_files_intact(work, state, out_fmt):
        note = "; the previous partial run's files were incomplete: started over"
        state = None
    if state is None:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        state = fresh
        state.save(work / "checkpoint.json")
    resumed = state.done
    classes = predictor.signature.classes
    out_tmp = work / f"output{OUTPUT_SUFFIX[out_fmt]}"
    rejects_out = AppendFile(work / "rejects.jsonl", state.rejects_bytes)
    text_out = AppendFile(out_tmp, state.output_bytes) if out_fmt != "parquet" else None
    parquet_out = ParquetOutput(out_tmp, work, state.done) if out_fmt == "parquet" else None
    if progress:
        progress(state.rows)
    chunks = 0
    # Text columns whose kept cells need no quotes in CSV output: the features that parsed as numbers.
    numeric = frozenset(
        n
        for n, r in zip(predictor.feature_names, predictor.features.rules, strict=True)
        if r.type != "categorical"
    )
    typed = None if predictor.features.plain else predictor.features

    def commit(
        index: int, rows: int, scored: bytes | Any, rejected_lines: bytes, kept: int, refused: int
    ) -> None:
        """Write one chunk's rows and rejects, then advance the checkpoint (on the writer thread, in order)."""
        if parquet_out is not None:
            parquet_out.append(index, scored)
        else:
            assert text_out is not None
            state.output_bytes = text_out.append(scored)
        state.rejects_bytes = rejects_out.append(rejected_lines)
        state.done = index + 1
        state.rows += rows
        state.scored += kept
        state.rejected += refused
        state.save(work / "checkpoint.json")
        if progress:
            progress(state.rows)

    # Writing (encode, fsync) runs on its own thread so it overlaps the next chunk's prediction; at most
    # two chunks wait to be written.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-writer")
    pending: deque[Future[None]] = deque()
    malformed: list[MalformedLine] = []
    try:
        for chunk in _prefetch(
            read_chunks(input, in_fmt, chunk_size, predictor.feature_names, malformed, typed)
        ):
            chunks += 1
            if chunk.index < state.done:
                continue
            keep, X, reasons = validate_chunk(predictor, chunk)
            if X is not None:
                prediction = predictor.predict(X)
                labels, probabilities = prediction.labels, prediction.probabilities
            else:
                labels, probabilities = np.empty(0, np.int64), np.empty((0, len(classes)))
            scored = scored_rows(
                chunk, keep, labels, probabilities, classes, predictor.digest, out_fmt, numeric
            )
            job = (
                chunk.index,
                chunk.rows,
                scored,
                reject_lines(chunk, reasons),
                int(keep.sum()),
                len(reasons),
            )
            pending.append(writer.submit(commit, *job))
            while len(pending) > 2:
                pending.popleft().result()
        while pending:
            pending.popleft().result()
        if not state.malformed_written:
            # The whole file has been parsed (on a resume too), so this list is complete and in file order.
            lines = "".join(json.dumps(m.reject()) + "\n" for m in malformed).encode()
            state.rejects_bytes = rejects_out.append(lines)
            state.rows += len(malformed)
            state.rejected += len(malformed)
            state.malformed_written = True
            state.save(work / "checkpoint.json")
        if state.rows != state.scored + state.rejected:  # a bug, never an input problem: refuse to finish
            raise RuntimeError(
                f"row accounting broken: {state.rows} rows, {state.scored} scored, {state.rejected} rejected"
            )
        if state.done == 0:  # an empty input still gives a well-formed output
            empty = scored_rows(
                _empty_chunk(predictor, in_fmt),
                np.zeros(0, bool),
                np.empty(0, np.int64),
                np.empty((0, len(classes))),
                classes,
                predictor.digest,
                out_fmt,
            )
            if parquet_out is not None:
                parquet_out.append(0, empty)
            elif text_out is not None and isinstance(empty, bytes):
                text_out.append(empty)
        if parquet_out is not None:
            parquet_out.close()
    finally:
        writer.shutdown(wait=True, cancel_futures=True)
        rejects_out.close()
        if text_out is not None:
            text_out.close()
    output.parent.mkdir(parents=True, exist_ok=True)
    rejects.parent.mkdir(parents=True, exist_ok=True)
    os.replace(work / "rejects.jsonl", rejects)
    os.replace(out_tmp, output)
    fsync_dir(output.parent)
    shutil.rmtree(work, ignore_errors=True)
    return RunSummary(
        input=str(input),
        output=str(output),
        rejects=str(rejects),
        model_digest=predictor.digest,
        chunks=chunks,
        rows=state.rows,
        scored=state.scored,
        rejected=state.rejected,
        resumed_chunks=resumed,
        seconds=time.perf_counter() - started,
        note=note,
    )


def _partial_files_intact(work: Path, state: Checkpoint, out_fmt: str) -> bool:
    """Whether the work directory still holds everything the checkpoint counts (a crash while the finished
    files were being moved into place can leave it without them)."""

    def size(path: Path) -> int:
        return path.stat().st_size if path.exists() else -1

    if size(work / "rejects.jsonl") < state.rejects_bytes:
        return False
    if out_fmt == "parquet":
        return all((work / f"part-{i:06d}.arrow").exists() for i in range(state.done))
    return size(work / f"output{OUTPUT_SUFFIX[out_fmt]}") >= state.output_bytes


def _empty_chunk(predictor: Predictor, fmt: Format) -> Chunk:
    import pyarrow as pa

    names = predictor.feature_names
    if fmt == "jsonl":
        return Chunk(0, 0, 0, np.empty((0, len(names))), records=[])
    table = pa.table({n: pa.array([], pa.float64()) for n in names})
    return Chunk(0, 0, 0, np.empty((0, len(names))), table=table)
