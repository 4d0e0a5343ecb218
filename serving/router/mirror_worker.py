"""Shadow mirroring in a process of its own, so the shadow's copies cost the live path one socket write.

Sending a copy (an HTTP request to the shadow, reading its answer, comparing it with the live one) takes the
router about as much CPU as the live request itself. Done in the router's event loop, it delays the next live
request whenever they meet; done here, it runs wherever the operating system schedules this process (on a
small machine, at lower priority, next to the shadow's predictor).

`MirrorWorker` is the router's side: `offer` frames a copy, or drops it (and counts it) when the copies not yet
taken by the worker hold half the byte budget. Copies leave in one write every BATCH_SECONDS: a write that
wakes another process costs about as much as writing the live answer, and one per request would add that to
every live request; the worker queues the other half
(`mirroring.Mirror`). The worker sends back what happened (the shadow's latencies and codes, comparisons,
drops) every 0.1 s, and the router adds it to its own metrics: one registry, one /metrics.

    python -m serving.router.mirror_worker --fd N    (started by MirrorWorker; N is its end of a socketpair)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import astuple
from typing import Any

import orjson

from serving.router.executor_metrics import PredictorLabels, RouterMetrics
from serving.router.mirroring import MAX_BYTES, Mirror, MirrorCopy
from serving.router.routes import Backend

log = logging.getLogger("sluice.router")
BATCH_SECONDS = 0.005  # copies offered within this time leave together (the shadow is never waited for)

HEADER = struct.Struct("!II")  # JSON part length, bytes part length
REPORT_EVERY = 0.1
NICENESS = 10


@functools.lru_cache(maxsize=256)
def _labels(p: PredictorLabels) -> tuple[str, ...]:
    return astuple(p)


def encode(copy: MirrorCopy, address: str, authority: str | None) -> bytes:
    """One copy as a frame: the JSON description, then the request body and the live answer's bytes."""
    live = copy.live_answer if isinstance(copy.live_answer, bytes) else orjson.dumps(copy.live_answer)
    head = orjson.dumps(
        {
            "p": _labels(copy.backend.labels),
            "a": address,
            "h": authority,
            "m": copy.method,
            "t": copy.target,
            "s": copy.service,
            "H": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in copy.headers],
            "st": copy.live_status,
            "b": len(copy.body),
        }
    )
    payload = copy.body + live
    return HEADER.pack(len(head), len(payload)) + head + payload


class _Frames(asyncio.Protocol):
    """Reads length-prefixed frames from a stream and hands each (head, payload) to `on_frame`."""

    def __init__(self, on_frame: Callable[[dict[str, Any], bytes], None], on_lost: Callable[[], None]):
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
            head = orjson.loads(bytes(self.buffer[HEADER.size : HEADER.size + head_len]))
            payload = bytes(self.buffer[HEADER.size + head_len : end])
            del self.buffer[:end]
            self.on_frame(head, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_lost()


def _frame(doc: dict[str, Any]) -> bytes:
    head = orjson.dumps(doc)
    return HEADER.pack(len(head), 0) + head


# the worker process ------------------------------------------------------------------------------------------
class _Recorder:
    """The metric calls `Mirror` makes, recorded to be reported to the router."""

    def __init__(self) -> None:
        self.events: list[list[Any]] = []

    def observe_client(
        self, p: PredictorLabels, service: str, method: str, code: int, seconds: float
    ) -> None:
        self.events.append(["c", astuple(p), service, method, code, seconds])

    def observe_server(
        self, p: PredictorLabels, service: str, method: str, code: int, seconds: float
    ) -> None:
        self.events.append(["s", astuple(p), service, method, code, seconds])

    def count_comparison(self, p: PredictorLabels, disagree: bool) -> None:
        self.events.append(["cmp", astuple(p), disagree])

    def count_dropped(self, p: PredictorLabels) -> None:
        self.events.append(["d", astuple(p)])


async def _serve(fd: int, max_bytes: int, timeout: float) -> None:
    from serving.router.http_upstream import HttpUpstream

    loop = asyncio.get_running_loop()
    recorder = _Recorder()
    mirror = Mirror(recorder, max_bytes=max_bytes, timeout=timeout)  # type: ignore[arg-type]
    await mirror.start()
    backends: dict[tuple[str, str | None], Backend] = {}
    done = asyncio.Event()
    syncs: list[int] = []

    def on_frame(head: dict[str, Any], payload: bytes) -> None:
        if "sync" in head:
            syncs.append(head["sync"])
            return
        labels = PredictorLabels(*head["p"])
        key = (head["a"], head["h"])
        backend = backends.get(key)
        if backend is None:
            host, _, port = head["a"].rpartition(":")
            upstream = HttpUpstream(host, int(port), authority=head["h"])
            backend = backends[key] = Backend(labels.predictor_name, labels, upstream, ready=True)
        backend.labels = labels
        n = head["b"]
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in head["H"]]
        live = payload[n:]
        mirror.offer(
            MirrorCopy.of(
                backend, head["m"], head["t"], head["s"], headers, payload[:n], head["st"], live, len(live)
            )
        )

    sock = socket.socket(fileno=fd)
    transport, _ = await loop.connect_accepted_socket(lambda: _Frames(on_frame, done.set), sock)
    try:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), REPORT_EVERY)
            answered = []
            if syncs and mirror.idle():
                answered, syncs[:] = list(syncs), []
            if recorder.events or answered:
                transport.write(_frame({"e": recorder.events, "synced": answered}))
                recorder.events = []
    finally:
        await mirror.stop()
        for backend in backends.values():
            await backend.upstream.close()


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
        # copies not yet written, framed only when the batch leaves (off the live request's turn of the loop)
        self._batch: list[tuple[MirrorCopy, str, str | None]] = []
        self._batch_bytes = 0
        self._flush_at: asyncio.TimerHandle | None = None
        self.sent = 0
        self.dropped = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def start(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            return
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
        if self._transport is None or self._transport.is_closing():
            # Not running (yet, or any more): start it, and count this copy as dropped meanwhile.
            if self._starting is None or self._starting.done():
                self._starting = asyncio.get_running_loop().create_task(self.start())
            self.dropped += 1
            self.metrics.count_dropped(copy.backend.labels)
            return False
        upstream = copy.backend.upstream
        address, authority = upstream.address, getattr(upstream, "authority", None)
        if self._transport.get_write_buffer_size() + self._batch_bytes + copy.size > self.max_bytes // 2:
            self.dropped += 1
            self.metrics.count_dropped(copy.backend.labels)
            return False
        self._batch.append((copy, address, authority))
        self._batch_bytes += copy.size
        if self._flush_at is None:
            self._flush_at = asyncio.get_running_loop().call_later(BATCH_SECONDS, self._flush)
        self.sent += 1
        return True

    def _flush(self) -> None:
        """Write the batched copies to the worker in one write."""
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        if not batch:
            return
        if self._transport is None or self._transport.is_closing():
            for copy, _, _ in batch:  # the worker is gone: these copies are lost, and counted
                self.dropped += 1
                self.metrics.count_dropped(copy.backend.labels)
            return
        self._transport.write(
            b"".join([encode(copy, address, authority) for copy, address, authority in batch])
        )

    def _report(self, head: dict[str, Any], payload: bytes) -> None:
        m = self.metrics
        for event in head.get("e", []):
            kind, labels = event[0], PredictorLabels(*event[1])
            if kind == "c":
                m.observe_client(labels, *event[2:])
            elif kind == "s":
                m.observe_server(labels, *event[2:])
            elif kind == "cmp":
                m.count_comparison(labels, event[2])
            elif kind == "d":
                self.dropped += 1
                m.count_dropped(labels)
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
