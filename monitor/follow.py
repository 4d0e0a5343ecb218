"""Reading the prediction log incrementally: each read takes only what was written since the last one, and the
records a monitoring window can still use are kept, so the result is the one a full read gives.

`Follower.read` reads the source from its saved position, adds the new records to the ones kept, drops those
no later window can use (predictions older than the scope's `since`, feedback older than `since` less a second,
records of another namespace or deployment), and builds the `Log` from what is kept (records.build_log orders
them by time, so one read or many give the same rows, joins and figures). Counts of skipped lines add up over
reads, as a full read counts them over the whole log. With no `since` (`sluice loop`, `sluice monitor` without
--window) every record is kept: reading stays incremental, memory grows with the log as a full read's does.

With a state directory the position, the counts and the kept records survive a restart:

    state.json          {"version", "source", "scope", "position", "skipped", "records", "records_bytes"}
    records-<n>.jsonl   the kept records; bytes past `records_bytes` (a crash between the two writes) are dropped

New records are appended, then state.json is replaced (write and rename), so a crash at any point leaves the
pair consistent. When more than half of the kept records have expired, they are written to the next
records-<n+1>.jsonl, state.json is switched to it, and the old file deleted.

A state directory that cannot be trusted (state.json not JSON or of another shape or version, a records file
missing, shorter than recorded or holding a line that is not a record, another source or scope) is not an
error: the follower logs a warning naming the file and the fault, starts over from the start of the log (a full
read, which gives the same result as long as the log still holds what it held), and says so in `reset`.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from model.contract import Contract
from monitor.records import Log, Scope, build_log
from monitor.sources import LogSource, Position, Skipped, entry_id

log = logging.getLogger("sluice.monitor.follow")

VERSION = 1
STATE = "state.json"


class Follower:
    """One log read incrementally within one namespace/deployment scope."""

    def __init__(self, source: LogSource, state_dir: str | Path | None = None):
        self.source = source
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.records: list[dict[str, Any]] = []
        self.position: Position | None = None
        self.skipped: Counter[str] = Counter()  # line-level, summed over reads
        self.scope_key: list[Any] | None = None
        self.reset: str | None = None  # why the saved state was not used (None: it was, or there was none)
        self.read_last = 0  # records the last read took from the source
        self._decoded: dict[int, tuple[dict[str, Any], Any]] = {}  # what build_log decoded, by record
        self._contract: Contract | None = None  # the contract they were decoded against
        self._gen = 0
        self._bytes = 0
        if self.state_dir is not None:
            self._load()

    def read(self, contract: Contract, scope: Scope | None = None, label_window: float = 86400.0) -> Log:
        scope = scope or Scope()
        key = [scope.namespace, scope.deployment]
        if self.scope_key is not None and self.scope_key != key:
            self._restart(f"the saved records are of scope {self.scope_key}, not {key}")
        self.scope_key = key
        skipped = Skipped()
        new = [doc for doc in self.source.read(skipped, self.position) if _keep(scope, doc)]
        self.read_last = len(new)
        self.position = self.source.position
        self.skipped.update(skipped.counts)
        self.records.extend(new)
        kept = [doc for doc in self.records if _keep(scope, doc)]
        expired = len(self.records) - len(kept)
        self.records = kept
        if self.state_dir is not None:
            if expired and expired * 2 >= expired + len(kept):
                self._rewrite()
            else:
                self._append(new)
        if expired:
            held = {id(doc) for doc in kept}
            self._decoded = {k: v for k, v in self._decoded.items() if k in held}
        if self._contract is not contract:
            self._decoded, self._contract = {}, contract
        out = Skipped(Counter(self.skipped))
        out.add("not_json", self.source.torn)
        return build_log(self.records, contract, scope, label_window, out, self._decoded)

    # the state directory ------------------------------------------------------------------------------------
    def _records_path(self, gen: int) -> Path:
        assert self.state_dir is not None
        return self.state_dir / f"records-{gen}.jsonl"

    def _append(self, docs: list[dict[str, Any]]) -> None:
        assert self.state_dir is not None
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if docs:
            with self._records_path(self._gen).open("ab") as f:
                f.truncate(self._bytes)  # anything past the recorded end is from a write the state never took
                f.seek(self._bytes)
                f.write(b"".join(orjson.dumps(doc) + b"\n" for doc in docs))
                f.flush()
                os.fsync(f.fileno())
                self._bytes = f.tell()
        self._save()

    def _rewrite(self) -> None:
        assert self.state_dir is not None
        self.state_dir.mkdir(parents=True, exist_ok=True)
        old = self._records_path(self._gen)
        self._gen += 1
        with self._records_path(self._gen).open("wb") as f:
            f.write(b"".join(orjson.dumps(doc) + b"\n" for doc in self.records))
            f.flush()
            os.fsync(f.fileno())
            self._bytes = f.tell()
        self._save()
        old.unlink(missing_ok=True)

    def _save(self) -> None:
        assert self.state_dir is not None
        state = {
            "version": VERSION,
            "source": self.source.label,
            "scope": self.scope_key,
            "position": self.position,
            "skipped": dict(self.skipped),
            "records": self._records_path(self._gen).name,
            "records_bytes": self._bytes,
        }
        path = self.state_dir / STATE
        tmp = path.with_name(f".{STATE}.tmp")
        tmp.write_bytes(orjson.dumps(state))
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.replace(path)

    def _load(self) -> None:
        assert self.state_dir is not None
        path = self.state_dir / STATE
        if not path.exists():
            return
        try:
            state = orjson.loads(path.read_bytes())
            fault = _check(state, self.source.label)
            if fault is None:
                records_path = self.state_dir / state["records"]
                data = records_path.read_bytes()
                if len(data) < state["records_bytes"]:
                    fault = (
                        f"{records_path.name} holds {len(data)} bytes, {state['records_bytes']} were written"
                    )
                else:
                    records = [orjson.loads(line) for line in data[: state["records_bytes"]].splitlines()]
                    if not all(isinstance(r, dict) and r.get("kind") and "time" in r for r in records):
                        fault = f"{records_path.name} holds a line that is not a record"
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as e:
            fault = f"{type(e).__name__}: {e}"
        if fault is not None:
            self._restart(f"{path}: {fault}")
            return
        self.position = state["position"]
        self.skipped = Counter(state["skipped"])
        self.scope_key = state["scope"]
        self.records = records
        self._gen = int(state["records"].removeprefix("records-").removesuffix(".jsonl"))
        self._bytes = state["records_bytes"]

    def _restart(self, why: str) -> None:
        log.warning("prediction log reader: %s; reading the log again from its start", why)
        self.reset = why
        self.records, self.position, self.skipped, self.scope_key = [], None, Counter(), None
        self._decoded = {}
        self._gen += 1  # a fresh records file: the old one is left to be replaced
        self._bytes = 0


def _check(state: Any, label: str) -> str | None:
    """What is wrong with a loaded state.json (None: nothing)."""
    if not isinstance(state, dict):
        return "not a JSON object"
    if state.get("version") != VERSION:
        return f"version {state.get('version')!r}, expected {VERSION}"
    if state.get("source") != label:
        return f"saved for {state.get('source')!r}, not {label!r}"
    records, size = state.get("records"), state.get("records_bytes")
    if not isinstance(records, str) or not records.startswith("records-") or "/" in records:
        return f"records: {records!r} is not a records file name"
    if not records.removeprefix("records-").removesuffix(".jsonl").isdigit():
        return f"records: {records!r} is not a records file name"
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        return f"records_bytes: {size!r} is not a size"
    position, skipped, scope = state.get("position"), state.get("skipped"), state.get("scope")
    if position is not None and not _position_ok(position):
        return f"position: {position!r:.100} is not a position in a log"
    if not isinstance(skipped, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in skipped.values()
    ):
        return "skipped: not a map of counts"
    if scope is not None and not (isinstance(scope, list) and len(scope) == 2):
        return f"scope: {scope!r:.100} is not [namespace, deployment]"
    return None


def _position_ok(position: Any) -> bool:
    if not isinstance(position, dict):
        return False
    if position.get("kind") == "files":
        files = position.get("files")
        return isinstance(files, dict) and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in files.values()
        )
    last, added = position.get("last"), position.get("added", 0)
    if isinstance(added, bool) or not isinstance(added, int) or added < 0:
        return False
    return position.get("kind") == "stream" and (
        last is None or (isinstance(last, str) and entry_id(last) != (-1, -1))
    )


def _keep(scope: Scope, doc: dict[str, Any]) -> bool:
    """Whether `doc` can still count in this scope or a later one (`since` only moves forward; `until` is not
    a reason to drop)."""
    return Scope(scope.namespace, scope.deployment, scope.since).keeps(doc)
