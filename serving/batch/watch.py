"""`sluice batch watch`: score every file that lands in a directory exactly once (the event-triggered batch).

A file is taken only once it is complete: hidden names (`.name.tmp`, the write-then-rename convention) are
ignored, and a file must keep the same size and modification time for `settle` seconds. The ledger
(`<out>/.sluice-ledger.jsonl`, appended and fsynced after each file) records every file by name and sha256
content hash (and size and mtime, so a known file is not hashed again) with its run summary or error, so a restart never scores a file twice and a file that comes
back with new content under the same name is scored again. A crash mid-file resumes from the batch
checkpoint on the next scan.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.batch.formats import SUFFIXES, BatchError
from serving.batch.score import RunSummary, default_rejects, score_file
from serving.core.predictor import Predictor

LEDGER = ".sluice-ledger.jsonl"


@dataclass(frozen=True)
class WatchEvent:
    name: str
    status: str  # "scored" or "failed"
    detail: str


def content_hash(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class Ledger:
    """The files already handled, keyed by (name, sha256)."""

    def __init__(self, path: Path):
        self.path = path
        self.seen: set[tuple[str, str]] = set()
        self.stats: set[tuple[str, int, int]] = set()  # (name, size, mtime_ns): skip re-hashing known files
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    self._remember(entry)
                except (ValueError, KeyError):
                    continue  # a torn last line from a crash: that file is simply handled again

    def _remember(self, entry: dict[str, Any]) -> None:
        self.seen.add((entry["name"], entry["sha256"]))
        if "mtime_ns" in entry:
            self.stats.add((entry["name"], int(entry["size"]), int(entry["mtime_ns"])))

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self.seen

    def record(self, entry: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._remember(entry)


class Watcher:
    """Scans `inbox`, scores settled new files into `outbox`, and records them in the ledger."""

    def __init__(
        self,
        predictor: Predictor,
        inbox: Path,
        outbox: Path,
        *,
        settle: float = 2.0,
        chunk_size: int = 50_000,
    ):
        if not inbox.is_dir():
            raise BatchError(f"{inbox}: not a directory")
        self.predictor = predictor
        self.inbox = inbox
        self.outbox = outbox
        outbox.mkdir(parents=True, exist_ok=True)
        self.settle = settle
        self.chunk_size = chunk_size
        self.ledger = Ledger(outbox / LEDGER)
        self._sizes: dict[str, tuple[int, int, float]] = {}  # name -> (size, mtime_ns, first seen so)

    def _settled(self, path: Path, now: float) -> bool:
        stat = path.stat()
        key = (stat.st_size, stat.st_mtime_ns)
        seen = self._sizes.get(path.name)
        if seen is None or seen[:2] != key:
            self._sizes[path.name] = (*key, now)
            first_seen = now
        else:
            first_seen = seen[2]
        age = time.time() - stat.st_mtime_ns / 1e9
        return age >= self.settle and (now - first_seen >= self.settle or age >= 2 * self.settle)

    def scan(self, on_event: Callable[[WatchEvent], None] | None = None) -> list[WatchEvent]:
        """One pass over the inbox; returns what it did (files it skipped as unsettled are retried later)."""
        events = []
        now = time.monotonic()
        for path in sorted(self.inbox.iterdir()):
            if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in SUFFIXES:
                continue
            if not self._settled(path, now):
                continue
            stat = path.stat()
            if (path.name, stat.st_size, stat.st_mtime_ns) in self.ledger.stats:
                continue
            digest = content_hash(path)
            if (path.name, digest) in self.ledger:
                continue
            event = self._score(path, digest)
            events.append(event)
            if on_event:
                on_event(event)
        return events

    def _score(self, path: Path, digest: str) -> WatchEvent:
        output = self.outbox / path.name
        stat = path.stat()
        entry: dict[str, Any] = {
            "name": path.name,
            "sha256": digest,
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
        }
        try:
            summary: RunSummary = score_file(
                self.predictor, path, output, chunk_size=self.chunk_size, rejects=default_rejects(output)
            )
        except (BatchError, OSError) as e:
            entry.update(status="failed", error=str(e))
            self.ledger.record(entry)
            return WatchEvent(path.name, "failed", str(e))
        entry.update(status="scored", summary=summary.__dict__)
        self.ledger.record(entry)
        return WatchEvent(path.name, "scored", summary.explain())

    def run(
        self,
        interval: float = 5.0,
        *,
        stop: Callable[[], bool] = lambda: False,
        on_event: Callable[[WatchEvent], None] | None = None,
    ) -> None:
        while not stop():
            self.scan(on_event)
            deadline = time.monotonic() + interval
            while time.monotonic() < deadline and not stop():
                time.sleep(min(0.2, interval))
