"""The file formats of batch scoring (CSV, Parquet, JSON Lines): turning read rows into chunks of features,
and scored chunks into output rows and reject lines.

CSV cells are read as text and kept as text: the output repeats the input's cells exactly, and a bad cell
rejects one row, not the file. Where the chunks of a file begin and end, and how each is read, is `plan.py`.
For a model of numbers the features become a float64 matrix at once, column by column; for a model with typed
features (categorical, boolean, nullable) each cell becomes the value JSON would carry for its feature (text
parsed by the feature's type, an empty cell or a null None), and the validator judges it like any request.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from serving.core.validation import Features, RequestError

Format = Literal["csv", "parquet", "jsonl"]
SUFFIXES: dict[str, Format] = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}


class BatchError(ValueError):
    """A batch input or output that cannot be processed as a whole (unknown format, missing column)."""


MAX_HEADER_BYTES = 1 << 20


def detect_format(path: Path) -> Format:
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise BatchError(f"{path}: unknown file type {path.suffix!r} (expected {', '.join(SUFFIXES)})")
    return fmt


@dataclass
class Chunk:
    """Chunk `index` of a file: `rows` input rows, their feature matrix (NaN where a cell did not parse), the
    reasons for rows already known to be bad, the original rows to echo in the output, and the CSV lines met
    while reading it that are not rows at all."""

    index: int
    rows: int
    X: np.ndarray
    problems: dict[int, str] = field(default_factory=dict)
    table: pa.Table | None = None  # CSV (all text) and Parquet
    records: list[Any] | None = None  # JSON Lines: parsed objects, or the raw line where it did not parse
    malformed: list[MalformedLine] = field(default_factory=list)

    def original(self, i: int) -> Any:
        """Row `i` of the chunk as it came in, for the reject file."""
        if self.records is not None:
            return self.records[i]
        assert self.table is not None
        return self.table.slice(i, 1).to_pylist()[0]


def rechunk(batches: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.Table]:
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        while batch.num_rows:
            take = min(size - count, batch.num_rows)
            pending.append(batch.slice(0, take))
            count += take
            batch = batch.slice(take)
            if count == size:
                yield pa.Table.from_batches(pending).combine_chunks()
                pending, count = [], 0
    if count:
        yield pa.Table.from_batches(pending).combine_chunks()


def check_columns(path: Path, columns: list[str], features: list[str]) -> None:
    missing = [f for f in features if f not in columns]
    if missing:
        raise BatchError(
            f"{path}: missing feature column {missing[0]!r} ({len(missing)} missing; the file has {len(columns)} "
            f"columns: {', '.join(columns[:5])}{', ...' if len(columns) > 5 else ''})"
        )


def _float_column(column: pa.ChunkedArray | pa.Array, name: str, problems: dict[int, str]) -> np.ndarray:
    """A text or numeric column -> float64; cells that are empty, null or not numbers become NaN + a reason."""
    import pyarrow.compute as pc

    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        try:
            return np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        out = np.empty(len(column), dtype=np.float64)
        for i, cell in enumerate(column.to_pylist()):
            try:
                out[i] = float(cell)
            except (TypeError, ValueError):
                out[i] = math.nan
                problems.setdefault(
                    i,
                    f"feature {name!r}: "
                    + ("missing value" if cell in ("", None) else f"non-numeric value {cell!r}"),
                )
        return out
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_null(column.type):
        values = column.to_numpy(zero_copy_only=False) if column.null_count else column.to_numpy()
        out = np.asarray(values, dtype=np.float64)
        if column.null_count:
            for i in np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False)):
                problems.setdefault(int(i), f"feature {name!r}: missing value")
        return out
    raise BatchError(f"column {name!r}: type {column.type} is not numeric")


def _typed_chunk(index: int, table: pa.Table, typed: Features) -> Chunk:
    """Rows of a table for a model with typed features: each cell as JSON would carry it for its feature."""
    problems: dict[int, str] = {}
    X = np.empty((table.num_rows, typed.count), dtype=object)
    for j, name in enumerate(typed.names):
        column = table.column(name)
        text = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
        categorical = typed.rules[j].type == "categorical"
        for i, cell in enumerate(column.to_pylist()):
            if text and cell is not None:
                try:
                    cell = typed.from_text(cell, j, f"feature {name!r}")
                except RequestError as e:
                    problems.setdefault(i, str(e))
                    cell = None
            elif categorical and cell is not None and not isinstance(cell, str):
                cell = str(cell)  # a Parquet column of codes: its text is the category
            X[i, j] = cell
    return Chunk(index, table.num_rows, X, problems, table=table)


def table_chunk(index: int, table: pa.Table, features: list[str], typed: Features | None = None) -> Chunk:
    """A chunk of a table (CSV text cells or Parquet values). `typed`: the model's features when they are not
    all numbers (each cell then becomes what JSON would carry, for the validator to judge).

    A model of numbers: cells that are no finite number get a reason. Arrow keeps each column contiguous, so
    each goes into a row of a (features x rows) array with one straight copy, and the matrix is its transpose
    (a view): several times cheaper than a row-major copy."""
    if typed is not None and not typed.plain:
        return _typed_chunk(index, table, typed)
    problems: dict[int, str] = {}
    columns = np.empty((len(features), table.num_rows), dtype=np.float64)
    for j, name in enumerate(features):
        columns[j] = _float_column(table.column(name), name, problems)
    return Chunk(index, table.num_rows, columns.T, problems, table=table)


@dataclass(frozen=True)
class MalformedLine:
    """A CSV line that does not split into the header's columns (it cannot become a row at all)."""

    line: int | None
    text: str
    expected: int
    actual: int

    def reject(self) -> dict[str, Any]:
        reason = f"CSV line {self.line}: {self.actual} fields, the header has {self.expected}"
        return {"line": self.line, "reason": reason, "text": self.text}


def read_csv_header(path: Path) -> list[str]:
    """The column names on the first line, as UTF-8 text; a header that is not text, or absurdly long,
    is an error naming the file (the rows are decoded by pyarrow, which refuses invalid UTF-8 itself)."""
    with path.open("rb") as f:
        line = f.readline(MAX_HEADER_BYTES + 1)
    if len(line) > MAX_HEADER_BYTES:
        raise BatchError(f"{path}: the header line is longer than {MAX_HEADER_BYTES} bytes")
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BatchError(f"{path}: the header is not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        return next(csv.reader([text]), [])
    except csv.Error as e:
        raise BatchError(f"{path}: the header line is not CSV ({e})") from None


def jsonl_chunk(index: int, lines: list[bytes], features: list[str], typed: Features | None = None) -> Chunk:
    """A chunk of JSON Lines: each line one object; a line that is not one is a row with its reason.
    For a model with typed features (`typed`) each value is kept as sent, for the validator to judge."""
    import orjson

    records: list[Any] = []
    problems: dict[int, str] = {}
    values_as_sent = typed is not None and not typed.plain
    X = np.full(
        (len(lines), len(features)),
        None if values_as_sent else np.nan,
        dtype=object if values_as_sent else np.float64,
    )
    for i, line in enumerate(lines):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            records.append(line.decode("utf-8", "replace").rstrip("\n"))
            problems[i] = f"not valid JSON ({e})"
            continue
        records.append(record)
        if not isinstance(record, dict):
            problems[i] = f"expected a JSON object per line, got {type(record).__name__}"
            continue
        for j, name in enumerate(features):
            value = record.get(name)
            if values_as_sent:
                X[i, j] = value
            elif isinstance(value, bool) or not isinstance(value, int | float):
                why = "missing value" if value is None else f"non-numeric value {value!r}"
                problems.setdefault(i, f"feature {name!r}: {why}")
            else:
                X[i, j] = value
    return Chunk(index, len(lines), X, problems, records=records)


# writing ------------------------------------------------------------------------------------------


def output_columns(classes: list[Any]) -> list[str]:
    """A classifier's: its label and each class's probability; a regression's (no classes): its value."""
    return ["prediction", *(f"probability_{c}" for c in classes), "model_digest"]


def scored_rows(
    chunk: Chunk,
    keep: np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray,
    classes: list[Any],
    digest: str,
    fmt: Format,
    numeric: frozenset[str] = frozenset(),
) -> bytes | pa.Table:
    """The kept rows of `chunk` with their predictions: encoded bytes (CSV, JSON Lines) or a table (Parquet).

    `numeric` names text columns whose kept cells all parsed as numbers (the features): they need no quotes.
    """
    names = output_columns(classes)
    if fmt == "jsonl":
        import orjson

        records = chunk.records if chunk.records is not None else chunk.table.to_pylist()  # type: ignore[union-attr]
        lines = []
        for k, i in enumerate(np.flatnonzero(keep)):
            record = dict(records[i])
            label = labels[k]
            record["prediction"] = label.item() if isinstance(label, np.generic) else label
            for c, cls in enumerate(classes):
                record[f"probability_{cls}"] = float(probabilities[k, c])
            record["model_digest"] = digest
            lines.append(orjson.dumps(record))
        return b"".join(line + b"\n" for line in lines)
    if chunk.table is None:
        raise BatchError("JSON Lines input can only be written as JSON Lines (.jsonl) output")
    table = chunk.table.filter(pa.array(keep)) if not keep.all() else chunk.table
    clash = [n for n in names if n in table.column_names]
    if clash:
        raise BatchError(f"input column {clash[0]!r} clashes with an output column; rename it")
    # Typed conversions: pyarrow infers an untyped array slowly (milliseconds per chunk).
    if labels.dtype.kind in "OUS":  # text labels
        predicted = pa.array([str(label) for label in labels.tolist()], pa.string())
    elif labels.dtype.kind == "f" and not classes:  # a regression's values
        predicted = pa.array(labels.astype(np.float64), pa.float64())
    else:
        predicted = pa.array(labels.astype(np.int64), pa.int64())
    table = table.append_column("prediction", predicted)
    for c, cls in enumerate(classes):
        table = table.append_column(
            f"probability_{cls}", pa.array(probabilities[:, c].astype(np.float64), pa.float64())
        )
    table = table.append_column("model_digest", pa.repeat(pa.scalar(digest, pa.string()), table.num_rows))
    if fmt == "parquet":
        return table
    import pyarrow.csv as pacsv

    # Text cells are written back as they came in; quoted only where a cell needs it (pyarrow's
    # "needed" style quotes every text cell, so it is used only for a chunk that has such a cell).
    quoting = "needed" if _needs_quotes(table, numeric) else "none"
    out = io.BytesIO()
    if chunk.index == 0:  # pyarrow quotes every header name; write it as the csv module would
        header = io.StringIO()
        csv.writer(header, lineterminator="\n").writerow(table.column_names)
        out.write(header.getvalue().encode())
    pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=False, quoting_style=quoting))
    return out.getvalue()


def _needs_quotes(table: pa.Table, numeric: frozenset[str]) -> bool:
    import pyarrow.compute as pc

    if any(any(ch in n for ch in ',"\r\n') for n in table.column_names):
        return True
    text = [
        n
        for n in table.column_names
        if n not in numeric and n != "model_digest" and pa.types.is_string(table.schema.field(n).type)
    ]
    for name in text:
        column = table.column(name)
        for ch in (",", '"', "\n", "\r"):
            if pc.any(pc.greater_equal(pc.find_substring(column, ch), 0)).as_py():
                return True
    return False


def reject_lines(chunk: Chunk, reasons: dict[int, str], first_row: int) -> bytes:
    """One JSON line per refused row: its row number in the input (`first_row` is the chunk's first), the
    reason, and the row as it came."""
    lines = [
        json.dumps({"row": first_row + i, "reason": reasons[i], "record": chunk.original(i)}, default=str)
        for i in sorted(reasons)
    ]
    return "".join(line + "\n" for line in lines).encode()
