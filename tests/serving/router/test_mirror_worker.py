"""The router's side of the mirror worker process: copies are batched into one write, and what is batched
counts against the byte budget (a burst faster than one batch is bounded, not buffered)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from testkit.services import free_port

from deployment import seldon
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
            worker.offer(
                MirrorCopy.of(backend, "POST", PREDICT, "predictions", [], b'{"i": %d}' % i, 200, b"{}", 2)
            )
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
            worker.offer(
                MirrorCopy.of(backend, "POST", PREDICT, "predictions", [], b'{"i": %d}' % i, 200, b"{}", 2)
            )
        await worker.join(10)
        backend.labels = replace(old, predictor_version="v2")  # the routes were reloaded with a new version
        for i in range(25):
            worker.offer(
                MirrorCopy.of(backend, "POST", PREDICT, "predictions", [], b'{"i": %d}' % i, 200, b"{}", 2)
            )
        await worker.join(10)
        await asyncio.sleep(3 * REPORT_EVERY)  # a report after the last one would add to the counts
        await worker.stop()
        return metrics, worker.sent, worker.dropped

    metrics, sent, dropped = asyncio.run(run())
    assert (sent, dropped) == (65, 0)
    # Nothing listens at the shadow's address: every copy is a 502, observed once.
    assert _server_counts(metrics, "m-s") == {(old.predictor_version, "502"): 40.0, ("v2", "502"): 25.0}
