"""`sluice batch watch`: score every file that lands in a directory exactly once (the event-triggered batch).

A file is taken only once it is complete: hidden names (`.name.tmp`, the write-then-rename convention) are
ignored, and a file must keep the same size and modification time for `settle` seconds. The ledger
(`<out>/.sluice-ledger.jsonl`, appended and fsynced after each file) records every file by name and sha256
content hash (and size and mtime, so a known file is not hashed again) with its run summary or error, so a
restart never scores a file twice and a file that comes back with new content under the same name is scored
again. A crash mid-file resumes from the batch checkpoint on the next scan.

One bad file never stops the scan. A file that cannot be scored (not UTF-8, a header that is not CSV, a
missing column, anything the reader refuses) is quarantined: moved to `<out>/quarantine/` with a
`<name>.reason.txt` beside it, and recorded in the ledger with the reason. An `OSError` (a full disk, a
flaky network mount) says nothing about the file: it is retried on later scans with exponential back-off
(as Argo's and Kubernetes' retries do), and quarantined only after `max_attempts`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from serving.batch.formats import SUFFIXES, BatchError
from serving.batch.score import RunSummary, default_rejects, score_file
from serving.core.predictor import Predictor

LEDGER = ".sluice-ledger.jsonl"
QUARANTINE = "quarantine"
Status = Literal["scored", "quarantined", "retrying"]


@dataclass(frozen=True)
class WatchEvent:
    name: str
    status: Status
    detail: str


@dataclass(frozen=True)
class Backoff:
    """Delays between attempts at a file that failed with an OSError: base, base x factor, ... up to cap."""

    base: float = 5.0
    factor: float = 2.0
    cap: float = 600.0

    def delay(self, attempt: int) -> float:
        return float(min(self.cap, self.base * self.factor ** max(attempt - 1, 0)))


@dataclass
class _Retry:
    attempts: int
    not_before: float


def content_hash(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def check_out_of_inbox(inbox: Path, outbox: Path) -> None:
    """Refuse an output directory inside the inbox (or the inbox itself): scored files would land where
    they are watched for, and be scored again."""
    inbox_real, out_real = inbox.resolve(), outbox.resolve()
    if out_real == inbox_real or inbox_real in out_real.parents:
        raise BatchError(
            f"--out {outbox} is inside the inbox {inbox}: scored files would be taken as new inputs; "
            "choose a directory outside it"
        )


class Ledger:
    """The files already handled, keyed by (name, sha256)."""

    def __init__(self, path: Path):
        self.path = path
        self.seen: set[tuple[str, str]] = set()
        self.stats: set[tuple[str, int, int]] = set()  # (name, size, mtime_ns): skip re-hashing known files
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                    self._remember(entry)
                except (ValueError, KeyError, TypeError):
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
        max_attempts: int = 5,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not inbox.is_dir():
            raise BatchError(f"{inbox}: not a directory")
        check_out_of_inbox(inbox, outbox)
        if max_attempts < 1:
            raise BatchError(f"max attempts {max_attempts}: must be at least 1")
        self.predictor = predictor
        self.inbox = inbox
        self.outbox = outbox
        outbox.mkdir(parents=True, exist_ok=True)
        self.settle = settle
        self.chunk_size = chunk_size
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.ledger = Ledger(outbox / LEDGER)
        self._sizes: dict[str, tuple[int, int, float]] = {}  # name -> (size, mtime_ns, first seen so)
        self._retries: dict[str, _Retry] = {}  # file name -> attempts so far after OSErrors

    def _settled(self, stat: os.stat_result, name: str, now: float) -> bool:
        key = (stat.st_size, stat.st_mtime_ns)
        seen = self._sizes.get(name)
        if seen is None or seen[:2] != key:
            self._sizes[name] = (*key, now)
            first_seen = now
        else:
            first_seen = seen[2]
        age = time.time() - stat.st_mtime_ns / 1e9
        return age >= self.settle and (now - first_seen >= self.settle or age >= 2 * self.settle)

    def scan(self, on_event: Callable[[WatchEvent], None] | None = None) -> list[WatchEvent]:
        """One pass over the inbox; returns what it did (files it skipped as unsettled are retried later)."""
        events = []
        for path in sorted(self.inbox.iterdir()):
            event = self._consider(path)
            if event is None:
                continue
            events.append(event)
            if on_event:
                on_event(event)
        return events

    def _consider(self, path: Path) -> WatchEvent | None:
        if path.name.startswith(".") or path.suffix.lower() not in SUFFIXES:
            return None
        retry = self._retries.get(path.name)
        if retry is not None and self.clock() < retry.not_before:
            return None
        entry: dict[str, Any] | None = None
        try:
            stat = path.stat()
            if not path.is_file() or not self._settled(stat, path.name, self.clock()):
                return None
            if (path.name, stat.st_size, stat.st_mtime_ns) in self.ledger.stats:
                return None
            entry = {"name": path.name, "sha256": "", "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
            entry["sha256"] = content_hash(path)
        except FileNotFoundError:
            return None  # gone between the listing and now: nothing to do
        except OSError as e:
            return self._failed_transiently(path, e, entry)
        if (path.name, entry["sha256"]) in self.ledger:
            return None
        return self._score(path, entry)

    def _score(self, path: Path, entry: dict[str, Any]) -> WatchEvent:
        output = self.outbox / path.name
        try:
            summary: RunSummary = score_file(
                self.predictor, path, output, chunk_size=self.chunk_size, rejects=default_rejects(output)
            )
        except OSError as e:
            return self._failed_transiently(path, e, entry)
        except Exception as e:  # anything else is this file's own problem: it must not stop the scan
            reason = str(e) if isinstance(e, BatchError) else f"{type(e).__name__}: {e}"
            return self._quarantine(path, entry, reason, output)
        self._retries.pop(path.name, None)
        entry.update(status="scored", summary=summary.__dict__)
        self.ledger.record(entry)
        return WatchEvent(path.name, "scored", summary.explain())

    def _failed_transiently(self, path: Path, error: OSError, entry: dict[str, Any] | None) -> WatchEvent:
        retry = self._retries.setdefault(path.name, _Retry(0, 0.0))
        retry.attempts += 1
        if retry.attempts >= self.max_attempts and entry is not None:
            self._retries.pop(path.name, None)
            reason = f"gave up after {retry.attempts} attempts: {error}"
            return self._quarantine(path, entry, reason, self.outbox / path.name)
        delay = self.backoff.delay(retry.attempts)
        retry.not_before = self.clock() + delay
        return WatchEvent(
            path.name,
            "retrying",
            f"{error} (attempt {retry.attempts} of {self.max_attempts}; next try in {delay:g} s)",
        )

    def _quarantine(self, path: Path, entry: dict[str, Any], reason: str, output: Path) -> WatchEvent:
        """Move the file out of the inbox into `<out>/quarantine/` with its reason; record it in the ledger."""
        shutil.rmtree(output.with_name(output.name + ".partial"), ignore_errors=True)
        where = self.outbox / QUARANTINE
        where.mkdir(exist_ok=True)
        target = where / path.name
        if target.exists():  # an earlier file of the same name: keep both
            target = where / f"{entry['sha256'][:12]}-{path.name}"
        try:
            shutil.move(path, target)
            moved = f"moved to {target}"
        except OSError as e:  # a read-only inbox: the ledger alone keeps it from being tried again
            moved = f"left in place ({e})"
            target = where / path.name
        (target.parent / f"{target.name}.reason.txt").write_text(f"{path.name}: {reason}\n")
        entry.update(status="quarantined", error=reason, quarantined_to=str(target))
        self.ledger.record(entry)
        return WatchEvent(path.name, "quarantined", f"{reason}; {moved}")

    def run(
        self,
        interval: float = 5.0,
        *,
        stop: Callable[[], bool] = lambda: False,
        on_event: Callable[[WatchEvent], None] | None = None,
        on_error: Callable[[OSError, float], None] | None = None,
    ) -> None:
        """Scan every `interval` seconds until `stop()`. A scan that fails as a whole (the inbox unreadable,
        the ledger unwritable) is retried with back-off instead of ending the watch."""
        failures = 0
        while not stop():
            wait = interval
            try:
                self.scan(on_event)
                failures = 0
            except OSError as e:
                failures += 1
                wait = max(interval, self.backoff.delay(failures))
                if on_error:
                    on_error(e, wait)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and not stop():
                time.sleep(min(0.2, wait))
