"""Streaming end to end on a real redis-server: records/s at saturation and p50/p99 latency at a steady rate.

Workers are real `sluice stream run` processes in one consumer group. Latency is measured per record from
the XADD of its input to the moment the benchmark reads its result from the output stream (one clock, one
process), so it includes the broker round trips, batching, validation, prediction and the idempotent publish.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SATURATION_MESSAGES = 20_000
STEADY_SECONDS = 8.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_redis(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    import redis

    port = _free_port()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(work),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            return proc, port
        except redis.ConnectionError:
            time.sleep(0.025)
    proc.kill()
    raise RuntimeError("redis-server did not start")


class Run:
    """One scenario: fresh streams, W workers, a producer, and a reader timing every result."""

    def __init__(self, port: int, bundle: Path, workers: int, tag: str):
        import redis

        self.client = redis.Redis(port=port)
        self.client.flushdb()
        self.tag = tag
        self.client.xgroup_create("in", "g", id="0", mkstream=True)
        self.sent: dict[str, float] = {}
        self.received: dict[str, float] = {}
        broker = f"redis://127.0.0.1:{port}/0"
        command = [
            sys.executable,
            "-m",
            "sluice",
            "stream",
            "run",
            "--model",
            str(bundle),
            "--broker",
            broker,
        ]
        command += ["--input", "in", "--output", "out", "--group", "g", "--batch", "64", "--block-ms", "100"]
        self.procs = [
            subprocess.Popen(
                [*command, "--consumer", f"{tag}-w{i}"],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for i in range(workers)
        ]
        deadline = time.monotonic() + 60
        while len(self.client.xinfo_consumers("in", "g")) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start")
            time.sleep(0.05)
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        import redis

        client = redis.Redis(port=self.client.connection_pool.connection_kwargs["port"])
        last = "0-0"
        while not self._stop.is_set():
            reply = client.xread({"out": last}, count=1000, block=200)
            now = time.perf_counter()
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id
                    self.received[fields[b"input_id"].decode()] = now

    def wait_for(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < n and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._reader.join(timeout=5)

    def latencies_ms(self) -> np.ndarray:
        return np.asarray([(self.received[k] - t) * 1000 for k, t in self.sent.items() if k in self.received])


def _payloads(records: list[dict[str, float]]) -> list[str]:
    return [json.dumps(r) for r in records]


def saturation(port: int, bundle: Path, workers: int, payloads: list[str]) -> dict[str, Any]:
    run = Run(port, bundle, workers, f"sat{workers}")
    try:
        pipe = run.client.pipeline(transaction=False)
        start = time.perf_counter()
        for i in range(SATURATION_MESSAGES):
            pipe.xadd("in", {"data": payloads[i % len(payloads)]})
            if i % 1000 == 999:
                now = time.perf_counter()
                for entry_id in pipe.execute():
                    run.sent[entry_id.decode()] = now
        run.wait_for(SATURATION_MESSAGES)
        elapsed = max(run.received.values()) - start
        lat = run.latencies_ms()
    finally:
        run.close()
    return {
        "scenario": f"saturation, {SATURATION_MESSAGES:,} queued at once",
        "workers": workers,
        "records": len(run.received),
        "records_per_s": len(run.received) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
    }


def steady(port: int, bundle: Path, workers: int, rate: float, payloads: list[str]) -> dict[str, Any]:
    run = Run(port, bundle, workers, f"steady{workers}-{int(rate)}")
    try:
        total = int(rate * STEADY_SECONDS)
        start = time.perf_counter()
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            entry_id = run.client.xadd("in", {"data": payloads[i % len(payloads)]})
            run.sent[entry_id.decode()] = time.perf_counter()
        run.wait_for(total)
        elapsed = max(run.received.values()) - start
        lat = run.latencies_ms()
    finally:
        run.close()
    return {
        "scenario": f"steady {rate:,.0f} records/s for {STEADY_SECONDS:.0f} s",
        "workers": workers,
        "records": len(run.received),
        "records_per_s": len(run.received) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
    }


def main(results_dir: Path) -> None:
    from model.pipeline import train_bundle
    from serving.edge.export import test_split

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        work = Path(tmp)
        bundle = train_bundle(work / "lr", work / "lr" / "bundle")
        X = test_split(bundle).astype(float)
        payloads = _payloads(
            [dict(zip(bundle.signature.feature_names, row, strict=True)) for row in X.tolist()]
        )
        redis_proc, port = _start_redis(work)
        try:
            results.append(saturation(port, bundle.path, 1, payloads))
            results.append(saturation(port, bundle.path, 2, payloads))
            results.append(steady(port, bundle.path, 2, 500, payloads))
            results.append(steady(port, bundle.path, 2, 2000, payloads))
        finally:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "stream.json").write_text(json.dumps({"results": results}, indent=2) + "\n")
    lines = [
        "| scenario | workers | records out | records/s end to end | latency p50 (ms) | latency p99 (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['scenario']} | {r['workers']} | {r['records']:,} | {r['records_per_s']:,.0f} "
            f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |"
        )
    table = "\n".join(lines) + "\n"
    (results_dir / "stream.md").write_text(
        "# Streaming on Redis Streams (logistic regression, micro-batches of up to 64)\n\n" + table
    )
    print(table)


if __name__ == "__main__":
    main(Path(__file__).resolve().parent / "results")
