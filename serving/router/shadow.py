"""Mirror requests to the shadow predictor: fire-and-forget, through a bounded queue, answers dropped.

The caller never waits for the shadow: `offer` only puts a copy on a queue (dropping it, and counting the
drop, when the queue is full). A few worker tasks send the copies, record the shadow's latency under its
own `predictor_name`, and compare its answer with the live one for the disagreement counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from serving.router.comparison import disagree
from serving.router.executor_metrics import GatewayMetrics, PredictorLabels
from serving.router.upstream import Upstream, UpstreamError


@dataclass(frozen=True)
class MirrorCopy:
    upstream: Upstream
    labels: PredictorLabels
    method: str
    path: str
    service: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    live_status: int
    live_body: bytes | None  # None: nothing to compare (e.g. feedback)


class Mirror:
    """A bounded queue of copies for the shadow and the workers that send them."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        *,
        maxsize: int = 256,
        workers: int = 4,
        timeout: float = 10.0,
        on_sent: Callable[[MirrorCopy, int], None] | None = None,
    ):
        self.metrics = metrics
        self.maxsize = maxsize
        self.workers = workers
        self.timeout = timeout
        self.on_sent = on_sent
        self._queue: asyncio.Queue[MirrorCopy] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.sent = 0
        self.dropped = 0

    def start(self) -> None:
        if self._tasks:
            return
        self._queue = asyncio.Queue(self.maxsize)
        self._tasks = [asyncio.create_task(self._work(), name=f"shadow-{i}") for i in range(self.workers)]

    def offer(self, copy: MirrorCopy) -> None:
        """Queue a copy for the shadow without waiting; drop it when the shadow is behind."""
        if self._queue is None:
            self.start()
        assert self._queue is not None
        try:
            self._queue.put_nowait(copy)
        except asyncio.QueueFull:
            self.dropped += 1
            self.metrics.count_dropped(copy.labels)

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            copy = await self._queue.get()
            try:
                await self._send(copy)
            except Exception:  # a broken shadow must never stop mirroring (or reach the caller)
                pass
            finally:
                self._queue.task_done()

    async def _send(self, copy: MirrorCopy) -> None:
        started = time.perf_counter()
        try:
            response = await copy.upstream.request(
                copy.method, copy.path, copy.headers, copy.body, timeout=self.timeout
            )
            status = response.status
        except UpstreamError as e:
            status = 504 if e.timeout else 502
            response = None
        elapsed = time.perf_counter() - started
        self.metrics.observe_client(copy.labels, copy.service, copy.method, status, elapsed)
        self.metrics.observe_server(copy.labels, copy.service, copy.method, status, elapsed)
        self.sent += 1
        if (
            response is not None
            and copy.live_body is not None
            and status == 200
            and 200 <= copy.live_status < 300
        ):
            verdict = disagree(copy.live_body, response.body)
            if verdict is not None:
                self.metrics.count_comparison(copy.labels, verdict)
        if self.on_sent is not None:
            self.on_sent(copy, status)

    async def join(self, timeout: float) -> None:
        """Wait (at most `timeout` s) for queued copies to be sent; used when draining a shadow."""
        if self._queue is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        self._queue = None
