"""Mirror requests to the shadow predictor: after the live answer is written, through a queue bounded in bytes.

The caller never waits for the shadow: the router writes the live answer first, then `offer` puts a copy on
the queue, or drops it (and counts the drop) when the copies already queued hold `max_bytes`. Only requests
whose live answer was 2xx are mirrored: a body the live predictor refused tells nothing about the shadow and
could be a flood. A few worker tasks send the copies, record the shadow's latency under its own
`predictor_name`, and compare its answer with the live one for the disagreement counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from serving.router.comparison import disagree
from serving.router.executor_metrics import RouterMetrics
from serving.router.routes import Backend
from serving.router.upstream import UpstreamError

MAX_BYTES = 32 << 20


@dataclass(slots=True)
class MirrorCopy:
    """One request for the shadow. It shares the live request's headers and bodies (never changed after the
    live answer is written) rather than copying them, and is built once per mirrored request on the router's
    loop, so it stays a plain slotted record (a frozen dataclass costs several times more to build)."""

    backend: Backend
    method: str
    target: str
    service: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    live_status: int
    live_answer: Any  # the live answer (bytes or parsed JSON) to compare with; None: nothing to compare
    size: int  # bytes this copy holds while queued

    @classmethod
    def of(
        cls,
        backend: Backend,
        method: str,
        target: str,
        service: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        live_status: int,
        live_answer: Any,
        live_size: int,
    ) -> MirrorCopy:
        size = len(body) + live_size + len(target)
        for k, v in headers:
            size += len(k) + len(v)
        return cls(backend, method, target, service, headers, body, live_status, live_answer, size)


class MirrorSink(Protocol):
    """Where the router puts copies for the shadow: `Mirror` in its own event loop, or a `MirrorWorker`."""

    sent: int
    dropped: int

    async def start(self) -> None: ...

    def offer(self, copy: MirrorCopy) -> bool: ...

    async def join(self, timeout: float) -> None: ...

    async def stop(self) -> None: ...


class Mirror:
    """The queue of copies for the shadow and the tasks that send them."""

    def __init__(
        self,
        metrics: RouterMetrics,
        *,
        max_bytes: int = MAX_BYTES,
        workers: int = 2,
        timeout: float = 10.0,
        on_sent: Callable[[MirrorCopy, int], None] | None = None,
    ):
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.workers = workers
        self.timeout = timeout
        self.on_sent = on_sent
        self._queue: deque[MirrorCopy] = deque()
        self._queued_bytes = 0
        self._ready: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = 0
        self.sent = 0
        self.dropped = 0

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def idle(self) -> bool:
        """Nothing queued and nothing being sent."""
        return not self._queue and not self._busy

    async def start(self) -> None:
        self._start()

    def _start(self) -> None:
        if self._tasks:
            return
        self._ready = asyncio.Event()
        self._tasks = [asyncio.create_task(self._work(), name=f"mirror-{i}") for i in range(self.workers)]

    def offer(self, copy: MirrorCopy) -> bool:
        """Queue a copy for the shadow without waiting; False (and counted) when it was dropped."""
        if not 200 <= copy.live_status < 300:
            return False  # never mirrored: see the module docstring
        if not self._tasks:
            self._start()
        if self._queued_bytes + copy.size > self.max_bytes:
            self.dropped += 1
            self.metrics.count_dropped(copy.backend.labels)
            return False
        self._queue.append(copy)
        self._queued_bytes += copy.size
        assert self._ready is not None
        self._ready.set()
        return True

    async def _work(self) -> None:
        assert self._ready is not None
        while True:
            while not self._queue:
                self._ready.clear()
                await self._ready.wait()
            copy = self._queue.popleft()
            self._queued_bytes -= copy.size
            self._busy += 1
            try:
                await self._send(copy)
            except Exception:  # a broken shadow must never stop mirroring (or reach the caller)
                pass
            finally:
                self._busy -= 1

    async def _send(self, copy: MirrorCopy) -> None:
        backend = copy.backend
        started = time.perf_counter()
        try:
            response = await backend.upstream.request(
                copy.method, copy.target, copy.headers, copy.body, self.timeout
            )
            status = response.status
        except UpstreamError as e:
            status = 504 if e.timeout else 502
            response = None
        elapsed = time.perf_counter() - started
        if copy.service:
            self.metrics.observe_client(backend.labels, copy.service, copy.method, status, elapsed)
            self.metrics.observe_server(backend.labels, copy.service, copy.method, status, elapsed)
        self.sent += 1
        if response is not None and copy.live_answer is not None and status == 200:
            verdict = disagree(copy.live_answer, response.body)
            if verdict is not None:
                self.metrics.count_comparison(backend.labels, verdict)
        if self.on_sent is not None:
            self.on_sent(copy, status)

    async def join(self, timeout: float) -> None:
        """Wait (at most `timeout` s) until every queued copy was sent; used when draining a shadow."""
        deadline = time.monotonic() + timeout
        while (self._queue or self._busy) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        self._queue.clear()
        self._queued_bytes = 0
