"""Several `sluice stream run` processes in one group on a real Redis; one is SIGKILLed mid-batch.

Every input must end with exactly one result (or one dead letter for the malformed ones): the killed
worker's pending messages are reclaimed by the others and the idempotent publish keeps the count exact.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
TOTAL = 4000


def _worker(bundle: Path, url: str, name: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "sluice", "stream", "run", "--model", str(bundle), "--broker", url]
    cmd += ["--input", "in", "--output", "out", "--group", "g", "--consumer", name, "--batch", "25"]
    cmd += ["--claim-idle-ms", "800", "--block-ms", "50"]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _produce(client, records, malformed: set[int], sent: list[str]) -> None:  # type: ignore[no-untyped-def]
    for start in range(0, TOTAL, 100):
        pipe = client.pipeline()
        for i in range(start, start + 100):
            data = "{broken" if i in malformed else json.dumps(records[i % len(records)])
            pipe.xadd("in", {"data": data})
        sent.extend(x.decode() for x in pipe.execute())
        time.sleep(0.05)  # a steady rate: ~2,000 messages/s over ~2 s


def _kill_mid_batch(client, proc: subprocess.Popen[bytes], name: str, deadline: float) -> list[str]:  # type: ignore[no-untyped-def]
    """Freeze the worker; if it holds read-but-unacked messages, SIGKILL it there; otherwise let it go on."""
    while time.monotonic() < deadline:
        os.kill(proc.pid, signal.SIGSTOP)
        pending = client.xpending_range("in", "g", min="-", max="+", count=1000, consumername=name)
        if pending:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            return [p["message_id"].decode() for p in pending]
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.003)
    raise AssertionError(f"{name} never held pending messages")


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_killed_worker_loses_nothing_and_duplicates_nothing(
    redis_client, redis_url, bundle_dir, records
) -> None:  # type: ignore[no-untyped-def]
    redis_client.xgroup_create("in", "g", id="0", mkstream=True)
    names = ["w0", "w1", "w2"]
    procs = {name: _worker(bundle_dir, redis_url, name) for name in names}
    try:
        deadline = time.monotonic() + 60
        while len(redis_client.xinfo_consumers("in", "g")) < 3:
            assert time.monotonic() < deadline, "workers did not join the group"
            assert all(p.poll() is None for p in procs.values()), "a worker died at start"
            time.sleep(0.05)
        malformed = set(range(7, TOTAL, 101))
        sent: list[str] = []
        producer = threading.Thread(target=_produce, args=(redis_client, records, malformed, sent))
        producer.start()
        time.sleep(0.4)
        in_flight = _kill_mid_batch(redis_client, procs["w0"], "w0", time.monotonic() + 20)
        producer.join(timeout=30)
        assert len(sent) == TOTAL

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = redis_client.xlen("out") + redis_client.xlen("in:dead")
            if done >= TOTAL and redis_client.xpending("in", "g")["pending"] == 0:
                break
            time.sleep(0.1)
        for name in ("w1", "w2"):
            procs[name].send_signal(signal.SIGTERM)
        for name in ("w1", "w2"):
            assert procs[name].wait(timeout=20) == 0, procs[name].stderr.read().decode()  # type: ignore[union-attr]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    results = [
        (f[b"input_id"].decode(), f[b"consumer"].decode())
        for _, f in redis_client.xrange("out", count=TOTAL * 2)
    ]
    dead = [f[b"input_id"].decode() for _, f in redis_client.xrange("in:dead", count=TOTAL * 2)]
    result_ids = [r[0] for r in results]
    assert len(result_ids) == len(set(result_ids)), "a result was duplicated"
    assert len(dead) == len(set(dead)) == len(malformed)
    assert set(result_ids) | set(dead) == set(sent), "an input was lost"
    assert not set(result_ids) & set(dead)
    assert {sent[i] for i in malformed} == set(dead)
    assert in_flight, "the worker was killed holding messages"
    assert set(in_flight) <= set(result_ids) | set(dead)
    assert redis_client.xpending("in", "g")["pending"] == 0
    by = {consumer for _, consumer in results}
    assert {"w1", "w2"} <= by, "the load was not shared"
