"""Output files that grow chunk by chunk and can be cut back to the last checkpoint after a crash.

Text outputs (CSV, JSON Lines, the reject file) are appended to and fsynced; the checkpoint records their
size, and a resumed run truncates them to it. A Parquet output keeps the model's answers per chunk instead
(see `ParquetOutput`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AppendFile:
    """A file appended to in chunks; opened at `size` bytes (the checkpoint's), anything after is dropped."""

    def __init__(self, path: Path, size: int):
        self.path = path
        self._file = path.open("r+b" if path.exists() else "w+b")
        self._file.truncate(size)
        self._file.seek(size)
        self._dirty = False

    def append(self, data: bytes, sync: bool = True) -> int:
        """Write `data` (and fsync it, unless `sync` is off: then `sync()` before a checkpoint counts it);
        returns the new size (what the checkpoint records)."""
        if data:
            self._file.write(data)
            self._file.flush()
            self._dirty = True
        if sync:
            self.sync()
        return self._file.tell()

    def sync(self) -> None:
        """Make everything appended so far durable."""
        if self._dirty:
            os.fsync(self._file.fileno())
            self._dirty = False

    def close(self) -> None:
        self._file.close()


class ParquetOutput:
    """A Parquet file written chunk by chunk (one row group each), with the model's answers for each chunk
    kept beside it in a small Arrow file (which rows were kept, their labels and probabilities).

    A Parquet file cannot be reopened for appending (its footer is written last), so after a crash the
    finished chunks are written again: read again from the input, joined with their saved answers (no model
    call) and encoded with the same settings, which gives the same bytes. Keeping only the answers, not the
    rows, costs a few bytes per row instead of a second copy of the output.
    """

    def __init__(self, path: Path, parts: Path):
        self.path = path
        self.parts = parts
        self._writer: Any = None
        self._unsynced: list[int] = []
        self.path.unlink(missing_ok=True)

    def _answers(self, index: int) -> Path:
        return self.parts / f"answers-{index:06d}.arrow"

    def write(self, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        if self._writer is None:
            text = [
                f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
            ]
            # Dictionary encoding pays off for text (the digest column is one value) and wastes time on floats.
            self._writer = pq.ParquetWriter(
                self.path, table.schema, use_dictionary=text, compression="snappy"
            )
        self._writer.write_table(table)

    def save_answers(
        self, index: int, kept: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, sync: bool = True
    ) -> None:
        """Keep chunk `index`'s answers on disk, durable before the checkpoint counts the chunk as done (fsynced
        here, or by `sync_answers` at the checkpoint): one entry per input row, zero where it was refused."""
        # text labels (an object array): None, a null, where a row was refused
        label = (
            np.full(len(kept), None) if labels.dtype == object else np.zeros(len(kept), dtype=labels.dtype)
        )
        label[kept] = labels
        probability = np.zeros((len(kept), probabilities.shape[1]), dtype=probabilities.dtype)
        probability[kept] = probabilities
        columns = {"kept": pa.array(kept), "label": pa.array(label)}
        columns |= {f"p{c}": pa.array(probability[:, c]) for c in range(probability.shape[1])}
        write_ipc(self._answers(index), pa.table(columns), sync=sync)
        if not sync:
            self._unsynced.append(index)

    def sync_answers(self) -> None:
        """fsync the answers saved without `sync` since the last call."""
        for index in self._unsynced:
            fsync_file(self._answers(index))
        self._unsynced.clear()

    def load_answers(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The mask of kept rows, and their labels and probabilities, as `save_answers` got them."""
        with pa.memory_map(str(self._answers(index))) as source:
            table = pa.ipc.open_file(source).read_all()
        kept = table.column("kept").to_numpy(zero_copy_only=False).astype(bool)
        names = [n for n in table.column_names if n.startswith("p")]
        probabilities = np.column_stack([table.column(n).to_numpy() for n in names]) if names else None
        labels = table.column("label").to_numpy()
        return kept, labels[kept], (probabilities[kept] if probabilities is not None else np.empty((0, 0)))

    def has_answers(self, index: int) -> bool:
        return self._answers(index).exists()

    def close(self, schema: pa.Schema | None = None) -> None:
        """Finish the file (an empty one with `schema` if no chunk was written) and fsync it."""
        import pyarrow.parquet as pq

        if self._writer is None:
            if schema is None:
                raise ValueError("an empty Parquet output needs a schema")
            self._writer = pq.ParquetWriter(self.path, schema)
        self._writer.close()
        with self.path.open("rb+") as f:
            os.fsync(f.fileno())


def write_ipc(path: Path, table: pa.Table, sync: bool = True) -> None:
    """Write `table` as an Arrow IPC file at `path`, atomically (temporary name, rename) and, with `sync`,
    durably (fsync first; without it, `fsync_file` the path before a checkpoint counts it)."""
    tmp = path.with_suffix(".tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    if sync:
        fsync_file(tmp)
    os.replace(tmp, path)


def fsync_file(path: Path) -> None:
    with path.open("rb+") as f:
        os.fsync(f.fileno())
