"""Shadow mirroring in a process of its own, so the shadow's copies cost the live path one socket write.

Sending a copy (an HTTP request to the shadow, reading its answer, comparing it with the live one) takes the
router about as much CPU as the live request itself. Done in the router's event loop, it delays the next live
request whenever they meet; done here, it runs wherever the operating system schedules this process (on a
small machine, at lower priority, next to the shadow's predictor).

`MirrorWorker` is the router's side: `offer` keeps a copy (a reference to what the live request already holds:
nothing is copied or framed), or drops it (and counts it) when the copies not yet taken by the worker hold half
the byte budget; the worker queues the other half (`mirroring.Mirror`). Copies leave in one write per
BATCH_SECONDS, made by the offer that finds the batch that old, so right after a live answer left and with no
timer of its own; a batch no later offer takes along (the end of a burst) leaves within LINGER_SECONDS. On a
virtual machine a write that wakes a process on another CPU costs the writer about as much CPU as writing the
live answer (an inter-processor interrupt), so one per request would add that to every live request; one per
batch adds a fraction of it. A batch is one `marshal` frame of the copies' fields (written in C, a fraction of
a microsecond a copy; both ends run the same interpreter); the shadow's labels and address go once per
predictor, not once per copy. Every 0.1 s the worker sends back what happened as metric sums
(`RouterMetrics.take`: histogram buckets and counters per label set, however many copies they count), and the
router adds them to its own metrics (`RouterMetrics.merge`): one registry, one /metrics, and a report costs the
router the same at any mirrored rate.

    python -m serving.router.mirror_worker --fd N    (started by MirrorWorker; N is its end of a socketpair)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import marshal
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import astuple
from typing import Any

import orjson

from serving.router.executor_metrics import PredictorLabels, RouterMetrics, dropped_in
from serving.router.mirroring import MAX_BYTES, Mirror, MirrorCopy
from serving.router.routes import Backend

log = logging.getLogger("sluice.router")
BATCH_SECONDS = 0.02  # copies offered within this time leave together (the shadow is never waited for)
LINGER_SECONDS = 0.05  # a batch no later offer takes along leaves after at most this long

HEADER = struct.Struct("!II")  # JSON part length, bytes part length
REPORT_EVERY = 0.1
MAX_DEFINED = 256  # predictors the router remembers having described to the worker
NICENESS = 10


def encode(batch: list[tuple[int, MirrorCopy]]) -> bytes:
    """Copies (each with the id its predictor is known by) as one frame: the fields the worker needs, as
    `marshal` writes them (in C, a fraction of a microsecond a copy; both ends are the same interpreter)."""
    blob = marshal.dumps(
        [
            (
                backend_id,
                c.method,
                c.target,
                c.service,
                c.live_status,
                c.headers,
                c.body,
                c.live_answer if type(c.live_answer) is bytes else orjson.dumps(c.live_answer),
            )
            for backend_id, c in batch
        ]
    )
    return HEADER.pack(0, len(blob)) + blob


def decode(payload: bytes) -> list[tuple[int, str, str, str, int, list[tuple[bytes, bytes]], bytes, bytes]]:
    """`encode`'s frame -> [(backend id, method, target, service, live status, headers, body, live answer)]."""
    copies: list[tuple[int, str, str, str, int, list[tuple[bytes, bytes]], bytes, bytes]] = marshal.loads(
        payload
    )
    return copies


class _Frames(asyncio.Protocol):
    """Reads length-prefixed frames from a stream and hands each (head, payload) to `on_frame`; a frame without
    a JSON head (None) is a batch of copies."""

    def __init__(self, on_frame: Callable[[Any, bytes], None], on_lost: Callable[[], None]):
        self.on_frame = on_frame
        self.on_lost = on_lost
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= HEADER.size:
            head_len, payload_len = HEADER.unpack_from(self.buffer)
            end = HEADER.size + head_len + payload_len
            if len(self.buffer) < end:
                return
            head = (
                orjson.loads(bytes(self.buffer[HEADER.size : HEADER.size + head_len])) if head_len else None
            )
            payload = bytes(self.buffer[HEADER.size + head_len : end])
            del self.buffer[:end]
            self.on_frame(head, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_lost()


def _frame(doc: dict[str, Any]) -> bytes:
    head = orjson.dumps(doc)
    return HEADER.pack(len(head), 0) + head


# the worker process ------------------------------------------------------------------------------------------
async def _serve(fd: int, max_bytes: int, timeout: float) -> None:
    from serving.router.http_upstream import HttpUpstream

    loop = asyncio.get_running_loop()
    recorder = RouterMetrics()  # what the shadow's copies did since the last report
    mirror = Mirror(recorder, max_bytes=max_bytes, timeout=timeout)
    await mirror.start()
    upstreams: dict[tuple[str, str | None], HttpUpstream] = {}
    backends: dict[int, Backend] = {}
    done = asyncio.Event()
    syncs: list[int] = []

    def on_frame(head: Any, payload: bytes) -> None:
        if head is None:
            for backend_id, method, target, service, status, headers, body, live in decode(payload):
                backend = backends.get(backend_id)
                if backend is None:
                    continue  # never defined: not from MirrorWorker
                mirror.offer(
                    MirrorCopy.of(backend, method, target, service, headers, body, status, live, len(live))
                )
        elif "sync" in head:
            syncs.append(head["sync"])
        elif "def" in head:
            key = (head["a"], head["h"])
            upstream = upstreams.get(key)
            if upstream is None:
                host, _, port = head["a"].rpartition(":")
                upstream = upstreams[key] = HttpUpstream(host, int(port), authority=head["h"])
            labels = PredictorLabels(*head["p"])
            backends[head["def"]] = Backend(labels.predictor_name, labels, upstream, ready=True)

    sock = socket.socket(fileno=fd)
    transport, _ = await loop.connect_accepted_socket(lambda: _Frames(on_frame, done.set), sock)
    try:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), REPORT_EVERY)
            answered = []
            if syncs and mirror.idle():
                answered, syncs[:] = list(syncs), []
            sums = recorder.take()
            if sums or answered:
                transport.write(_frame({"m": sums, "synced": answered}))
    finally:
        await mirror.stop()
        for upstream in upstreams.values():
            await upstream.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.router.mirror_worker", description=__doc__)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--max-bytes", type=int, default=MAX_BYTES // 2)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the router stops it by closing the socket
    import uvloop

    asyncio.run(_serve(args.fd, args.max_bytes, args.timeout), loop_factory=uvloop.new_event_loop)
    return 0


# the router's side -------------------------------------------------------------------------------------------
def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    """The worker yields the CPU to live answers, and ends if the router dies without stopping it."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    with contextlib.suppress(OSError):
        os.nice(NICENESS)


class MirrorWorker:
    """The router's end: the same interface as `Mirror` (start, offer, join, stop, sent, dropped)."""

    def __init__(self, metrics: RouterMetrics, *, max_bytes: int = MAX_BYTES, timeout: float = 10.0):
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._transport: asyncio.Transport | None = None
        self._starting: asyncio.Task[None] | None = None
        self._synced: dict[int, asyncio.Future[None]] = {}
        self._sync_seq = 0
        # copies not yet written, encoded only when the batch leaves
        self._batch: list[MirrorCopy] = []
        # backend -> (its labels, address, authority, the id the worker knows them by)
        self._defined: dict[int, tuple[PredictorLabels, str, str | None, int]] = {}
        self._batch_bytes = 0
        self._batch_since = 0.0  # when the first copy of the batch was offered (time.monotonic)
        self._linger: asyncio.TimerHandle | None = None
        self._defined_ids: list[Backend] = []
        self._next_id = 0
        self.sent = 0
        self.dropped = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def start(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            return
        self._defined.clear()  # a new worker knows no predictor yet
        self._defined_ids.clear()
        ours, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "serving.router.mirror_worker",
                    "--fd",
                    str(theirs.fileno()),
                    "--max-bytes",
                    str(self.max_bytes // 2),
                    "--timeout",
                    str(self.timeout),
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_child_setup,
            )
        finally:
            theirs.close()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_accepted_socket(lambda: _Frames(self._report, self._lost), ours)
        self._transport = transport

    def offer(self, copy: MirrorCopy) -> bool:
        if not 200 <= copy.live_status < 300:
            return False
        transport = self._transport
        if transport is None or transport.is_closing():
            # Not running (yet, or any more): start it, and count this copy as dropped meanwhile.
            if self._starting is None or self._starting.done():
                self._starting = asyncio.get_running_loop().create_task(self.start())
            self.dropped += 1
            self.metrics.count_dropped(copy.backend.labels)
            return False
        if transport.get_write_buffer_size() + self._batch_bytes + copy.size > self.max_bytes // 2:
            self.dropped += 1
            self.metrics.count_dropped(copy.backend.labels)
            return False
        self._batch.append(copy)
        self._batch_bytes += copy.size
        self.sent += 1
        # The offer runs once the live answer has left: a batch old enough leaves now, in this
        # turn of the loop, with no timer and no wake-up of its own.
        now = time.monotonic()
        if len(self._batch) == 1:
            self._batch_since = now
            if self._linger is None:
                self._linger = asyncio.get_running_loop().call_later(LINGER_SECONDS, self._lingered)
        elif now - self._batch_since >= BATCH_SECONDS:
            self._flush()
        return True

    def _lingered(self) -> None:
        """At most every LINGER_SECONDS while copies come: what no offer took along (the end of a burst)."""
        self._linger = None
        self._flush()

    def _flush(self) -> None:
        """Write the batched copies to the worker in one write."""
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        if not batch:
            return
        if self._transport is None or self._transport.is_closing():
            for copy in batch:  # the worker is gone: these copies are lost, and counted
                self.dropped += 1
                self.metrics.count_dropped(copy.backend.labels)
            return
        definitions: list[bytes] = []
        frame = encode([(self._backend_id(copy.backend, definitions), copy) for copy in batch])
        self._transport.write(b"".join(definitions) + frame if definitions else frame)

    def _backend_id(self, backend: Backend, parts: list[bytes]) -> int:
        """The id the worker knows `backend` by; its definition goes into `parts` first when it is new (or
        when its labels or address changed since)."""
        upstream = backend.upstream
        address, authority = upstream.address, getattr(upstream, "authority", None)
        known = self._defined.get(id(backend))
        if known is not None and known[0] is backend.labels and known[1] == address and known[2] == authority:
            return known[3]
        if len(self._defined_ids) >= MAX_DEFINED:  # routes were reloaded many times: forget the old ones
            self._defined.clear()
            self._defined_ids.clear()
        self._next_id += 1
        backend_id = self._next_id
        self._defined_ids.append(backend)  # holds it, so its id() is never reused while it is known
        self._defined[id(backend)] = (backend.labels, address, authority, backend_id)
        parts.append(_frame({"def": backend_id, "p": astuple(backend.labels), "a": address, "h": authority}))
        return backend_id

    def _report(self, head: dict[str, Any], payload: bytes) -> None:
        sums = head.get("m")
        if sums:
            self.metrics.merge(sums)
            self.dropped += dropped_in(sums)
        for seq in head.get("synced", []):
            waiter = self._synced.pop(seq, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _lost(self) -> None:
        self._transport = None
        self._flush()  # counts what was batched as dropped
        for waiter in self._synced.values():
            if not waiter.done():
                waiter.set_result(None)
        self._synced.clear()

    async def join(self, timeout: float) -> None:
        """Wait (at most `timeout` s) until the worker has sent every copy it was given."""
        self._flush()
        if self._transport is None or self._transport.is_closing():
            return
        self._sync_seq += 1
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._synced[self._sync_seq] = waiter
        self._transport.write(_frame({"sync": self._sync_seq}))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter, timeout)

    async def stop(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._flush()  # the copies batched so far still go (closing the transport writes its buffer first)
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        process, self.process = self.process, None
        if process is not None:
            for _ in range(100):
                if process.poll() is not None:
                    break
                await asyncio.sleep(0.02)
            if process.poll() is None:
                process.kill()
                await asyncio.to_thread(process.wait)


if __name__ == "__main__":
    sys.exit(main())
