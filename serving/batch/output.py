"""Output files that grow chunk by chunk and can be cut back to the last checkpoint after a crash.

Text outputs (CSV, JSON Lines, the reject file) are appended to and fsynced; the checkpoint records their
size, and a resumed run truncates them to it. A Parquet file cannot be reopened for appending (its footer
is written last), so each chunk is also kept as an Arrow IPC part; a resumed run replays the finished
parts into a new Parquet writer with the same settings, which gives the same bytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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

    def append(self, data: bytes) -> int:
        """Write and fsync `data`; returns the new size (what the checkpoint records)."""
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())
        return self._file.tell()

    def close(self) -> None:
        self._file.close()


class ParquetOutput:
    """A Parquet file written chunk by chunk, with an Arrow IPC copy of each chunk to rebuild it from."""

    def __init__(self, path: Path, parts: Path, done: int):
        self.path = path
        self.parts = parts
        self._writer: Any = None
        self.path.unlink(missing_ok=True)
        for index in range(done):
            with pa.memory_map(str(self._part(index))) as source:
                self._write(pa.ipc.open_file(source).read_all())

    def _part(self, index: int) -> Path:
        return self.parts / f"part-{index:06d}.arrow"

    def _write(self, table: pa.Table) -> None:
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

    def append(self, index: int, table: pa.Table) -> None:
        part = self._part(index)
        tmp = part.with_suffix(".tmp")
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, part)
        self._write(table)

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
