"""The router's side of the mirror worker process: copies are batched into one write, and what is batched
counts against the byte budget (a burst faster than one batch is bounded, not buffered)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

import pytest
from testkit.services import free_port

from deployment import seldon
from serving.router import mirror_worker
from serving.router.executor_metrics import RouterMetrics
from serving.router.http_upstream import HttpUpstream
from serving.router.mirror_worker import REPORT_EVERY, MirrorWorker
from serving.router.mirroring import MirrorCopy
from serving.router.routes import Backend, labels_for

PREDICT = "/api/v1.0/predictions"


def _backend() -> Backend:
    sd = seldon.parse(
        {
            "apiVersion": "machinelearning.seldon.io/v1",
            "kind": "SeldonDeployment",
            "metadata": {"name": "sd", "namespace": "staging"},
            "spec": {
                "predictors": [
                    {"name": n, "traffic": t, "shadow": s, "graph": {"name": "classifier", "parameters": []}}
                    for n, t, s in (("m-a", 100, False), ("m-s", 0, True))
                ]
            },
        }
    )
    # Nothing listens there: the worker's sends fail, which is not what these tests look at.
    return Backend("m-s", labels_for(sd)["m-s"], HttpUpstream("127.0.0.1", free_port()), ready=True)


def _copy(backend: Backend, i: int) -> MirrorCopy:
    """A small copy of a request the live predictor answered 200."""
    return MirrorCopy.of(backend, "POST", PREDICT, "predictions", [], b'{"i": %d}' % i, 200, b"{}", 2)


def test_a_burst_within_one_batch_is_bounded_by_the_byte_budget() -> None:
    backend = _backend()

    async def run() -> tuple[list[bool], int, int]:
        worker = MirrorWorker(RouterMetrics(), max_bytes=10 << 20)  # half of it (5 MiB) on the router's side
        await worker.start()
        big = b"x" * (2 << 20)
        offered = [
            worker.offer(MirrorCopy.of(backend, "POST", PREDICT, "predictions", [], big, 200, b"{}", 2))
            for _ in range(6)
        ]
        await worker.join(10)
        await worker.stop()
        return offered, worker.sent, worker.dropped

    offered, sent, dropped = asyncio.run(run())
    assert offered == [True, True, False, False, False, False]
    assert (sent, dropped) == (2, 4)


def test_small_copies_offered_together_all_reach_the_worker() -> None:
    backend = _backend()

    async def run() -> tuple[int, int, bool]:
        worker = MirrorWorker(RouterMetrics(), max_bytes=10 << 20)
        await worker.start()
        for i in range(50):
            worker.offer(_copy(backend, i))
        pid = worker.pid
        await worker.join(10)
        alive = worker.process is not None and worker.process.poll() is None
        await worker.stop()
        return worker.sent, worker.dropped, alive and pid is not None

    sent, dropped, alive = asyncio.run(run())
    assert (sent, dropped, alive) == (50, 0, True)


def _server_counts(metrics: RouterMetrics, predictor: str) -> dict[tuple[str, str], float]:
    """(predictor_version, code) -> observations of the server histogram for `predictor`."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            if s.name.endswith("_server_requests_seconds_count") and s.labels["predictor_name"] == predictor:
                out[s.labels["predictor_version"], s.labels["code"]] = s.value
    return out


def test_every_copy_is_counted_once_under_the_labels_its_predictor_had_when_offered() -> None:
    """The worker reports sums, not events, and learns a predictor's labels once: a report lost, merged
    twice, or a relabelled predictor counted under its old labels changes these counts."""
    backend = _backend()
    old = backend.labels

    async def run() -> tuple[RouterMetrics, int, int]:
        metrics = RouterMetrics()
        worker = MirrorWorker(metrics, max_bytes=10 << 20)
        await worker.start()
        for i in range(40):
            worker.offer(_copy(backend, i))
        await worker.join(10)
        backend.labels = replace(old, predictor_version="v2")  # the routes were reloaded with a new version
        for i in range(25):
            worker.offer(_copy(backend, i))
        await worker.join(10)
        await asyncio.sleep(3 * REPORT_EVERY)  # a report after the last one would add to the counts
        await worker.stop()
        return metrics, worker.sent, worker.dropped

    metrics, sent, dropped = asyncio.run(run())
    assert (sent, dropped) == (65, 0)
    # Nothing listens at the shadow's address: every copy is a 502, observed once.
    assert _server_counts(metrics, "m-s") == {(old.predictor_version, "502"): 40.0, ("v2", "502"): 25.0}


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def test_copies_offered_at_a_steady_pace_leave_with_later_offers_not_on_a_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch leaves with the first offer that finds it BATCH_SECONDS old (right after a live answer), so a
    steady flow needs no timer: with the linger timer out of reach, the early copies still reach the worker."""
    monkeypatch.setattr(mirror_worker, "LINGER_SECONDS", 600.0)
    monkeypatch.setattr(mirror_worker, "BATCH_SECONDS", 0.01)
    backend = _backend()

    async def run() -> tuple[bool, int]:
        metrics = RouterMetrics()
        worker = MirrorWorker(metrics, max_bytes=10 << 20)
        await worker.start()
        for i in range(20):
            worker.offer(_copy(backend, i))
            await asyncio.sleep(0.005)
        arrived = await _until(lambda: sum(_server_counts(metrics, "m-s").values()) >= 10)
        await worker.stop()
        return arrived, worker.sent

    arrived, sent = asyncio.run(run())
    assert arrived and sent == 20


def test_the_last_copies_of_a_burst_leave_within_the_linger_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """No later offer takes them along, and nobody joins: the linger timer sends them."""
    monkeypatch.setattr(mirror_worker, "LINGER_SECONDS", 0.05)
    monkeypatch.setattr(mirror_worker, "BATCH_SECONDS", 600.0)
    backend = _backend()

    async def run() -> bool:
        metrics = RouterMetrics()
        worker = MirrorWorker(metrics, max_bytes=10 << 20)
        await worker.start()
        for i in range(3):
            worker.offer(_copy(backend, i))
        arrived = await _until(lambda: sum(_server_counts(metrics, "m-s").values()) == 3)
        await worker.stop()
        return arrived

    assert asyncio.run(run())


def test_a_live_answer_that_was_not_2xx_is_never_mirrored() -> None:
    backend = _backend()

    async def run() -> tuple[list[bool], int, int, dict[tuple[str, str], float]]:
        metrics = RouterMetrics()
        worker = MirrorWorker(metrics, max_bytes=10 << 20)
        await worker.start()
        offered = [
            worker.offer(MirrorCopy.of(backend, "POST", PREDICT, "predictions", [], b"{}", status, b"{}", 2))
            for status in (400, 500, 503, 204)
        ]
        await worker.join(10)
        await _until(lambda: bool(_server_counts(metrics, "m-s")))
        await worker.stop()
        return offered, worker.sent, worker.dropped, _server_counts(metrics, "m-s")

    offered, sent, dropped, counts = asyncio.run(run())
    assert offered == [False, False, False, True]
    assert (sent, dropped) == (1, 0) and sum(counts.values()) == 1.0
