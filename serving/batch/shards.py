"""Gathering shards: the outputs of `sluice batch score` run once per input shard (one Argo pod each), joined
into one output file, one reject file and one summary.

A shard is a scored file beside its summary (`<name>.summary.json`, written by `sluice batch score
--summary-json`) and, when rows were refused, its reject file (`<name>.rejects.jsonl`). Shards are joined in
the order of their paths (the order of the input keys in the bucket); each reject line gains the shard it
came from, since row numbers count within a shard. A shard that does not fit (another format, other columns,
a summary that does not add up) stops the gather with its name: nothing is written half.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from serving.batch.formats import BatchError, Format, detect_format
from serving.batch.output import fsync_dir

SUMMARY = ".summary.json"
REJECTS = ".rejects.jsonl"
COUNTS = ("rows", "scored", "rejected")


@dataclass
class Shard:
    name: str  # the path below the shards directory (the input key)
    output: Path
    rejects: Path | None
    rows: int
    scored: int
    rejected: int


@dataclass
class GatherSummary:
    output: str
    rejects: str
    shards: int = 0
    rows: int = 0
    scored: int = 0
    rejected: int = 0
    names: list[str] = field(default_factory=list)

    def explain(self) -> str:
        return (
            f"{self.shards} shards, {self.rows} rows: {self.scored} scored -> {self.output}, "
            f"{self.rejected} rejected -> {self.rejects}"
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def find_shards(directory: Path, fmt: Format) -> list[Shard]:
    """The shards below `directory`, in path order, each checked against its summary."""
    if not directory.is_dir():
        raise BatchError(f"{directory}: no such directory of shards")
    shards = []
    for summary in sorted(directory.rglob(f"*{SUMMARY}")):
        output = summary.with_name(summary.name.removesuffix(SUMMARY))
        name = str(output.relative_to(directory))
        if summary.is_symlink() or output.is_symlink():
            raise BatchError(f"{name}: a symbolic link, not a shard written by sluice batch score")
        if not output.is_file():
            raise BatchError(f"{name}: its summary is here but the scored file is not")
        if detect_format(output) != fmt:
            raise BatchError(f"{name}: not a {fmt} file (every shard of a run has the run's format)")
        counts = _counts(summary, name)
        rejects = output.with_name(output.name + REJECTS)
        shards.append(Shard(name, output, rejects if rejects.is_file() else None, **counts))
    if not shards:
        raise BatchError(f"{directory}: no shard found (no *{SUMMARY} below it)")
    return shards


def _counts(path: Path, name: str) -> dict[str, int]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BatchError(f"{name}{SUMMARY}: not a JSON summary ({e})") from None
    if not isinstance(data, dict):
        raise BatchError(f"{name}{SUMMARY}: not a JSON object")
    counts = {}
    for key in COUNTS:
        value = data.get(key)
        if type(value) is not int or value < 0:
            raise BatchError(f"{name}{SUMMARY}: field {key!r} is {value!r}, expected a count")
        counts[key] = value
    if counts["scored"] + counts["rejected"] != counts["rows"]:
        raise BatchError(
            f"{name}{SUMMARY}: {counts['scored']} scored + {counts['rejected']} rejected is not {counts['rows']} rows"
        )
    return counts


def gather(directory: Path, output: Path, rejects: Path | None = None) -> GatherSummary:
    """Join the shards below `directory` into `output` (its format by extension) and `rejects`."""
    fmt = detect_format(output)
    rejects = rejects or output.with_name(output.name + REJECTS)
    shards = find_shards(directory, fmt)
    summary = GatherSummary(str(output), str(rejects))
    out_tmp = output.with_name(f".{output.name}.tmp")
    rejects_tmp = rejects.with_name(f".{rejects.name}.tmp")
    output.parent.mkdir(parents=True, exist_ok=True)
    rejects.parent.mkdir(parents=True, exist_ok=True)
    try:
        if fmt == "parquet":
            _join_parquet(shards, out_tmp)
        else:
            _join_text(shards, out_tmp, header=fmt == "csv")
        with rejects_tmp.open("wb") as sink:
            for shard in shards:
                if shard.rejects is not None:
                    sink.write(_tagged(shard))
            sink.flush()
            os.fsync(sink.fileno())
        for shard in shards:
            summary.shards += 1
            summary.names.append(shard.name)
            summary.rows += shard.rows
            summary.scored += shard.scored
            summary.rejected += shard.rejected
        os.replace(rejects_tmp, rejects)
        os.replace(out_tmp, output)
        fsync_dir(output.parent)
    finally:
        out_tmp.unlink(missing_ok=True)
        rejects_tmp.unlink(missing_ok=True)
    return summary


def _join_text(shards: list[Shard], target: Path, header: bool) -> None:
    """CSV and JSON Lines: the shards' bytes one after the other (CSV: the header once, the same in each)."""
    first: bytes | None = None
    with target.open("wb") as sink:
        for shard in shards:
            with shard.output.open("rb") as source:
                if header:
                    line = source.readline()
                    if first is None:
                        first = line
                        sink.write(line)
                    elif line != first:
                        raise BatchError(f"{shard.name}: its header differs from the first shard's")
                while block := source.read(1 << 22):
                    sink.write(block)
        sink.flush()
        os.fsync(sink.fileno())


def _join_parquet(shards: list[Shard], target: Path) -> None:
    """Parquet: every row group of every shard, re-encoded into one file (one schema throughout)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer: Any = None
    schema: pa.Schema | None = None
    try:
        for shard in shards:
            try:
                source = pq.ParquetFile(shard.output)
            except (pa.ArrowException, OSError) as e:
                raise BatchError(f"{shard.name}: cannot read it as Parquet ({e})") from None
            if schema is None:
                schema = source.schema_arrow
                text = [
                    f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
                ]
                writer = pq.ParquetWriter(target, schema, use_dictionary=text, compression="snappy")
            elif not source.schema_arrow.equals(schema):
                raise BatchError(f"{shard.name}: its columns differ from the first shard's")
            if source.metadata.num_rows != shard.scored:
                raise BatchError(
                    f"{shard.name}: {source.metadata.num_rows} rows, its summary says {shard.scored} were scored"
                )
            for group in range(source.num_row_groups):
                writer.write_table(source.read_row_group(group))
    finally:
        if writer is not None:
            writer.close()
    with target.open("rb+") as f:
        os.fsync(f.fileno())


def _tagged(shard: Shard) -> bytes:
    """The shard's reject lines, each with the shard it came from."""
    assert shard.rejects is not None
    out = []
    for number, line in enumerate(shard.rejects.read_bytes().splitlines(), start=1):
        try:
            record = json.loads(line)
        except ValueError:
            raise BatchError(f"{shard.name}{REJECTS}: line {number} is not JSON") from None
        if not isinstance(record, dict):
            raise BatchError(f"{shard.name}{REJECTS}: line {number} is not a JSON object")
        out.append(json.dumps({"shard": shard.name} | record, default=str))
    return "".join(line + "\n" for line in out).encode()
