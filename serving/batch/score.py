"""`sluice batch score`: a file in, the same rows out with prediction, probabilities and model digest per row.

The input is cut into chunks the same way whatever runs it (`plan.py`); an engine scores them: `local` streams
the file through one process (`local.py`), `dask` and `spark` score runs of chunks in parallel workers and
gather their parts (`parts.py`, `engines.py`). All of them write the same bytes, resume a crashed run from
its last finished chunk, and account for every input row: it is either in the output or in the reject file
with its reason, and the summary counts both. The finished files are moved into place at the very end.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from serving.batch.formats import BatchError, Format, detect_format
from serving.batch.output import fsync_dir
from serving.batch.plan import make_plan
from serving.batch.scoring import Progress, RunKey
from serving.core.predictor import Predictor

if TYPE_CHECKING:
    from serving.batch.engines import Engine

DEFAULT_CHUNK_SIZE = 50_000
OUTPUT_SUFFIX: dict[str, str] = {
    "csv": ".csv",
    "parquet": ".parquet",
    "jsonl": ".jsonl",
}  # of the output file


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
    engine: str = "local"
    note: str = ""

    def explain(self) -> str:
        resumed = f", resumed after {self.resumed_chunks} finished chunks" if self.resumed_chunks else ""
        note = f"; {self.note}" if self.note else ""
        return (
            f"{self.rows} rows in {self.chunks} chunks: {self.scored} scored -> {self.output}, "
            f"{self.rejected} rejected -> {self.rejects} ({self.seconds:.1f} s, {self.engine}{resumed}){note}"
        )


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


def score_file(
    predictor: Predictor,
    input: Path,
    output: Path,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    rejects: Path | None = None,
    progress: Progress | None = None,
    engine: Engine | None = None,
    checkpoint_every: float | None = None,
) -> RunSummary:
    """Score `input` into `output` (format by extension) with `engine` (local by default), resuming from
    `<output>.partial/` if a previous run of the same input, model, chunk size and engine left it there.
    `checkpoint_every`: seconds between durable checkpoints of the local engine (default 1; 0: every chunk)."""
    started = time.perf_counter()
    if chunk_size < 1:
        raise BatchError(f"chunk size {chunk_size}: must be at least 1")
    input, output = Path(input), Path(output)
    in_fmt, out_fmt = detect_format(input), detect_format(output)
    if not input.is_file():
        raise BatchError(f"{input}: no such file")
    if in_fmt == "jsonl" and out_fmt != "jsonl":
        raise BatchError(f"{output}: JSON Lines input can only be written as JSON Lines (.jsonl)")
    if output.resolve() == input.resolve():
        raise BatchError(f"{output}: the output would overwrite the input")
    rejects = rejects or default_rejects(output)
    work = output.with_name(output.name + ".partial")
    plan = make_plan(input, in_fmt, chunk_size)
    key = RunKey.of(input, predictor.digest, chunk_size, out_fmt)
    out_name = f"output{OUTPUT_SUFFIX[out_fmt]}"
    if engine is None or engine.name == "local":
        from serving.batch import local

        every = local.DEFAULT_CHECKPOINT_EVERY if checkpoint_every is None else checkpoint_every
        result, note = local.run(predictor, plan, work, key, out_fmt, out_name, progress, every)
    else:
        from serving.batch import parts

        result, note = parts.run(engine, predictor, plan, work, key, out_fmt, out_name, progress)
    output.parent.mkdir(parents=True, exist_ok=True)
    rejects.parent.mkdir(parents=True, exist_ok=True)
    out_file, rejects_file = result.files
    os.replace(rejects_file, rejects)
    os.replace(out_file, output)
    fsync_dir(output.parent)
    shutil.rmtree(work, ignore_errors=True)
    if plan.note and (engine is not None and engine.name != "local"):
        note = "; ".join(n for n in (note, f"{input}: {plan.note}") if n)
    return RunSummary(
        input=str(input),
        output=str(output),
        rejects=str(rejects),
        model_digest=predictor.digest,
        chunks=result.chunks,
        rows=result.data_rows + result.malformed,
        scored=result.scored,
        rejected=result.rejected + result.malformed,
        resumed_chunks=result.resumed,
        seconds=time.perf_counter() - started,
        engine=engine.name if engine is not None else "local",
        note=note,
    )
