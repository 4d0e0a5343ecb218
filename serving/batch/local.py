"""The local engine: one process scores a file chunk by chunk, streaming it from input to output.

Chunks are read on a background thread (at most two ahead, so memory follows the chunk size, not the file
size), scored on the calling thread, and written on a third thread (at most two behind), so reading,
predicting and writing overlap. Each chunk's rows are appended to the output and its rejects to the reject
file (both fsynced; for Parquet, the chunk's answers are saved beside it), and only then does the checkpoint
advance. After a crash, a rerun with the same input, model and chunk size cuts the files back to the
checkpoint, skips the finished chunks and produces the same bytes as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from serving.batch.formats import Format
from serving.batch.output import AppendFile, ParquetOutput
from serving.batch.plan import Plan, read_chunks
from serving.batch.scoring import (
    EngineResult,
    Progress,
    RunKey,
    ScoredChunk,
    empty_output,
    encode,
    score_chunk,
    typed_features,
    unquoted_columns,
)
from serving.core.predictor import Predictor

LAYOUT = "stream"
DEFAULT_CHECKPOINT_EVERY = 1.0  # seconds between durable checkpoints  # the work directory of this engine: growing output files and a checkpoint


@dataclass
class Checkpoint:
    """How far a local run got (chunks fully written, in order) and the file sizes that go with it."""

    key: dict[str, Any]
    done: int = 0
    output_bytes: int = 0
    rejects_bytes: int = 0
    malformed_bytes: int = 0  # CSV lines that are not rows, collected aside and appended to the rejects last
    malformed: int = 0
    data_rows: int = 0  # rows of the finished chunks (the next chunk's first row number)
    scored: int = 0
    rejected: int = 0
    finished: bool = False

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


def prefetch[T](items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Produce `items` on a thread (parsing and decoding release the GIL), holding at most `depth` ahead."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(end)
        except BaseException as e:
            q.put(e)

    thread = threading.Thread(target=produce, name="batch-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def run(
    predictor: Predictor,
    plan: Plan,
    work: Path,
    key: RunKey,
    out_fmt: Format,
    out_name: str,
    progress: Progress | None = None,
    checkpoint_every: float = DEFAULT_CHECKPOINT_EVERY,
) -> tuple[EngineResult, str]:
    """Score `plan` into `work` (resuming what a previous run left there); returns the result and a note.

    The checkpoint is made durable (the chunks' files fsynced, then the checkpoint itself) at most every
    `checkpoint_every` seconds, and after the last chunk: an fsync costs milliseconds, as much as scoring a
    chunk, so a crash costs at most that many seconds of work instead of every chunk paying for it. 0: after
    every chunk."""
    note = ""
    state = Checkpoint.load(work / "checkpoint.json")
    if work.exists() and (state is None or state.key != key.as_dict(LAYOUT)):
        note = "the previous partial run was for another input, model, chunk size or engine: started over"
        state = None
    elif state is not None and not _intact(work, state, out_fmt, out_name):
        note = "the previous partial run's files were incomplete: started over"
        state = None
    if state is None:
        key.fresh_workdir(work)
        state = Checkpoint(key.as_dict(LAYOUT))
        state.save(work / "checkpoint.json")
    resumed = state.done
    out_tmp = work / out_name
    rejects_out = AppendFile(work / "rejects.jsonl", state.rejects_bytes)
    malformed_out = AppendFile(work / "malformed.jsonl", state.malformed_bytes)
    text_out = AppendFile(out_tmp, state.output_bytes) if out_fmt != "parquet" else None
    parquet_out = ParquetOutput(out_tmp, work) if out_fmt == "parquet" else None
    numeric = unquoted_columns(predictor)
    if progress:
        progress(state.data_rows)

    last_saved = time.monotonic()

    def save() -> None:
        """Make the chunks written so far durable, then the checkpoint that counts them."""
        nonlocal last_saved
        for out in (rejects_out, malformed_out, text_out):
            if out is not None:
                out.sync()
        if parquet_out is not None:
            parquet_out.sync_answers()  # the Parquet file itself is rebuilt from them after a crash
        state.save(work / "checkpoint.json")
        last_saved = time.monotonic()

    def commit(scored: ScoredChunk) -> None:
        """Write one chunk, then advance the checkpoint (on the writer thread, in chunk order)."""
        if parquet_out is not None:
            parquet_out.write(scored.output)
        else:
            assert text_out is not None
            state.output_bytes = text_out.append(scored.output, sync=False)
        state.rejects_bytes = rejects_out.append(scored.rejects(state.data_rows), sync=False)
        state.malformed_bytes = malformed_out.append(scored.malformed, sync=False)
        state.malformed += scored.malformed.count(b"\n")
        state.done = scored.index + 1
        state.data_rows += scored.rows
        state.scored += scored.scored
        state.rejected += scored.rejected
        if time.monotonic() - last_saved >= checkpoint_every:
            save()
        if progress:
            progress(state.data_rows)

    chunks = state.done
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-writer")
    pending: deque[Future[None]] = deque()
    try:
        # A Parquet output is rewritten from the first chunk: the finished ones from their saved answers.
        start = 0 if parquet_out is not None else state.done
        for chunk in prefetch(
            read_chunks(plan, predictor.feature_names, range(start, -1), typed_features(predictor))
        ):
            chunks = max(chunks, chunk.index + 1)
            if chunk.index < state.done:
                assert parquet_out is not None
                kept, labels, probabilities = parquet_out.load_answers(chunk.index)
                parquet_out.write(encode(predictor, chunk, kept, labels, probabilities, out_fmt))
                continue
            scored = score_chunk(predictor, chunk, out_fmt, numeric)
            if (
                parquet_out is not None
            ):  # here, not on the writer thread: Parquet encoding keeps that one busy
                parquet_out.save_answers(
                    scored.index, scored.kept, scored.labels, scored.probabilities, sync=False
                )
            pending.append(writer.submit(commit, scored))
            while len(pending) > 2:
                pending.popleft().result()
        while pending:
            pending.popleft().result()
        save()
        if state.done == 0:  # an empty input still gives a well-formed output
            empty = empty_output(predictor, plan, out_fmt)
            if parquet_out is not None:
                parquet_out.write(empty)
            elif text_out is not None:
                text_out.append(empty)
        if parquet_out is not None:
            parquet_out.close()
        if not state.finished:  # the lines that are not rows go last, in file order
            malformed_out.close()
            lines = (work / "malformed.jsonl").read_bytes()[: state.malformed_bytes]
            state.rejects_bytes = rejects_out.append(lines)
            state.finished = True
            state.save(work / "checkpoint.json")
    finally:
        writer.shutdown(wait=True, cancel_futures=True)
        rejects_out.close()
        malformed_out.close()
        if text_out is not None:
            text_out.close()
    result = EngineResult(
        files=(out_tmp, work / "rejects.jsonl"),
        chunks=chunks,
        data_rows=state.data_rows,
        malformed=state.malformed,
        scored=state.scored,
        rejected=state.rejected,
        resumed=resumed,
    )
    return result, note


def _intact(work: Path, state: Checkpoint, out_fmt: str, out_name: str) -> bool:
    """Whether the work directory still holds everything the checkpoint counts (a crash while the finished
    files were being moved into place can leave it without them)."""

    def size(path: Path) -> int:
        return path.stat().st_size if path.exists() else -1

    if size(work / "rejects.jsonl") < state.rejects_bytes:
        return False
    if size(work / "malformed.jsonl") < state.malformed_bytes:
        return False
    if out_fmt == "parquet":
        return all((work / f"answers-{i:06d}.arrow").exists() for i in range(state.done))
    return size(work / out_name) >= state.output_bytes
