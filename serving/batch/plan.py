"""Where each chunk of an input file begins and ends, fixed before any row is scored.

Every engine cuts a file at the same places, so they all write the same bytes, and (except for one case below)
a chunk can be read on its own, by another process or machine:

- Parquet: chunk i is rows [i*N, (i+1)*N), found through the row counts in the footer.
- JSON Lines, and CSV without a double quote anywhere: chunk i is data lines [i*N, (i+1)*N), a byte range found
  by one scan for newlines (without quotes, a line is always one whole record). A CSV line that does not split
  into the header's fields is not a row, so such a chunk holds fewer than N rows.
- CSV with quotes (a quoted cell may hold a newline, so a newline is no safe place to cut): one piece read from
  the start; chunk i is parsed rows [i*N, (i+1)*N).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from serving.batch.formats import (
    BatchError,
    Chunk,
    Format,
    MalformedLine,
    check_columns,
    jsonl_chunk,
    read_csv_header,
    rechunk,
    table_chunk,
)

if TYPE_CHECKING:
    from serving.core.validation import Features

Kind = Literal["rows", "lines", "sequential"]
SCAN_BLOCK = 1 << 22


@dataclass(frozen=True)
class Plan:
    """The chunks of one input file. `offsets` (kind `lines`) holds the byte where each chunk starts, then the
    end of the data; `row_groups` (kind `parquet`) the row count of each row group."""

    path: Path
    format: Format
    chunk_size: int
    kind: Kind
    rows: int | None  # data rows (Parquet) or data lines (text); None when only a full read can tell
    offsets: tuple[int, ...] = ()
    row_groups: tuple[int, ...] = ()
    header_lines: int = 0  # lines before the first data line (the CSV header)
    note: str = field(default="", compare=False)

    @property
    def chunks(self) -> int | None:
        """How many chunks the file has (None for sequential CSV: known only once read)."""
        if self.kind == "lines":
            return len(self.offsets) - 1
        if self.kind == "rows":
            return math.ceil((self.rows or 0) / self.chunk_size)
        return None

    @property
    def splittable(self) -> bool:
        """Whether a chunk can be read without reading the ones before it."""
        return self.kind != "sequential"

    def first_line(self, chunk: int) -> int:
        """1-based line number, in the file, of the first line of `chunk` (kind `lines`)."""
        return self.header_lines + chunk * self.chunk_size + 1

    def tasks(self, workers: int, per_worker: int = 4) -> list[range]:
        """Consecutive runs of chunks, about `per_worker` runs per worker, for engines that score in parallel.
        A sequential plan is one run of unknown length (`range(0, -1)` stands for "to the end")."""
        total = self.chunks
        if total is None:
            return [range(0, -1)]
        if total == 0:
            return []
        size = max(1, math.ceil(total / max(1, workers * per_worker)))
        return [range(start, min(start + size, total)) for start in range(0, total, size)]


def make_plan(path: Path, fmt: Format, chunk_size: int) -> Plan:
    """The plan for `path` (read once for text formats: a scan for newlines and quotes, no parsing)."""
    if chunk_size < 1:
        raise BatchError(f"chunk size {chunk_size}: must be at least 1")
    if not path.is_file():
        raise BatchError(f"{path}: no such file")
    if fmt == "parquet":
        return _parquet_plan(path, chunk_size)
    header_lines = 0
    if fmt == "csv":
        if not read_csv_header(path):
            raise BatchError(f"{path}: empty file (expected a header row of column names)")
        header_lines = 1
    boundaries, lines, quoted = _scan(path, chunk_size, skip_first_line=fmt == "csv")
    if fmt == "csv" and quoted:
        return Plan(
            path,
            fmt,
            chunk_size,
            "sequential",
            None,
            header_lines=header_lines,
            note="it has quoted cells, which may hold newlines: it is read as one piece, from the start",
        )
    return Plan(path, fmt, chunk_size, "lines", lines, tuple(boundaries), header_lines=header_lines)


def _parquet_plan(path: Path, chunk_size: int) -> Plan:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except (pa.ArrowException, OSError) as e:
        raise BatchError(f"{path}: cannot read it as Parquet ({e})") from None
    groups = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
    return Plan(path, "parquet", chunk_size, "rows", int(meta.num_rows), row_groups=groups)


def _scan(path: Path, chunk_size: int, skip_first_line: bool) -> tuple[list[int], int, bool]:
    """Byte offsets where every chunk of `chunk_size` lines starts (and the end of the data), the number of
    data lines, and whether the file holds a double quote. One pass over the bytes, no parsing."""
    import numpy as np

    quoted = False
    lines = 0  # complete data lines seen so far
    with path.open("rb") as f:
        header = f.readline() if skip_first_line else b""
        quoted = b'"' in header
        position = data_start = len(header)
        boundaries = [data_start]
        last = b"\n"
        while block := f.read(SCAN_BLOCK):
            quoted = quoted or b'"' in block
            count = block.count(b"\n")
            first_cut = chunk_size * (
                lines // chunk_size + 1
            )  # the line count at which the next chunk starts
            if lines + count >= first_cut:
                ends = np.flatnonzero(
                    np.frombuffer(block, np.uint8) == 10
                )  # offsets of this block's newlines
                cuts = np.arange(first_cut, lines + count + 1, chunk_size) - lines - 1
                boundaries.extend((position + ends[cuts] + 1).tolist())
            lines += count
            position += len(block)
            last = block[-1:]
    if last != b"\n" and position > data_start:  # a last line without its newline is still a line
        lines += 1
    if lines and boundaries[-1] != position:
        boundaries.append(position)
    return boundaries, lines, quoted


# reading ------------------------------------------------------------------------------------------


def read_chunks(
    plan: Plan, features: list[str], chunks: range | None = None, typed: Features | None = None
) -> Iterator[Chunk]:
    """The chunks `chunks` of the plan's file, in order (all of them by default). `typed`: the model's
    features when they are not all numbers (`table_chunk`, `jsonl_chunk`).

    A sequential plan is read from the start whatever `chunks` says, and the chunks before `chunks.start`
    are parsed and dropped (their malformed lines too: whoever asked for the rest has those already).
    """
    chunks = range(0, -1) if chunks is None else chunks
    if plan.kind == "rows":
        return _parquet_rows(plan, features, chunks, typed)
    if plan.kind == "lines":
        return _text_lines(plan, features, chunks, typed)
    return _csv_sequential(plan, features, chunks, typed)


def _through(plan: Plan, chunks: range) -> int:
    """The chunk after the last one of `chunks` (`range(a, -1)` means to the end)."""
    total = plan.chunks
    stop = chunks.stop if chunks.stop >= 0 else (total if total is not None else 1 << 62)
    return min(stop, total) if total is not None else stop


def _parquet_rows(plan: Plan, features: list[str], chunks: range, typed: Features | None) -> Iterator[Chunk]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    first, stop = chunks.start, _through(plan, chunks)
    if first >= stop:
        return
    begin, end = first * plan.chunk_size, min(stop * plan.chunk_size, plan.rows or 0)
    starts = [0]
    for count in plan.row_groups:
        starts.append(starts[-1] + count)
    groups = [g for g in range(len(plan.row_groups)) if starts[g] < end and starts[g + 1] > begin]
    try:
        source = pq.ParquetFile(
            plan.path, pre_buffer=False
        )  # pre-buffering reads row groups far ahead: memory
        check_columns(plan.path, source.schema_arrow.names, features)
        batches = _skip(
            source.iter_batches(batch_size=plan.chunk_size, row_groups=groups), begin - starts[groups[0]]
        )
        for index, table in enumerate(rechunk(batches, plan.chunk_size), start=first):
            if index >= stop:
                return
            yield table_chunk(index, table, features, typed)
    except (pa.ArrowException, OSError) as e:
        raise BatchError(f"{plan.path}: cannot read it as Parquet ({e})") from None


def _skip(batches: Iterator[Any], rows: int) -> Iterator[Any]:
    for batch in batches:
        if rows >= batch.num_rows:
            rows -= batch.num_rows
            continue
        yield batch.slice(rows) if rows else batch
        rows = 0


def _text_lines(plan: Plan, features: list[str], chunks: range, typed: Features | None) -> Iterator[Chunk]:
    import pyarrow as pa

    first, stop = chunks.start, _through(plan, chunks)
    if first >= stop:
        return
    header = read_csv_header(plan.path) if plan.format == "csv" else []
    if plan.format == "csv":
        check_columns(plan.path, header, features)
    with pa.memory_map(str(plan.path)) as source:
        for index in range(first, stop):
            lo, hi = plan.offsets[index], plan.offsets[index + 1]
            source.seek(lo)
            data = source.read_buffer(hi - lo)  # a view of the mapped file, no copy
            if plan.format == "jsonl":
                yield jsonl_chunk(index, _lines(data.to_pybytes()), features, typed)
            else:
                yield _csv_piece(plan, index, data, header, features, typed)


def _lines(data: bytes) -> list[bytes]:
    """`data` cut after each newline (as `readline` would: only a newline ends a line)."""
    lines = [line + b"\n" for line in data.split(b"\n")]
    lines[-1] = lines[-1][:-1]
    return [line for line in lines if line]


def _csv_piece(
    plan: Plan, index: int, data: Any, header: list[str], features: list[str], typed: Features | None
) -> Chunk:
    """One chunk of a quote-free CSV: its lines, parsed on their own with the file's header names."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    first_line = plan.first_line(index)
    malformed: list[MalformedLine] = []

    def skip(row: Any) -> str:
        number = None if row.number is None else row.number + first_line - 1
        malformed.append(MalformedLine(number, row.text, row.expected_columns, row.actual_columns))
        return "skip"

    try:
        table = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(column_names=header, use_threads=False, block_size=1 << 22),
            parse_options=pacsv.ParseOptions(invalid_row_handler=skip),
            convert_options=pacsv.ConvertOptions(column_types={name: pa.string() for name in header}),
        )
    except pa.ArrowInvalid as e:
        # pyarrow counts rows from the start of what it was given (this chunk); say the file's line instead,
        # as it would had it read the whole file (where the header is row 1)
        message = re.sub(r"Row #(\d+)", lambda m: f"Row #{int(m.group(1)) + first_line - 1}", str(e))
        raise BatchError(f"{plan.path}: {message}") from None
    return _with_malformed(table_chunk(index, table.combine_chunks(), features, typed), malformed)


def _csv_sequential(
    plan: Plan, features: list[str], chunks: range, typed: Features | None
) -> Iterator[Chunk]:
    """CSV that may hold newlines in quoted cells, read from the start to the end. A CSV line that does not
    split into the header's fields goes with the chunk the parser was reading when it met it (the last
    chunk takes those after the last row; a file with no row at all gives one empty chunk to hold them)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    header = read_csv_header(plan.path)
    check_columns(plan.path, header, features)
    malformed: list[MalformedLine] = []

    def skip(row: Any) -> str:
        malformed.append(MalformedLine(row.number, row.text, row.expected_columns, row.actual_columns))
        return "skip"

    def taken() -> list[MalformedLine]:
        met, malformed[:] = list(malformed), []
        return met

    try:
        reader = pacsv.open_csv(
            plan.path,
            read_options=pacsv.ReadOptions(block_size=1 << 22, use_threads=False),
            parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=skip),
            convert_options=pacsv.ConvertOptions(column_types={name: pa.string() for name in header}),
        )
        held: tuple[int, pa.Table, list[MalformedLine]] | None = None  # one chunk back: the end may add lines
        for index, table in enumerate(rechunk(iter(reader), plan.chunk_size)):
            if held is not None and held[0] >= chunks.start:
                yield _with_malformed(table_chunk(held[0], held[1], features, typed), held[2])
            held = (index, table, taken())
        if held is None:
            held = (0, pa.table({name: pa.array([], pa.string()) for name in header}), [])
        if held[0] >= chunks.start:
            yield _with_malformed(table_chunk(held[0], held[1], features, typed), held[2] + taken())
    except pa.ArrowInvalid as e:
        raise BatchError(f"{plan.path}: {e}") from None


def _with_malformed(chunk: Chunk, lines: list[MalformedLine]) -> Chunk:
    chunk.malformed.extend(lines)
    return chunk
