"""Scoring one chunk, the same way in every engine: the predictor core validates and predicts the rows it can,
the others get a reason, and the result is encoded for the output file.

A chunk is scored from Arrow columns and numpy arrays only: the reader hands over an Arrow table (or, for
JSON Lines, parsed records) and its feature matrix, the core checks and predicts on the matrix, and the
output is the input table with the prediction columns appended (no pandas anywhere on the way).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.batch.formats import Chunk, Format, read_csv_header, reject_lines, scored_rows
from serving.core.predictor import Predictor, RequestError
from serving.core.validation import Features, check_answer

if TYPE_CHECKING:
    from serving.batch.plan import Plan

Progress = Callable[[int], None]  # called with the number of input rows done so far


@dataclass(frozen=True)
class RunKey:
    """What a rerun must match to carry on from a partial run's work directory."""

    input: str
    input_size: int
    input_mtime_ns: int
    model_digest: str
    chunk_size: int
    output_format: str

    @classmethod
    def of(cls, input: Path, digest: str, chunk_size: int, out_fmt: str) -> RunKey:
        stat = input.stat()
        return cls(str(input.resolve()), stat.st_size, stat.st_mtime_ns, digest, chunk_size, out_fmt)

    def as_dict(self, layout: str) -> dict[str, Any]:
        """The key as a checkpoint stores it, with the engine's layout of the work directory."""
        return {**asdict(self), "layout": layout}

    @staticmethod
    def fresh_workdir(work: Path) -> None:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)


@dataclass
class EngineResult:
    """What an engine leaves in the work directory for `score_file` to move into place, and its counts."""

    files: tuple[Path, Path]  # the finished output and reject file
    chunks: int
    data_rows: int  # input rows (CSV lines that are not rows are counted in `malformed`)
    scored: int
    rejected: int
    malformed: int
    resumed: int  # chunks a previous run had finished


@dataclass
class ScoredChunk:
    """What one chunk gives: the encoded output rows, the refused rows with their reasons, the CSV lines that
    were not rows, and the model's answers for the kept rows (kept so a Parquet output can be rebuilt)."""

    index: int
    rows: int
    output: Any  # bytes (CSV, JSON Lines) or a pyarrow Table (Parquet)
    refused: bytes  # reject lines, rows numbered from 0 within the chunk (`rejects(first_row)` renumbers)
    kept: np.ndarray  # bool per row
    labels: np.ndarray
    probabilities: np.ndarray
    malformed: bytes = b""  # reject lines for CSV lines that are not rows (numbered by file line)
    reasons: dict[int, str] = field(default_factory=dict)

    @property
    def scored(self) -> int:
        return int(self.kept.sum())

    @property
    def rejected(self) -> int:
        return len(self.reasons)

    def rejects(self, first_row: int) -> bytes:
        """The reject lines with row numbers counted from `first_row`, the row number of this chunk's first."""
        return renumber(self.refused, first_row)


def renumber(lines: bytes, first_row: int) -> bytes:
    """Reject lines numbered within their chunk -> numbered within the file. Re-encoding gives the same text
    as encoding once with the right number (the same `json.dumps`, and JSON values round-trip exactly)."""
    if not first_row or not lines:
        return lines
    out = []
    for line in lines.splitlines():
        record = json.loads(line)
        record["row"] += first_row
        out.append(json.dumps(record, default=str))
    return "".join(line + "\n" for line in out).encode()


def typed_features(predictor: Predictor) -> Features | None:
    """What a reader needs to know of the model's features: None for a model of numbers (the fast path, a
    float64 matrix column by column), its typed features otherwise (each cell as JSON would carry it)."""
    return None if predictor.features.plain else predictor.features


def unquoted_columns(predictor: Predictor) -> frozenset[str]:
    """Text columns whose kept cells need no quotes in CSV output: the features that parsed as numbers or
    booleans (a category is any text)."""
    rules = predictor.features.rules
    return frozenset(
        n for n, r in zip(predictor.feature_names, rules, strict=True) if r.type != "categorical"
    )


def no_labels(predictor: Predictor) -> np.ndarray:
    """The labels of a chunk with no kept row, typed as the model's answers are (a Parquet output's columns
    keep one type across chunks): its classes' type, or float64 values for a regression."""
    if not predictor.is_classifier:
        return np.empty(0, np.float64)
    kind = predictor.classes.dtype.kind
    return np.empty(0, object if kind in "OUS" else np.int64)


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
    keep = np.ones(chunk.rows, dtype=bool) if chunk.X.dtype == object else np.isfinite(chunk.X).all(axis=1)
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


def _refuse_uncomputed(
    keep: np.ndarray, X: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, reasons: dict[int, str]
) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose probabilities the model could not compute (`check_answer`, the rule every serving mode
    applies) move from the kept rows to the refused ones, with the core's reason; `keep` and `reasons` are
    updated in place, the answers of the rows still kept are returned."""
    computed = np.isfinite(probabilities).all(axis=1)
    if computed.all():
        return labels, probabilities
    rows = np.flatnonzero(keep)
    for k in np.flatnonzero(~computed):
        try:
            check_answer(X[k : k + 1], probabilities[k : k + 1])
        except RequestError as e:
            reasons[int(rows[k])] = str(e).removeprefix("row 0: ")
        keep[rows[k]] = False
    return labels[computed], probabilities[computed]


def score_chunk(
    predictor: Predictor, chunk: Chunk, out_fmt: Format, numeric: frozenset[str] = frozenset()
) -> ScoredChunk:
    """Validate, predict and encode one chunk (`numeric`: text columns known to hold only numbers)."""
    keep, X, reasons = validate_chunk(predictor, chunk)
    n_classes = len(predictor.signature.classes)
    if X is not None:
        prediction = predictor.predict(X)
        labels, probabilities = prediction.labels, prediction.probabilities
        labels, probabilities = _refuse_uncomputed(keep, X, labels, probabilities, reasons)
    else:
        labels, probabilities = no_labels(predictor), np.empty((0, n_classes))
    return ScoredChunk(
        index=chunk.index,
        rows=chunk.rows,
        output=encode(predictor, chunk, keep, labels, probabilities, out_fmt, numeric),
        refused=reject_lines(chunk, reasons, 0),
        kept=keep,
        labels=labels,
        probabilities=probabilities,
        malformed=b"".join(json.dumps(m.reject()).encode() + b"\n" for m in chunk.malformed),
        reasons=reasons,
    )


def encode(
    predictor: Predictor,
    chunk: Chunk,
    keep: np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray,
    out_fmt: Format,
    numeric: frozenset[str] = frozenset(),
) -> Any:
    """The kept rows of `chunk` with the given answers, as the output format wants them."""
    return scored_rows(
        chunk,
        keep,
        labels,
        probabilities,
        predictor.signature.classes,
        predictor.digest,
        out_fmt,
        numeric,
    )


def empty_output(predictor: Predictor, plan: Plan, out_fmt: Format) -> Any:
    """The output of an input with no rows: the header (CSV), an empty table with the schema (Parquet), or
    nothing (JSON Lines)."""
    import pyarrow as pa

    if out_fmt == "jsonl":
        return b""
    if plan.format == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_schema(plan.path).empty_table()
    elif plan.format == "csv":
        table = pa.table({name: pa.array([], pa.string()) for name in read_csv_header(plan.path)})
    else:
        table = pa.table({name: pa.array([], pa.float64()) for name in predictor.feature_names})
    chunk = Chunk(0, 0, np.empty((0, predictor.n_features)), table=table)
    none = np.zeros(0, bool)
    return encode(
        predictor,
        chunk,
        none,
        no_labels(predictor),
        np.empty((0, len(predictor.signature.classes))),
        out_fmt,
    )
