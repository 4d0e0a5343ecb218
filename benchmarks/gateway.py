"""The router hop of `sluice up`, side by side in one run, and next to the hand-written gateway it replaced.

Scenarios (single-row Seldon v1 requests, wrk over loopback, a Lua script for the POST body):
    direct                             a predictor called directly
    router, 1 predictor                `sluice up` in front of one predictor
    router, 2 predictors 50/50         ... of two
    router, 1 predictor, pinned        everything on CPU 0 (wrk, router, predictor): the shadow's baseline
    router, 1 predictor + shadow       the same, with every request mirrored to a shadow whose predictor (and
                                       the router's mirror worker, which sends the copies) is pinned to CPU 1
                                       (taskset): what the shadow costs live answers is what the router does
                                       for it on the live CPU, not a fight for the same core
    router, 1 predictor, pinned + load on CPU 1
                                       the pinned scenario while, on CPU 1, a predictor of its own serves a
                                       wrk of its own (c=1, no router, no mirroring): what work on the other
                                       CPU alone costs live answers on this machine (caches, memory, other
                                       tenants moved to CPU 0), the floor under the shadow's figure

Throughput at concurrency 16, p50/p99 at concurrency 1, CPU time per request of the router and of the
predictors (from /proc). Scenarios run in interleaved rounds and the best round is kept, since this machine's
CPU speed swings within seconds. The router runs exactly as `sluice up DIR --port N --admin-port M` starts it.
The hand-written gateway's figures (benchmarks/results/gateway-handwritten.json, measured by the same
benchmark before the router moved to uvicorn and aiohttp) are shown beside each row.

    python -m benchmarks gateway      # writes results/gateway.json and results/gateway.md
    BENCH_GATEWAY_SECONDS=1 BENCH_GATEWAY_ROUNDS=1 python -m benchmarks gateway   # a quick look
    BENCH_GATEWAY_BEFORE=DIR python -m benchmarks gateway   # also the router of another checkout (DIR, say
        `git archive main | tar -x -C DIR`), its 1-predictor, pinned and shadow rows interleaved with these
        (BENCH_GATEWAY_BEFORE_LABEL names it in the results)
    BENCH_GATEWAY_PROFILE=DIR python -m benchmarks gateway  # py-spy samples the router process during each
        router point (c=16 and c=1); DIR gets the folded stacks and each one's top functions by own time, and
        the results too (sampling slows the router: these figures are not for benchmarks/results)
"""

from __future__ import annotations

import json
import os
import platform
import re
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
BASELINE = Path(__file__).resolve().parent / "results" / "gateway-handwritten.json"
DURATION = int(os.environ.get("BENCH_GATEWAY_SECONDS", "4"))  # seconds per measured point
ROUNDS = int(os.environ.get("BENCH_GATEWAY_ROUNDS", "2"))
CONCURRENCY = 16
WRK = shutil.which("wrk") or "/usr/bin/wrk"
DIRECT = "direct"
ONE = "router, 1 predictor"
TWO = "router, 2 predictors 50/50"
PINNED = "router, 1 predictor, pinned"
SHADOW = "router, 1 predictor + shadow"
NEIGHBOUR = "router, 1 predictor, pinned + load on CPU 1"
SCENARIOS: tuple[str, ...] = (DIRECT, ONE, TWO, PINNED, SHADOW, NEIGHBOUR)
# Another checkout's router, run side by side with this one (its rows carry BEFORE_MARK).
BEFORE = os.environ.get("BENCH_GATEWAY_BEFORE", "")
BEFORE_LABEL = os.environ.get("BENCH_GATEWAY_BEFORE_LABEL", BEFORE)  # what that checkout is, for the results
BEFORE_MARK = " [before]"
if BEFORE:
    SCENARIOS = (*SCENARIOS, *(s + BEFORE_MARK for s in (ONE, PINNED, SHADOW)))
PROFILE = os.environ.get("BENCH_GATEWAY_PROFILE", "")
LOGGED = "router, 1 predictor + prediction log"  # benchmarks/prediction_log.py sets it beside ONE
# The hand-written gateway's rows of the same scenarios (its shadow row ran unpinned, at niceness +10).
BASELINE_ROWS = {
    DIRECT: "direct",
    ONE: "gateway, 1 predictor",
    TWO: "gateway, 2 predictors 50/50",
    SHADOW: "gateway, 1 predictor + shadow",
}
LIVE_CPU, SHADOW_CPU = 0, 1
STACK = "uvicorn (httptools) in, a pooled httptools client out"

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
    gateway_cpu_us: float  # the router's CPU per request, at c=16 (0 when there is no router)
    predictors_cpu_us: float  # per request, all predictor processes together (shadow included)
    errors: int
    load_1m: float = 0.0  # the machine's 1-minute load average when the point began (other work shifts it)
    # The router's CPU per request at c=1, where p50 is measured: what the router itself adds per request,
    # apart from what work on the other CPU does to this one (the shadow's copies are sent there)
    gateway_cpu_us_c1: float = 0.0


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


def _predictor_pids(ports: list[int]) -> dict[int, int]:
    """port -> pid of the predictor processes listening on `ports` (they bind port 0 and report it)."""
    import psutil

    pids = {}
    for proc in psutil.process_iter(["cmdline"]):
        if not any("serving.http.server" in part for part in proc.info.get("cmdline") or []):
            continue
        try:
            for c in proc.net_connections("tcp"):
                if c.status == psutil.CONN_LISTEN and c.laddr.port in ports:
                    pids[c.laddr.port] = int(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return pids


def _mirror_workers(parent: int) -> list[int]:
    """The router's mirror worker processes (they send the shadow's copies)."""
    import psutil

    return [
        p.pid
        for p in psutil.Process(parent).children(recursive=True)
        if "serving.router.mirror_worker" in " ".join(p.cmdline())
    ]


def _pin(pid: int, cpu: int) -> None:
    """Move every thread of `pid` to `cpu`: sched_setaffinity(pid) moves only its main thread, and a
    predictor's other threads (the model runtime's pool) would stay where they were born."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), {cpu})
        except (ProcessLookupError, FileNotFoundError):
            continue  # a thread that has just ended


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


def _base(scenario: str) -> str:
    return scenario.removesuffix(BEFORE_MARK)


def _pinned(scenario: str) -> bool:
    return _base(scenario) in (PINNED, SHADOW, NEIGHBOUR)


def _wrk(url: str, script: Path, concurrency: int, duration: int, cpu: int | None) -> dict[str, Any]:
    argv = [WRK, "-t1", f"-c{concurrency}", f"-d{duration}s", "-s", str(script), url]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
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
    if scenario == TWO:
        predictors = [predictor("m-blue", 50), predictor("m-green", 50)]
    elif scenario == SHADOW:
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
    """One scenario's processes: a predictor alone, or `sluice up` (router + predictors)."""

    def __init__(self, scenario: str, bundle: Any, work: Path):
        import httpx

        checkout = Path(BEFORE) if scenario.endswith(BEFORE_MARK) else REPO
        scenario = _base(scenario)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = (work / f"{scenario.split(',')[0]}-{self.port}.log").open("wb")
        if scenario == DIRECT:
            argv = [
                sys.executable, "-m", "serving.http.server", "--model", str(bundle.path), "--port", str(self.port),
                "--name", "classifier", "--digest", bundle.digest,
            ]  # fmt: skip
        else:
            env = work / f"env-{self.port}"
            _manifest(env, bundle, scenario)
            admin = _free_port()
            argv = [
                sys.executable, "-m", "sluice", "up", str(env), "--port", str(self.port), "--admin-port", str(admin),
            ]  # fmt: skip
            if scenario == LOGGED:
                argv += ["--prediction-log", str(work / f"log-{self.port}")]
        if _pinned(scenario):
            argv = ["taskset", "-c", str(LIVE_CPU), *argv]  # its predictors inherit the affinity
        self.proc = subprocess.Popen(argv, cwd=checkout, stdout=log, stderr=subprocess.STDOUT)
        self.router = scenario != DIRECT
        _wait_http(self.url + "/v2/health/ready")
        if self.router:
            routes = httpx.get(f"http://127.0.0.1:{admin}/routes").json()["predictors"]
            ports = {r["name"]: int(r["address"].rsplit(":", 1)[1]) for r in routes}
            by_port = _predictor_pids(list(ports.values()))
            self.predictor_pids = list(by_port.values())
            if scenario == SHADOW:
                _pin(by_port[ports["m-shadow"]], SHADOW_CPU)
                for pid in _mirror_workers(self.proc.pid):
                    _pin(pid, SHADOW_CPU)
        else:
            self.predictor_pids = [self.proc.pid]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _sampled(pid: int, name: str, duration: int) -> subprocess.Popen[bytes] | None:
    """py-spy sampling `pid` for `duration` s into PROFILE/name.folded (None when not profiling)."""
    if not PROFILE:
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = Path(PROFILE) / f"{name}.folded"
    argv = [spy, "record", "--pid", str(pid), "--rate", "250", "--duration", str(duration), "--format", "raw"]
    argv += ["--nonblocking", "--output", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)  # attached before the load starts
    return proc


def _summarize(sampler: subprocess.Popen[bytes] | None, name: str, top: int = 25) -> None:
    """PROFILE/name.top.txt: the functions with the most samples of their own, and their share."""
    if sampler is None:
        return
    sampler.wait(60)
    folded = Path(PROFILE) / f"{name}.folded"
    own: dict[str, int] = {}
    total = 0
    for line in folded.read_text().splitlines() if folded.exists() else []:
        stack, _, count = line.rpartition(" ")
        leaf = re.sub(r":\d+\)$", ")", stack.rsplit(";", 1)[-1])  # per function, not per line
        own[leaf] = own.get(leaf, 0) + int(count)
        total += int(count)
    rows = sorted(own.items(), key=lambda kv: -kv[1])[:top]
    text = [f"{name}: {total} samples, functions by own samples"]
    text += [f"{n / max(total, 1):6.1%}  {leaf}" for leaf, n in rows]
    (Path(PROFILE) / f"{name}.top.txt").write_text("\n".join(text) + "\n")


def measure(scenario: str, rnd: int, bundle: Any, script: Path, work: Path) -> Point:
    load = os.getloadavg()[0]
    started = Started(scenario, bundle, work)
    cpu = LIVE_CPU if _pinned(scenario) else None
    neighbour: Started | None = None
    neighbour_load: subprocess.Popen[bytes] | None = None
    try:
        url = started.url + "/api/v1.0/predictions"
        if _base(scenario) == NEIGHBOUR:
            neighbour = Started(DIRECT, bundle, work)
            _pin(neighbour.proc.pid, SHADOW_CPU)
            seconds = 1 + 2 * DURATION + 4  # outlasts the warm-up and both measured points
            argv = ["taskset", "-c", str(SHADOW_CPU), WRK, "-t1", "-c1", f"-d{seconds}s", "-s", str(script)]
            neighbour_load = subprocess.Popen(
                [*argv, neighbour.url + "/api/v1.0/predictions"], stdout=subprocess.DEVNULL
            )
        _wrk(url, script, CONCURRENCY, 1, cpu)  # warm up: connections, caches, the shadow's queue
        router_pids = [started.proc.pid] if started.router else []
        name = f"{re.sub(r'[^A-Za-z0-9]+', '-', scenario).strip('-')}-r{rnd}"
        sampler = _sampled(started.proc.pid, f"{name}-c16", DURATION) if started.router else None
        cpu_g0, cpu_p0 = _cpu_seconds(router_pids), _cpu_seconds(started.predictor_pids)
        c16 = _wrk(url, script, CONCURRENCY, DURATION, cpu)
        cpu_g1, cpu_p1 = _cpu_seconds(router_pids), _cpu_seconds(started.predictor_pids)
        _summarize(sampler, f"{name}-c16")
        sampler = _sampled(started.proc.pid, f"{name}-c1", DURATION) if started.router else None
        cpu_c1 = _cpu_seconds(router_pids)
        c1 = _wrk(url, script, 1, DURATION, cpu)
        cpu_c1 = _cpu_seconds(router_pids) - cpu_c1
        _summarize(sampler, f"{name}-c1")
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
            load_1m=load,
            gateway_cpu_us_c1=cpu_c1 / max(c1["requests"], 1) * 1e6,
        )
    finally:
        if neighbour_load is not None:
            neighbour_load.kill()
            neighbour_load.wait()
        if neighbour is not None:
            neighbour.stop()
        started.stop()


def client_overhead(bundle: Any, work: Path, n: int = 3000) -> dict[str, float]:
    """CPU µs per request spent in the client itself, sequential calls to one predictor: the router's
    HttpUpstream against aiohttp (what the router used before) and httpx."""
    import asyncio

    import aiohttp
    import httpx
    import uvloop

    from serving.router.http_upstream import HttpUpstream

    started = Started(DIRECT, bundle, work)
    url = started.url + "/api/v1.0/predictions"
    body = json.dumps({"data": {"ndarray": [[0.1] * len(bundle.signature.features)]}}).encode()
    headers = {"content-type": "application/json"}
    out: dict[str, float] = {}

    async def run() -> None:
        up = HttpUpstream("127.0.0.1", started.port)
        for _ in range(2):  # the second round counts (warm)
            t0 = time.process_time()
            for _ in range(n):
                await up.request(
                    "POST", "/api/v1.0/predictions", [(b"content-type", b"application/json")], body, 30.0
                )
            out["router HttpUpstream (httptools)"] = (time.process_time() - t0) / n * 1e6
            async with aiohttp.ClientSession() as session:
                t0 = time.process_time()
                for _ in range(n):
                    async with session.post(url, data=body, headers=headers) as r:
                        await r.read()
                out["aiohttp 3, defaults"] = (time.process_time() - t0) / n * 1e6
            async with httpx.AsyncClient() as client:
                t0 = time.process_time()
                for _ in range(n):
                    await client.post(url, content=body, headers=headers)
                out["httpx (async)"] = (time.process_time() - t0) / n * 1e6
        await up.close()

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
        max(top.load_1m, fastest.load_1m),
        fastest.gateway_cpu_us_c1,
    )


def _baseline() -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    try:
        data = json.loads(BASELINE.read_text())
    except (OSError, ValueError):
        return {}, {}
    rows = {row["scenario"]: row for row in data.get("summary", [])}
    return rows, data.get("client_cpu_us_per_request", {})


def _then(old_rows: dict[str, Any], direct: Point) -> str:
    """How far the earlier run's machine was from this one's: its figures compare with its own direct only."""
    row = old_rows.get(BASELINE_ROWS[DIRECT])
    if not row:
        return ""
    return (
        f", when this machine served direct at {row['rps_c16']:,.0f} req/s against {direct.rps_c16:,.0f} in this "
        "run: compare each bracket with its own direct, not with the figure beside it"
    )


def main(results_dir: Path) -> None:
    if PROFILE:
        results_dir = Path(PROFILE)
    results_dir.mkdir(parents=True, exist_ok=True)
    if (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        raise RuntimeError("the shadow scenarios need two CPUs and taskset")
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
    summary = {s: best(points, s) for s in SCENARIOS}
    direct, one, pinned, shadow = summary[DIRECT], summary[ONE], summary[PINNED], summary[SHADOW]
    neighbour = summary[NEIGHBOUR]
    old_rows, old_clients = _baseline()
    checks = {
        "gateway_hop_p50_ms": one.p50_ms_c1 - direct.p50_ms_c1,
        "gateway_hop_p50_within_0.5ms": one.p50_ms_c1 - direct.p50_ms_c1 <= 0.5,
        "gateway_throughput_share": one.rps_c16 / direct.rps_c16,
        "gateway_keeps_half_of_direct_throughput": one.rps_c16 >= 0.5 * direct.rps_c16,
        "shadow_p50_increase": shadow.p50_ms_c1 / pinned.p50_ms_c1 - 1,
        "shadow_router_cpu_us_c1": shadow.gateway_cpu_us_c1 - pinned.gateway_cpu_us_c1,
        "shadow_adds_at_most_5pct_p50": shadow.p50_ms_c1 <= 1.05 * pinned.p50_ms_c1,
        "load_on_cpu1_p50_increase": neighbour.p50_ms_c1 / pinned.p50_ms_c1 - 1,
        "errors": sum(p.errors for p in summary.values()),
    }
    if BEFORE:
        b_one, b_pinned, b_shadow = (summary[s + BEFORE_MARK] for s in (ONE, PINNED, SHADOW))
        checks |= {
            "before_hop_p50_ms": b_one.p50_ms_c1 - direct.p50_ms_c1,
            "before_throughput_share": b_one.rps_c16 / direct.rps_c16,
            "before_shadow_p50_increase": b_shadow.p50_ms_c1 / b_pinned.p50_ms_c1 - 1,
        }
    result = {
        "stack": STACK,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            # Other work on the machine shifts every number; the 1-minute load average says how much there was.
            "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
        },
        "settings": {
            "duration_s": DURATION,
            "rounds": ROUNDS,
            "concurrency": CONCURRENCY,
            "tool": "wrk -t1",
            "pinning": (
                f"pinned scenarios: wrk, router and live predictor on CPU {LIVE_CPU}; "
                f"shadow predictor and mirror worker on CPU {SHADOW_CPU}"
            ),
        },
        "summary": [asdict(p) for p in summary.values()],
        "rounds": [asdict(p) for p in points],
        "checks": checks,
        "client_cpu_us_per_request": clients,
    }
    (results_dir / "gateway.json").write_text(json.dumps(result, indent=2) + "\n")

    def old(scenario: str, key: str, fmt: str) -> str:
        row = old_rows.get(BASELINE_ROWS.get(scenario, ""))
        return format(row[key], fmt) if row else "-"

    lines = [
        "# Router hop (`sluice up`), single-row Seldon v1 requests, wrk on loopback",
        "",
        f"{STACK}. Best of {ROUNDS} interleaved rounds, {DURATION} s per point, "
        f"{os.cpu_count()} CPUs, 1-minute load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} "
        "after the run. CPU µs per request measured at c=16. In brackets: the hand-written gateway "
        "(own server and client), measured by this benchmark in an earlier run "
        f"(benchmarks/results/gateway-handwritten.json){_then(old_rows, direct)}."
        + (
            f" Rows marked{BEFORE_MARK}: the router of {BEFORE_LABEL}, interleaved with these."
            if BEFORE
            else ""
        ),
        "",
        "| scenario | req/s c=16 | p50 ms c=1 | p99 ms c=1 | router CPU µs/req | predictors CPU µs/req | errors "
        "| load 1m | router CPU µs/req c=1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in summary.values():
        lines.append(
            f"| {p.scenario} | {p.rps_c16:,.0f} ({old(p.scenario, 'rps_c16', ',.0f')}) "
            f"| {p.p50_ms_c1:.3f} ({old(p.scenario, 'p50_ms_c1', '.3f')}) "
            f"| {p.p99_ms_c1:.3f} ({old(p.scenario, 'p99_ms_c1', '.3f')}) "
            f"| {p.gateway_cpu_us:.0f} ({old(p.scenario, 'gateway_cpu_us', '.0f')}) "
            f"| {p.predictors_cpu_us:.0f} | {p.errors} | {p.load_1m:.1f} | {p.gateway_cpu_us_c1:.0f} |"
        )
    lines += [
        "",
        f"- router hop at p50: {checks['gateway_hop_p50_ms']:+.3f} ms (goal: at most 0.5 ms)",
        f"- router throughput: {checks['gateway_throughput_share']:.0%} of direct (goal: at least 50%)",
        f"- shadow's effect on live p50, shadow's predictor on the other CPU: {checks['shadow_p50_increase']:+.1%} "
        "(goal: at most +5%)",
        f"- the same pinned router with unrelated work on CPU 1 instead of a shadow (a predictor under its own "
        f"wrk): {checks['load_on_cpu1_p50_increase']:+.1%}",
        f"- the router's own CPU per request at c=1 with the shadow: {checks['shadow_router_cpu_us_c1']:+.0f} µs",
    ]
    then = old_rows.get(BASELINE_ROWS[DIRECT]), old_rows.get(BASELINE_ROWS[ONE])
    if then[0] and then[1]:
        lines.append(
            f"- the hand-written gateway in its run: hop {then[1]['p50_ms_c1'] - then[0]['p50_ms_c1']:+.3f} ms, "
            f"throughput {then[1]['rps_c16'] / then[0]['rps_c16']:.0%} of that run's direct"
        )
    if BEFORE:
        lines += [
            f"- the same{BEFORE_MARK}: hop {checks['before_hop_p50_ms']:+.3f} ms, throughput "
            f"{checks['before_throughput_share']:.0%} of direct, shadow {checks['before_shadow_p50_increase']:+.1%}",
        ]
    lines += ["", "| HTTP client (router -> predictor), sequential | client CPU µs/request |", "|---|---:|"]
    lines += [f"| {name} | {us:.0f} |" for name, us in clients.items()]
    if "sluice Upstream" in old_clients:
        lines.append(f"| hand-written gateway client (earlier run) | {old_clients['sluice Upstream']:.0f} |")
    (results_dir / "gateway.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
