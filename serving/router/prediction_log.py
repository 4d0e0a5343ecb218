"""The prediction log: what the router answered, kept for monitoring and retraining, off the request path.

After an answer's bytes are written, the router offers a copy (the request body, the answer body, the predictor
that answered and its model digest, the puid, the time) to `PredictionLog.offer`. That call only samples and
appends to an in-memory buffer bounded in bytes; a writer thread comes by every `interval` (or when a quarter of
the buffer is used), turns the copies into JSON Lines records and hands them to a `LogSink` in one batch (one
write and one flush per batch, not per request). When the buffer is full, or a copy is larger than `max_record_bytes`, the copy is
dropped and counted (`sluice_prediction_log_dropped_total{reason}`): the log never slows or fails serving.

Record (one JSON object per line, `"v": 1`):

    kind        "prediction" or "feedback"
    time        seconds since the epoch, when the router answered
    namespace, deployment, predictor, digest    where it was served (digest: the predictor's model_digest)
    puid        the request id (Seldon v1's puid; v2: the request's `id` when it is a plain token), or null
    protocol    "seldon" or "v2"
    request, response   (predictions) the bodies as JSON
    truth, reward       (feedback) what the caller reported about the prediction with this puid

Feedback is always recorded (it is rare and what the labels are made of); predictions are sampled at `sample`.
A body that is not JSON is recorded as null with `"malformed": true` (the predictor judged it, not the log).

`FileSink` appends to `predictions-<UTC time>-<pid>-<n>.jsonl` files in one directory, starting a new file once
one reaches `max_file_bytes` and deleting the oldest beyond `keep_files`. The cluster's sink,
`serving.router.log_stream.RedisStreamSink`, implements the same two methods, `write(lines)` and `close()`, and
takes the batches the writer thread hands it (see the README).
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
from prometheus_client.core import CounterMetricFamily, Metric

from deployment import metric_names as n
from serving.router import puid as puids

log = logging.getLogger("sluice.router.prediction_log")

VERSION = 1
FILE_PREFIX = "predictions-"
FILE_SUFFIX = ".jsonl"
MAX_RECORD_BYTES = 256 << 10
BUFFER_BYTES = 32 << 20
MAX_FILE_BYTES = 64 << 20
INTERVAL = 0.25  # seconds between the writer's rounds (sooner when a quarter of the buffer is used)
WARN_EVERY = 30.0  # seconds between two warnings that the sink fails (the counter counts every drop)
# Reasons a record is not written (the `reason` label).
QUEUE_FULL = "queue_full"
OVERSIZE = "oversize"
SINK_ERROR = "sink_error"


class LogSink(Protocol):
    """Where records go: `write` takes a batch of JSON Lines (each ending in a newline), in order."""

    def write(self, lines: Sequence[bytes]) -> None: ...

    def close(self) -> None: ...


class FileSink:
    """Append-only JSON Lines files in one directory, a new file every `max_file_bytes`."""

    def __init__(
        self, directory: str | Path, max_file_bytes: int = MAX_FILE_BYTES, keep_files: int | None = None
    ):
        if max_file_bytes < 1024:
            raise ValueError(f"max_file_bytes: {max_file_bytes} is too small (at least 1024)")
        if keep_files is not None and keep_files < 1:
            raise ValueError(f"keep_files: {keep_files} must be at least 1")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_file_bytes = max_file_bytes
        self.keep_files = keep_files
        self._seq = itertools.count(1)
        self._file: Any = None
        self._size = 0
        self.path: Path | None = None

    def _open(self) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.path = self.directory / f"{FILE_PREFIX}{stamp}-{os.getpid()}-{next(self._seq):04d}{FILE_SUFFIX}"
        self._file = self.path.open("ab")
        self._size = self._file.tell()
        self._prune()

    def _prune(self) -> None:
        if self.keep_files is None:
            return
        files = log_files(self.directory)
        for old in files[: max(0, len(files) - self.keep_files)]:
            if old != self.path:
                old.unlink(missing_ok=True)

    def write(self, lines: Sequence[bytes]) -> None:
        for line in lines:
            if self._file is None or (self._size and self._size + len(line) > self.max_file_bytes):
                self.close()
                self._open()
            self._file.write(line)
            self._size += len(line)
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def log_files(directory: str | Path) -> list[Path]:
    """The log's files in the order they were written."""
    return sorted(
        Path(directory).glob(f"{FILE_PREFIX}*{FILE_SUFFIX}"), key=lambda p: (p.stat().st_mtime, p.name)
    )


@dataclass(frozen=True)
class Copy:
    """What the router hands over per answer (raw bytes: parsing happens on the writer thread)."""

    kind: str  # "prediction" or "feedback"
    time: float
    namespace: str
    deployment: str
    predictor: str
    digest: str | None
    puid: str | None
    v1: bool
    request: bytes
    response: bytes


class PredictionLog:
    """Samples and buffers copies on the event loop; a thread writes them to a `LogSink`."""

    def __init__(
        self,
        sink: LogSink,
        *,
        sample: float = 1.0,
        max_record_bytes: int = MAX_RECORD_BYTES,
        buffer_bytes: int = BUFFER_BYTES,
        interval: float = INTERVAL,
        rng: Callable[[], float] = random.random,
    ):
        if not 0.0 <= sample <= 1.0:
            raise ValueError(f"sample: {sample} is not a fraction between 0 and 1")
        self.sink = sink
        self.sample = sample
        self.max_record_bytes = max_record_bytes
        self.buffer_bytes = buffer_bytes
        self.interval = interval
        self.rng = rng
        self._buffer: deque[Copy] = deque()
        self._buffered = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._writing = False
        self._warned_at = -WARN_EVERY
        self._unreported = 0  # records dropped by the sink since the last warning
        # Counters, each written by one thread only (the loop: offered, dropped on offer; the writer: the rest).
        self.dropped_offer: dict[tuple[str, str, str], int] = {}
        self.dropped_write: dict[tuple[str, str, str], int] = {}
        self.written: dict[tuple[str, str, str], int] = {}

    # the event loop's side ---------------------------------------------------------------------------
    def offer(self, copy: Copy) -> None:
        """Keep `copy` if sampled and there is room; never blocks, never raises."""
        if copy.kind == "prediction" and self.sample < 1.0 and self.rng() >= self.sample:
            return
        size = len(copy.request) + len(copy.response)
        if size > self.max_record_bytes:
            self._drop(copy, OVERSIZE)
            return
        with self._lock:
            full = self._buffered + size > self.buffer_bytes
            if not full:
                self._buffer.append(copy)
                self._buffered += size
                pressing = self._buffered > self.buffer_bytes // 4
        if full:
            self._drop(copy, QUEUE_FULL)
        elif pressing and not self._wake.is_set():
            self._wake.set()  # otherwise the writer comes by itself every `interval`: one write per batch

    def _drop(self, copy: Copy, reason: str) -> None:
        self._count(self.dropped_offer, (copy.namespace, copy.deployment, reason))

    # the writer's side -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is buffered, then close the sink."""
        if self._thread is not None:
            self._stopping = True
            self._wake.set()
            self._thread.join(timeout)
            self._thread = None

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything offered so far is written (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._buffer and not self._writing:
                    return True
            self._wake.set()
            time.sleep(0.01)
        return False

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            with self._lock:
                batch = list(self._buffer)
                self._buffer.clear()
                self._buffered = 0
                self._writing = bool(batch)
            if batch:
                self._write(batch)
                with self._lock:
                    self._writing = False
            if self._stopping:
                with self._lock:
                    rest = bool(self._buffer)
                if not rest:
                    break
        try:
            self.sink.close()
        except OSError as e:
            log.warning("prediction log: closing the sink failed: %s", e)

    def _write(self, batch: list[Copy]) -> None:
        lines = []
        for copy in batch:
            lines.append(orjson.dumps(record(copy)) + b"\n")
        try:
            self.sink.write(lines)
        except Exception as e:  # a full disk, a Redis that is down: count and carry on serving
            self._unreported += len(lines)
            now = time.monotonic()
            if now - self._warned_at >= WARN_EVERY:  # one line per WARN_EVERY, not one per batch
                log.warning("prediction log: %d record(s) dropped, the sink failed: %s", self._unreported, e)
                self._warned_at, self._unreported = now, 0
            for copy in batch:
                self._count(self.dropped_write, (copy.namespace, copy.deployment, SINK_ERROR))
            return
        for copy in batch:
            self._count(self.written, (copy.namespace, copy.deployment, copy.kind))

    @staticmethod
    def _count(counts: dict[Any, int], key: Any) -> None:
        counts[key] = counts.get(key, 0) + 1

    # metrics ---------------------------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        labels = [n.NAMESPACE, n.DEPLOYMENT]
        written = CounterMetricFamily(
            n.PREDICTION_LOG_RECORDS, "Records written to the prediction log", labels=[*labels, "kind"]
        )
        for key, count in sorted(self.written.items()):
            written.add_metric(list(key), count)
        dropped = CounterMetricFamily(
            n.PREDICTION_LOG_DROPPED,
            "Records the prediction log dropped (queue_full, oversize, sink_error); serving went on",
            labels=[*labels, "reason"],
        )
        rows = dict(self.dropped_offer)
        for key, count in list(self.dropped_write.items()):
            rows[key] = rows.get(key, 0) + count
        for key, count in sorted(rows.items()):
            dropped.add_metric(list(key), count)
        yield from (written, dropped)


def record(copy: Copy) -> dict[str, Any]:
    """The JSON Lines record of one copy (runs on the writer thread)."""
    out: dict[str, Any] = {
        "v": VERSION,
        "kind": copy.kind,
        "time": copy.time,
        "namespace": copy.namespace,
        "deployment": copy.deployment,
        "predictor": copy.predictor,
        "digest": copy.digest,
        "puid": copy.puid,
        "protocol": "seldon" if copy.v1 else "v2",
    }
    request = _json(copy.request)
    if request is _MALFORMED:
        out["malformed"] = True
        request = None
    if copy.kind == "feedback":
        doc = request if isinstance(request, dict) else {}
        out["truth"] = doc.get("truth")
        reward = doc.get("reward")
        out["reward"] = reward if isinstance(reward, int | float) and not isinstance(reward, bool) else None
        if out["puid"] is None:
            out["puid"] = _feedback_puid(doc)
        return out
    response = _json(copy.response)
    if response is _MALFORMED:
        out["malformed"] = True
        response = None
    if out["puid"] is None and not copy.v1 and isinstance(request, dict):
        rid = request.get("id")
        out["puid"] = rid if isinstance(rid, str) and puids.PATTERN.match(rid) else None
    out["request"] = request
    out["response"] = response
    return out


_MALFORMED = object()


def _json(body: bytes) -> Any:
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _MALFORMED


def _feedback_puid(doc: dict[str, Any]) -> str | None:
    response = doc.get("response")
    meta = response.get("meta") if isinstance(response, dict) else None
    value = meta.get("puid") if isinstance(meta, dict) else None
    return value if isinstance(value, str) and puids.PATTERN.match(value) else None
