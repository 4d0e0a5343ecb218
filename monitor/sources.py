"""Where the prediction log is read from: the router's JSON Lines files (one machine) or its Redis stream (a
cluster), behind one interface, each read starting after a `Position` so that a long-running monitor or loop
reads only what is new.

A position is plain JSON (it is persisted between runs, see monitor.follow):

    files   {"kind": "files", "files": {"<file name>": <bytes read>, ...}}
            a file not named is read from its start (a new file after rotation); a file gone is forgotten (it
            was rotated away); a file shorter than its offset was replaced: read again from its start, counted
            as `file_truncated`.
    stream  {"kind": "stream", "stream": "<key>", "last": "<entry id>" | null}
            (and "added": how many entries the stream had taken up to `last`) entries after `last`; entries
            Redis trimmed before they were read (XADD MAXLEN ~ ran ahead of the reader) are counted as
            `stream_trimmed_unread` (from XINFO STREAM's entries-added and length: about, when writers and
            trimming race the read).

Nothing read is trusted: an entry or line that is not JSON, too long, or not a record of the log's shape is
skipped and counted by reason, never raised. Each record gets `_at`, its place in the source (file name and
offset, or the entry id), which orders records of equal time the same way however the log was read.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from serving.router.log_stream import FIELD, client_for, split_url
from serving.router.prediction_log import log_files
from serving.stream.broker import redact

MAX_LINE = 4 << 20  # a line (an entry) longer than this is skipped unread
PAGE = 1000  # stream entries per XRANGE


class SourceError(RuntimeError):
    """The log cannot be read at all (Redis unreachable, a position of another source); names what failed."""


@dataclass
class Skipped:
    """What was not used, by reason."""

    counts: Counter[str] = field(default_factory=Counter)

    def add(self, reason: str, n: int = 1) -> None:
        if n:
            self.counts[reason] += n

    @property
    def total(self) -> int:
        return sum(self.counts.values())


Position = dict[str, Any]


class LogSource(Protocol):
    """One log, read in order from a position."""

    label: str  # for people: the directory, or the URL without its password

    def read(self, skipped: Skipped, after: Position | None = None) -> Iterator[dict[str, Any]]:
        """The records after `after` (all of them without it); bad ones are counted in `skipped`."""

    @property
    def position(self) -> Position:
        """Where the last completed `read` ended (pass it as `after` to read only what comes next)."""

    @property
    def torn(self) -> int:
        """Lines the last read found unfinished at the end of the newest file (the writer may complete them);
        they are not part of `position` and are read again next time."""


def parse(raw: bytes, skipped: Skipped) -> dict[str, Any] | None:
    """One record from one line or entry, or None (counted)."""
    if len(raw) > MAX_LINE:
        skipped.add("line_too_long")
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        skipped.add("not_json")  # a torn line after a crash, an edited file, a foreign writer on the stream
        return None
    if not isinstance(doc, dict) or doc.get("kind") not in ("prediction", "feedback"):
        skipped.add("not_a_record")
        return None
    t = doc.get("time")
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
        skipped.add("bad_time")
        return None
    return doc


class FileLog:
    """The JSON Lines files of `serving.router.prediction_log.FileSink`, oldest first."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.label = str(directory)
        self._position: Position = {"kind": "files", "files": {}}
        self._torn = 0

    @property
    def position(self) -> Position:
        return self._position

    @property
    def torn(self) -> int:
        return self._torn

    def read(self, skipped: Skipped, after: Position | None = None) -> Iterator[dict[str, Any]]:
        offsets = _offsets(after, self.label)
        files = log_files(self.directory)
        done: dict[str, int] = {}
        self._torn = 0
        for k, path in enumerate(files):
            start = offsets.get(path.name, 0)
            try:
                handle = path.open("rb")
            except OSError:
                skipped.add("unreadable_file")  # (or deleted since it was listed)
                if path.name in offsets:
                    done[path.name] = offsets[path.name]  # unreadable for now: keep its place, not read twice
                continue
            with handle:
                size = handle.seek(0, 2)
                if size < start:
                    skipped.add("file_truncated")
                    start = 0
                handle.seek(start)
                at = start
                newest = k == len(files) - 1
                for line in handle:
                    if newest and not line.endswith(b"\n"):
                        self._torn = 1  # the writer may be in the middle of it: read it again next time
                        break
                    here, at = at, at + len(line)
                    if not line.strip():
                        continue
                    doc = parse(line, skipped)
                    if doc is not None:
                        doc["_at"] = [path.name, here]
                        yield doc
                done[path.name] = at
        self._position = {"kind": "files", "files": done}


def _offsets(after: Position | None, label: str) -> dict[str, int]:
    if after is None:
        return {}
    files = after.get("files")
    if after.get("kind") != "files" or not isinstance(files, dict):
        raise SourceError(
            f"{label}: the saved position is not one of a log directory ({after.get('kind')!r})"
        )
    out = {}
    for name, offset in files.items():
        if not isinstance(name, str) or isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise SourceError(f"{label}: the saved position has a bad offset {offset!r} for {name!r}")
        out[name] = offset
    return out


class StreamLog:
    """The Redis stream of `serving.router.log_stream.RedisStreamSink`, read by entry id (XRANGE)."""

    def __init__(self, url: str, client: Any = None, page: int = PAGE):
        try:
            self.url, self.stream = split_url(url)
        except ValueError as e:
            raise SourceError(str(e)) from None
        self.label = f"{redact(self.url, url)} stream {self.stream}"
        self.client = client if client is not None else client_for(self.url, socket_timeout=10.0)
        self.page = page
        self._position: Position = {"kind": "stream", "stream": self.stream, "last": None}

    @property
    def position(self) -> Position:
        return self._position

    @property
    def torn(self) -> int:
        return 0

    def read(self, skipped: Skipped, after: Position | None = None) -> Iterator[dict[str, Any]]:
        import redis

        last = self._last(after)
        seen = int((after or {}).get("added") or 0)  # entries the stream had taken up to `last`
        try:
            added, length = self._counts()
            lost = added - length - seen  # taken after `last` and trimmed before this read
            if lost > 0:
                skipped.add("stream_trimmed_unread", lost)
                seen += lost
            while True:
                start = "-" if last is None else "(" + last
                entries = self.client.xrange(self.stream, min=start, max="+", count=self.page)
                for key, fields in entries:
                    last = key.decode() if isinstance(key, bytes) else str(key)
                    seen += 1
                    raw = fields.get(FIELD.encode()) if isinstance(fields, dict) else None
                    if not isinstance(raw, bytes) or len(fields) != 1:
                        skipped.add("not_a_record")
                        continue
                    doc = parse(raw, skipped)
                    if doc is not None:
                        doc["_at"] = list(entry_id(last))
                        yield doc
                self._position = {"kind": "stream", "stream": self.stream, "last": last, "added": seen}
                if len(entries) < self.page:
                    break
        except (redis.RedisError, OSError) as e:
            raise SourceError(f"{self.label}: cannot read ({redact(str(e), self.url)})") from None

    def _last(self, after: Position | None) -> str | None:
        if after is None:
            return None
        last = after.get("last")
        if after.get("kind") != "stream" or after.get("stream") != self.stream:
            raise SourceError(f"{self.label}: the saved position is of another log ({after!r:.200})")
        if last is not None and (not isinstance(last, str) or entry_id(last) == (-1, -1)):
            raise SourceError(f"{self.label}: the saved position has a bad entry id {last!r:.100}")
        return last

    def _counts(self) -> tuple[int, int]:
        """How many entries the stream has taken in all (XINFO's entries-added) and holds now."""
        import redis

        try:
            info = self.client.xinfo_stream(self.stream)
        except redis.ResponseError:  # no such key yet: nothing written, nothing trimmed
            return 0, 0
        return int(info.get("entries-added", 0)), int(info.get("length", 0))


def entry_id(entry: str) -> tuple[int, int]:
    """A stream entry id as numbers ((-1, -1): not an entry id)."""
    ms, sep, seq = entry.partition("-")
    if not (ms.isdigit() and (not sep or seq.isdigit())) or len(entry) > 41:
        return (-1, -1)
    return (int(ms), int(seq or 0))


def is_stream(target: str) -> bool:
    """Whether a log argument names a Redis stream rather than a directory."""
    return target.startswith(("redis://", "rediss://", "unix://"))


def open_source(target: str | Path) -> LogSource:
    """The log at `target`: a directory, or redis://host:port/db?stream=KEY."""
    if isinstance(target, str) and is_stream(target):
        return StreamLog(target)
    path = Path(target)
    if not path.is_dir():
        raise SourceError(f"{target}: no such directory (start `sluice up --prediction-log {target}` first)")
    return FileLog(path)
