"""What the prediction log costs live traffic: `sluice up` with and without `--prediction-log`, side by side in
one run (interleaved rounds, best kept), and the log's own hot-path call timed in process.

    python -m benchmarks prediction_log     # writes results/prediction_log.json and .md
    BENCH_GATEWAY_SECONDS=1 BENCH_GATEWAY_ROUNDS=1 python -m benchmarks prediction_log   # a quick look
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks.gateway import DURATION, LOGGED, LUA, ONE, ROUNDS, _bundle, best, measure

SCENARIOS = (ONE, LOGGED)


def offer_cost(n: int = 50_000) -> dict[str, float]:
    """µs per `PredictionLog.offer` on the caller's thread, and per record on the writer thread."""
    from serving.router.prediction_log import Copy, FileSink, PredictionLog

    request = json.dumps({"data": {"ndarray": [[0.1] * 30]}}).encode()
    response = json.dumps(
        {"data": {"names": ["0", "1"], "ndarray": [[0.2, 0.8]]}, "meta": {"puid": "x"}}
    ).encode()
    with tempfile.TemporaryDirectory() as tmp:
        plog = PredictionLog(FileSink(tmp), buffer_bytes=1 << 30)
        copies = [
            Copy(
                "prediction",
                time.time(),
                "ns",
                "sd",
                "m-a",
                "sha256:" + "a" * 64,
                f"p{i}",
                True,
                request,
                response,
            )
            for i in range(n)
        ]
        t0 = time.perf_counter()
        for c in copies:
            plog.offer(c)
        offered = (time.perf_counter() - t0) / n * 1e6
        t0 = time.perf_counter()
        plog.start()
        plog.stop(60)
        written = (time.perf_counter() - t0) / n * 1e6
        size = sum(p.stat().st_size for p in Path(tmp).glob("*.jsonl")) / n
    return {"offer_us": offered, "writer_us_per_record": written, "bytes_per_record": size}


def main(results_dir: Path) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="sluice-bench-plog-") as tmp:
        work = Path(tmp)
        bundle = _bundle(work)
        row = [0.1 * (i % 7) for i in range(len(bundle.signature.features))]
        script = work / "post.lua"
        script.write_text(LUA % json.dumps({"data": {"ndarray": [row]}}))
        points = []
        for rnd in range(ROUNDS):
            for scenario in SCENARIOS:
                point = measure(scenario, rnd, bundle, script, work)
                print(f"[prediction_log] round {rnd}: {point}", flush=True)
                points.append(point)
        logged_lines = sum(sum(1 for _ in p.open("rb")) for p in work.glob("log-*/*.jsonl"))
    costs = offer_cost()
    summary = {s: best(points, s) for s in SCENARIOS}
    plain, logged = summary[ONE], summary[LOGGED]
    checks = {
        "p50_ms_added": logged.p50_ms_c1 - plain.p50_ms_c1,
        "throughput_share": logged.rps_c16 / plain.rps_c16,
        "router_cpu_us_added": logged.gateway_cpu_us - plain.gateway_cpu_us,
        "records_written": logged_lines,
    }
    result = {
        "settings": {"duration_s": DURATION, "rounds": ROUNDS, "load_average_1m_before": load_before},
        "summary": [asdict(p) for p in summary.values()],
        "rounds": [asdict(p) for p in points],
        "in_process": costs,
        "checks": checks,
    }
    (results_dir / "prediction_log.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Prediction log: `sluice up` with and without `--prediction-log` (every prediction recorded)",
        "",
        f"Single-row Seldon v1 requests, wrk on loopback, best of {ROUNDS} interleaved rounds, {DURATION} s per "
        f"point, load average {load_before:.1f} before the run. Router CPU per request measured at c=16.",
        "",
        "| scenario | req/s c=16 | p50 ms c=1 | p99 ms c=1 | router CPU µs/req | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for p in summary.values():
        lines.append(
            f"| {p.scenario} | {p.rps_c16:,.0f} | {p.p50_ms_c1:.3f} | {p.p99_ms_c1:.3f} | {p.gateway_cpu_us:.0f} "
            f"| {p.errors} |"
        )
    lines += [
        "",
        f"- added p50 latency: {checks['p50_ms_added']:+.3f} ms; throughput {checks['throughput_share']:.0%} of the "
        f"unlogged router; router CPU {checks['router_cpu_us_added']:+.0f} µs per request",
        f"- in process: `offer` {costs['offer_us']:.2f} µs on the event loop; the writer thread "
        f"{costs['writer_us_per_record']:.1f} µs and {costs['bytes_per_record']:.0f} bytes per record",
    ]
    (results_dir / "prediction_log.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
