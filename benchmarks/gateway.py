"""The `sluice up` gateway hop, side by side in one run: a predictor called directly, and the gateway in front
of one predictor, of two (50/50), and of one with a shadow (every request mirrored).

Single-row Seldon v1 requests with wrk over loopback (a Lua script for the POST body): throughput at
concurrency 16, p50/p99 at concurrency 1, and CPU time per request of the gateway and of the predictors
(from /proc). Scenarios are measured in interleaved rounds and the best round is kept, since this machine's
CPU speed swings within seconds. The gateway runs exactly as `sluice up DIR --port N` starts it.

    python -m benchmarks gateway      # writes results/gateway.json and results/gateway.md
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DURATION = 4  # seconds per measured point
ROUNDS = 2
CONCURRENCY = 16
WRK = shutil.which("wrk") or "/usr/bin/wrk"
SCENARIOS = ("direct", "gateway, 1 predictor", "gateway, 2 predictors 50/50", "gateway, 1 predictor + shadow")

LUA = """
wrk.method = "POST"
wrk.body = [==[%s]==]
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('\\n{"requests": %%d, "duration_us": %%d, "errors": %%d, "non2xx": %%d, "p50_us": %%f, "p99_us": %%f}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class Point:
    scenario: str
    round: int
    rps_c16: float
    p50_ms_c1: float
    p99_ms_c1: float
    gateway_cpu_us: float  # per request, at c=16 (0 when there is no gateway)
    predictors_cpu_us: float  # per request, all predictor processes together (shadow included)
    errors: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return total


def _predictor_pids(ports: list[int]) -> list[int]:
    """The predictor processes listening on `ports` (they bind port 0 and report it to `sluice up`)."""
    import psutil

    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        if not any("serving.http.server" in part for part in proc.info.get("cmdline") or []):
            continue
        try:
            if any(
                c.status == psutil.CONN_LISTEN and c.laddr.port in ports for c in proc.net_connections("tcp")
            ):
                pids.append(int(proc.pid))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return pids


def _wait_http(url: str, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout:g} s")


def _wrk(url: str, script: Path, concurrency: int, duration: int) -> dict[str, Any]:
    out = subprocess.run(
        [WRK, "-t1", f"-c{concurrency}", f"-d{duration}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _bundle(work: Path) -> Any:
    from model.pipeline import train_bundle

    return train_bundle(work / "train", work / "bundle")


def _manifest(env: Path, bundle: Any, scenario: str) -> None:
    def predictor(name: str, traffic: int, shadow: bool = False) -> dict[str, Any]:
        p: dict[str, Any] = {
            "name": name,
            "traffic": traffic,
            "graph": {
                "name": "classifier",
                "type": "MODEL",
                "parameters": [
                    {"name": "model_uri", "type": "STRING", "value": str(bundle.path)},
                    {"name": "model_digest", "type": "STRING", "value": bundle.digest},
                ],
            },
        }
        if shadow:
            p["shadow"] = True
        return p

    predictors = [predictor("m-live", 100)]
    if "2 predictors" in scenario:
        predictors = [predictor("m-blue", 50), predictor("m-green", 50)]
    elif "shadow" in scenario:
        predictors.append(predictor("m-shadow", 0, shadow=True))
    env.mkdir(parents=True, exist_ok=True)
    doc = {
        "apiVersion": "machinelearning.seldon.io/v1",
        "kind": "SeldonDeployment",
        "metadata": {"name": "bench"},
        "spec": {"name": "bench", "predictors": predictors},
    }
    (env / "seldondeployment.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


class Started:
    """One scenario's processes: a predictor alone, or `sluice up` (gateway + predictors)."""

    def __init__(self, scenario: str, bundle: Any, work: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = (work / f"{scenario.split(',')[0]}-{self.port}.log").open("wb")
        if scenario == "direct":
            argv = [
                sys.executable, "-m", "serving.http.server", "--model", str(bundle.path), "--port", str(self.port),
                "--name", "classifier", "--digest", bundle.digest,
            ]  # fmt: skip
        else:
            env = work / f"env-{self.port}"
            _manifest(env, bundle, scenario)
            self.admin = _free_port()
            argv = [
                sys.executable, "-m", "sluice", "up", str(env), "--port", str(self.port),
                "--admin-port", str(self.admin),
            ]  # fmt: skip
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        self.gateway = scenario != "direct"
        if self.gateway:
            _wait_http(self.url + "/v2/health/ready")
            import httpx

            routes = httpx.get(f"http://127.0.0.1:{self.admin}/routes").json()["predictors"]
            ports = [int(r["address"].rsplit(":", 1)[1]) for r in routes]
            self.predictor_pids = _predictor_pids(ports)
        else:
            _wait_http(self.url + "/v2/health/ready")
            self.predictor_pids = [self.proc.pid]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def measure(scenario: str, rnd: int, bundle: Any, script: Path, work: Path) -> Point:
    started = Started(scenario, bundle, work)
    try:
        url = started.url + "/api/v1.0/predictions"
        _wrk(url, script, CONCURRENCY, 1)  # warm up: connections, caches, the shadow's queue
        gateway_pids = [started.proc.pid] if started.gateway else []
        cpu_g0, cpu_p0 = _cpu_seconds(gateway_pids), _cpu_seconds(started.predictor_pids)
        c16 = _wrk(url, script, CONCURRENCY, DURATION)
        cpu_g1, cpu_p1 = _cpu_seconds(gateway_pids), _cpu_seconds(started.predictor_pids)
        c1 = _wrk(url, script, 1, DURATION)
        n = max(c16["requests"], 1)
        return Point(
            scenario=scenario,
            round=rnd,
            rps_c16=c16["requests"] / (c16["duration_us"] / 1e6),
            p50_ms_c1=c1["p50_us"] / 1000,
            p99_ms_c1=c1["p99_us"] / 1000,
            gateway_cpu_us=(cpu_g1 - cpu_g0) / n * 1e6,
            predictors_cpu_us=(cpu_p1 - cpu_p0) / n * 1e6,
            errors=c16["errors"] + c16["non2xx"] + c1["errors"] + c1["non2xx"],
        )
    finally:
        started.stop()


def client_overhead(bundle: Any, work: Path, n: int = 3000) -> dict[str, float]:
    """CPU µs per request spent in the client itself, sequential calls to one predictor: the gateway's
    Upstream pool against aiohttp and httpx (why the gateway has its own small client)."""
    import asyncio

    import aiohttp
    import httpx
    import uvloop

    from serving.router.aiohttp_upstream import AiohttpUpstream

    started = Started("direct", bundle, work)
    url = started.url + "/api/v1.0/predictions"
    body = json.dumps({"data": {"ndarray": [[0.1] * len(bundle.signature.features)]}}).encode()
    headers = {"content-type": "application/json"}
    out: dict[str, float] = {}

    async def run() -> None:
        up = AiohttpUpstream("127.0.0.1", started.port)
        for _ in range(2):  # the second round counts (warm)
            t0 = time.process_time()
            for _ in range(n):
                await up.request(
                    "POST", "/api/v1.0/predictions", [(b"content-type", b"application/json")], body, 30.0
                )
            out["router AiohttpUpstream"] = (time.process_time() - t0) / n * 1e6
            async with aiohttp.ClientSession() as session:
                t0 = time.process_time()
                for _ in range(n):
                    async with session.post(url, data=body, headers=headers) as r:
                        await r.read()
                out["aiohttp 3"] = (time.process_time() - t0) / n * 1e6
            async with httpx.AsyncClient() as client:
                t0 = time.process_time()
                for _ in range(n):
                    await client.post(url, content=body, headers=headers)
                out["httpx (async)"] = (time.process_time() - t0) / n * 1e6

    try:
        asyncio.run(run(), loop_factory=uvloop.new_event_loop)
    finally:
        started.stop()
    return out


def best(points: list[Point], scenario: str) -> Point:
    mine = [p for p in points if p.scenario == scenario]
    top = max(mine, key=lambda p: p.rps_c16)
    fastest = min(mine, key=lambda p: p.p50_ms_c1)
    return Point(
        scenario,
        -1,
        top.rps_c16,
        fastest.p50_ms_c1,
        fastest.p99_ms_c1,
        top.gateway_cpu_us,
        top.predictors_cpu_us,
        sum(p.errors for p in mine),
    )


def main(results_dir: Path) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="sluice-bench-gateway-") as tmp:
        work = Path(tmp)
        bundle = _bundle(work)
        row = [0.1 * (i % 7) for i in range(len(bundle.signature.features))]
        script = work / "post.lua"
        script.write_text(LUA % json.dumps({"data": {"ndarray": [row]}}))
        points = []
        for rnd in range(ROUNDS):
            for scenario in SCENARIOS:
                point = measure(scenario, rnd, bundle, script, work)
                print(f"[gateway] round {rnd}: {point}", flush=True)
                points.append(point)
        clients = client_overhead(bundle, work)
    summary = [best(points, s) for s in SCENARIOS]
    direct, one, _two, shadow = summary
    checks = {
        "gateway_hop_p50_ms": one.p50_ms_c1 - direct.p50_ms_c1,
        "gateway_hop_p50_within_0.5ms": one.p50_ms_c1 - direct.p50_ms_c1 <= 0.5,
        "gateway_throughput_share": one.rps_c16 / direct.rps_c16,
        "gateway_keeps_half_of_direct_throughput": one.rps_c16 >= 0.5 * direct.rps_c16,
        "shadow_p50_increase": shadow.p50_ms_c1 / one.p50_ms_c1 - 1,
        "shadow_adds_at_most_5pct_p50": shadow.p50_ms_c1 <= 1.05 * one.p50_ms_c1,
        "errors": sum(p.errors for p in summary),
    }
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            # Other work on the machine shifts every number; the 1-minute load average says how much there was.
            "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
        },
        "settings": {"duration_s": DURATION, "rounds": ROUNDS, "concurrency": CONCURRENCY, "tool": "wrk -t1"},
        "summary": [asdict(p) for p in summary],
        "rounds": [asdict(p) for p in points],
        "checks": checks,
        "client_cpu_us_per_request": clients,
    }
    (results_dir / "gateway.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Gateway hop (`sluice up`), single-row Seldon v1 requests, wrk on loopback",
        "",
        f"Best of {ROUNDS} interleaved rounds, {DURATION} s per point, {os.cpu_count()} CPUs, "
        f"1-minute load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after the run. "
        "CPU µs per request measured at c=16.",
        "",
        "| scenario | req/s c=16 | p50 ms c=1 | p99 ms c=1 | gateway CPU µs/req | predictors CPU µs/req | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in summary:
        lines.append(
            f"| {p.scenario} | {p.rps_c16:,.0f} | {p.p50_ms_c1:.3f} | {p.p99_ms_c1:.3f} | "
            f"{p.gateway_cpu_us:.0f} | {p.predictors_cpu_us:.0f} | {p.errors} |"
        )
    lines += [
        "",
        f"- gateway hop at p50: {checks['gateway_hop_p50_ms']:+.3f} ms (goal: at most 0.5 ms)",
        f"- gateway throughput: {checks['gateway_throughput_share']:.0%} of direct (goal: at least 50%)",
        f"- shadow's effect on live p50: {checks['shadow_p50_increase']:+.1%} (goal: at most +5%)",
    ]
    lines += ["", "| HTTP client (gateway -> predictor), sequential | client CPU µs/request |", "|---|---:|"]
    lines += [f"| {name} | {us:.0f} |" for name, us in clients.items()]
    (results_dir / "gateway.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
