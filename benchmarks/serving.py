"""Real-time serving, side by side in one run: the no-op floor, in-process predict, `sluice serve`,
seldon-core-microservice with our component, and MLServer's scikit-learn runtime at its fastest setting.

Single-row requests with wrk over loopback: throughput at concurrency 16, p50/p99 at concurrency 1, and the
server's CPU time per request (psutil over its whole process tree). Every server is started fresh, warmed
for a second, and measured in rounds, so a swing in CPU speed hits all of them alike. MLServer is installed
in its own venv under benchmarks/.work/ (pinned `uvloop==0.21.0`: 0.22+ crashes its workers at start).

    python -m benchmarks serving      # writes results/serving.json and results/serving.md
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / ".work" / "serving"
MLSERVER_VENV = REPO / "benchmarks" / ".work" / "mlserver-venv"
MLSERVER_PACKAGES = ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0"]
BIN = Path(sys.executable).parent
DURATION = 3  # seconds per measured point
ROUNDS = 4
CONCURRENCY = 16


async def noop_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The floor: a bare ASGI app on the same stack (uvicorn, httptools, uvloop) that reads the body."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"{}"})


def fastapi_noop() -> Any:
    """The stack not chosen: FastAPI (pydantic body model, JSON response) with a no-op POST route."""
    from fastapi import FastAPI
    from pydantic import BaseModel

    class Body(BaseModel):
        data: dict[str, Any] | None = None

    async def predict(body: Body) -> dict[str, Any]:
        return {}

    # This module postpones annotations; FastAPI reads them, and `Body` is local: hand over the objects.
    predict.__annotations__ = {"body": Body, "return": dict[str, Any]}
    app = FastAPI()
    app.add_api_route("/", predict, methods=["POST"])
    return app


@dataclass
class Target:
    name: str
    command: list[str]
    path: str  # where wrk sends its POST
    body: bytes
    ready_path: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = REPO
    check: Callable[[Any], bool] = lambda _: True


@dataclass
class Point:
    target: str
    round: int
    rps_c16: float
    cpu_us_per_request: float
    p50_ms_c1: float
    p99_ms_c1: float
    rps_c1: float
    errors: int


# measuring --------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _lua(body: bytes) -> Path:
    WORK.mkdir(parents=True, exist_ok=True)
    script = WORK / f"post-{abs(hash(body))}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [==[{body.decode()}]==]\n"
        "done = function(summary, latency, requests)\n"
        "  local e = summary.errors\n"
        '  io.write(string.format("RESULT %d %d %d %d %d\\n", summary.requests, summary.duration,\n'
        "    e.connect + e.read + e.write + e.status + e.timeout, latency:percentile(50), latency:percentile(99)))\n"
        "end\n"
    )
    return script


def _wrk(url: str, script: Path, connections: int, seconds: float) -> tuple[int, float, int, float, float]:
    threads = min(2, connections)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    m = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+)", out)
    if not m:
        raise RuntimeError(f"wrk printed no result: {out}")
    requests, duration_us, errors, p50_us, p99_us = (int(x) for x in m.groups())
    return requests, duration_us / 1e6, errors, p50_us / 1e3, p99_us / 1e3


def _tree_cpu(pid: int) -> float:
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        pass
    return total


def _start(target: Target, port: int) -> subprocess.Popen[bytes]:
    log = (WORK / f"{re.sub(r'[^a-z0-9]+', '-', target.name.lower())}.log").open("wb")
    command = [part.replace("{port}", str(port)) for part in target.command]
    process = subprocess.Popen(
        command,
        cwd=target.cwd,
        env={**os.environ, **{k: v.replace("{port}", str(port)) for k, v in target.env.items()}},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{target.name} exited with {process.returncode}; see {log.name}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{target.ready_path}", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    else:
        _stop(process)
        raise RuntimeError(f"{target.name} not ready after 120 s; see {log.name}")
    response = httpx.post(
        f"http://127.0.0.1:{port}{target.path}",
        content=target.body,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    if response.status_code != 200 or not target.check(response.json()):
        _stop(process)
        raise RuntimeError(f"{target.name}: wrong answer {response.status_code} {response.text[:300]}")
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the process group this benchmark started (servers fork workers, metrics and gRPC servers)."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(wait)
            if sig == signal.SIGTERM:
                os.killpg(process.pid, signal.SIGKILL)  # leftover children
        except (subprocess.TimeoutExpired, ProcessLookupError):
            continue
        break


@dataclass
class Running:
    target: Target
    process: subprocess.Popen[bytes]
    url: str
    script: Path


def _launch(target: Target) -> Running:
    port = _free_port()
    process = _start(target, port)
    running = Running(target, process, f"http://127.0.0.1:{port}{target.path}", _lua(target.body))
    _wrk(running.url, running.script, CONCURRENCY, 1)  # warm-up
    return running


def _measure(running: Running, round_: int) -> Point:
    target, url, script = running.target, running.url, running.script
    _wrk(url, script, CONCURRENCY, 1)  # wake it up after idling while the others were measured
    cpu0 = _tree_cpu(running.process.pid)
    requests, seconds, errors, _, _ = _wrk(url, script, CONCURRENCY, DURATION)
    cpu = _tree_cpu(running.process.pid) - cpu0
    requests1, seconds1, errors1, p50, p99 = _wrk(url, script, 1, DURATION)
    point = Point(
        target=target.name,
        round=round_,
        rps_c16=requests / seconds,
        cpu_us_per_request=cpu / max(requests, 1) * 1e6,
        p50_ms_c1=p50,
        p99_ms_c1=p99,
        rps_c1=requests1 / seconds1,
        errors=errors + errors1,
    )
    print(
        f"  {target.name}: {point.rps_c16:,.0f} req/s @c16, p50 {p50:.2f} ms p99 {p99:.2f} ms @c1, "
        f"{point.cpu_us_per_request:.0f} us CPU/req, errors {point.errors}",
        flush=True,
    )
    return point


# What limits throughput: py-spy samples of `sluice serve` under the c=16 load, grouped by stage.
PROFILE_STAGES = {
    "uvicorn send (socket writes)": "RequestResponseCycle.send",
    "uvicorn parse (data_received)": "HttpToolsProtocol.data_received",
    "app: whole request": "PredictorApp._http",
    "app: read body": "PredictorApp._body",
    "app: Seldon v1 handler": "PredictorApp.seldon_predict",
    "core: validate": "Predictor.validate",
    "core: predict (ONNX Runtime)": "Predictor.predict",
    "codec: decode": "decode_predict",
    "codec: encode (to JSON bytes)": "PredictEncoder.encode",
    "metrics": "ServingMetrics.observe",
}


def _profile(running: Running, seconds: int = 5) -> dict[str, float] | None:
    """Share of samples (inclusive, %) per stage; None when py-spy is missing or may not attach."""
    py_spy = BIN / "py-spy"
    if not py_spy.exists():
        return None
    out = WORK / "profile.txt"
    load = subprocess.Popen(
        ["wrk", "-t2", f"-c{CONCURRENCY}", f"-d{seconds + 2}s", "-s", str(running.script), running.url],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(1)
        done = subprocess.run(
            [str(py_spy), "record", "-p", str(running.process.pid), "-d", str(seconds), "-r", "250",
             "-f", "raw", "-o", str(out), "--native"],
            capture_output=True,
            timeout=seconds + 30,
        )  # fmt: skip
    finally:
        load.wait(seconds + 30)
    if done.returncode != 0 or not out.exists():
        return None
    total, hits = 0, dict.fromkeys(PROFILE_STAGES, 0)
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        for stage, function in PROFILE_STAGES.items():
            if f";{function} (" in f";{stack}":
                hits[stage] += n
    return {stage: round(100 * n / total, 1) for stage, n in hits.items()} if total else None


# Hostile requests: how long `sluice serve` takes to refuse each (wall time of the whole exchange, median).
def hostile_bodies(row: list[float]) -> dict[str, tuple[str, bytes]]:
    nan_row = "[NaN" + ", 1.0" * (len(row) - 1) + "]"
    shape = ",".join(["9" * 4300] * 400)  # 1.7 MB of shape; NaN sends the body through the lenient parser
    deep = "[" * 50_000 + "]" * 50_000
    return {
        "huge shape list (1.7 MB)": (
            "/api/v1.0/predictions",
            f'{{"data": {{"tensor": {{"shape": [{shape}], "values": [NaN, 1.0]}}}}}}'.encode(),
        ),
        "value beyond float32 (1e39)": (
            "/api/v1.0/predictions",
            json.dumps({"data": {"ndarray": [[1e39, *row[1:]]]}}).encode(),
        ),
        "NaN with 50,000-deep nesting": (
            "/api/v1.0/predictions",
            f'{{"data": {{"ndarray": [{nan_row}]}}, "meta": {{"tags": {{"x": {deep}}}}}}}'.encode(),
        ),
        "feedback reward 1e12": ("/api/v1.0/feedback", b'{"reward": 1e12}'),
    }


def _hostile(url: str, row: list[float], repeats: int = 5) -> dict[str, dict[str, Any]]:
    import httpx

    out: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=url, timeout=120, headers={"content-type": "application/json"}) as client:
        for name, (path, body) in hostile_bodies(row).items():
            seconds, statuses = [], set()
            for _ in range(repeats):
                start = time.perf_counter()
                statuses.add(client.post(path, content=body).status_code)
                seconds.append(time.perf_counter() - start)
            out[name] = {
                "bytes": len(body),
                "statuses": sorted(statuses),
                "median_ms": statistics.median(seconds) * 1e3,
                "max_ms": max(seconds) * 1e3,
            }
            print(f"  hostile: {name}: {sorted(statuses)} in {out[name]['median_ms']:.1f} ms", flush=True)
    return out


# setup ------------------------------------------------------------------------------------------------
def _bundle() -> Path:
    from model.pipeline import train_bundle

    path = WORK / "bundle"
    if not (path / "metadata.json").exists():
        train_bundle(WORK / "train", path)
    return path


def _first_row(bundle: Path) -> list[float]:
    import pandas as pd

    from model.bundle import Bundle
    from model.layout import Layout

    names = Bundle.open(bundle).signature.feature_names
    row: list[float] = pd.read_csv(Layout.at(WORK / "train").test_csv)[names].iloc[0].tolist()
    return row


def _mlserver_ready() -> Path | None:
    """MLServer in its own venv (its pins clash with seldon-core's); None if it cannot be installed."""
    python = MLSERVER_VENV / "bin" / "python"
    mlserver = MLSERVER_VENV / "bin" / "mlserver"
    if mlserver.exists():
        return mlserver
    import sklearn

    try:
        subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True, timeout=120)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                *MLSERVER_PACKAGES,
                f"scikit-learn=={sklearn.__version__}",
            ],
            check=True,
            timeout=900,
        )
    except (subprocess.SubprocessError, OSError) as e:
        print(f"  MLServer could not be installed ({e}); skipped")
        shutil.rmtree(MLSERVER_VENV, ignore_errors=True)
        return None
    return mlserver


def _mlserver_model(bundle: Path) -> Path:
    """MLServer's scikit-learn runtime loads joblib: the benchmark's own copy of the bundle's estimator."""
    import joblib

    from model.bundle import Bundle

    root = WORK / "mlserver"
    model_dir = root / "sk"
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(Bundle.open(bundle).load_sklearn(), model_dir / "model.joblib")
    (model_dir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "sk",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "v1"},
            }
        )
    )
    return root


def _in_process(bundle: Path, row: list[float], body_v1: bytes) -> dict[str, float]:
    """Per-call cost without HTTP: the model call, and the whole request path minus the socket."""
    import numpy as np
    import orjson
    import pandas as pd

    from model.bundle import Bundle
    from serving.core.predictor import Predictor
    from serving.http.app import PredictorApp
    from serving.protocols import seldon

    onnx = Predictor.load(str(bundle))
    app = PredictorApp(onnx)
    sklearn = Predictor.load(str(bundle), backend="sklearn")
    estimator = Bundle.open(bundle).load_sklearn()
    frame = pd.DataFrame([row], columns=onnx.feature_names)
    X = np.asarray([row])

    def codec_path() -> None:
        request = seldon.decode_predict(orjson.loads(body_v1))
        prediction = onnx.predict(onnx.validate(request.rows, request.names))
        orjson.dumps(
            seldon.encode_predict(request, prediction, app.classes, app.name, onnx.digest),
            option=orjson.OPT_SERIALIZE_NUMPY,
        )

    cases: dict[str, Callable[[], Any]] = {
        "onnx_predict_us": lambda: onnx.predict(X),
        "onnx_validate_predict_us": lambda: onnx.predict(onnx.validate([row])),
        "seldon_codec_validate_predict_us": codec_path,
        "sklearn_backend_predict_us": lambda: sklearn.predict(X),
        "sklearn_predict_proba_on_a_frame_us": lambda: estimator.predict_proba(frame),
    }
    results = {}
    for name, fn in cases.items():
        for _ in range(200):
            fn()
        # CPU time of this thread, best of three: other load on the machine inflates wall time, not this.
        best = float("inf")
        for _ in range(3):
            n, start = 0, time.thread_time()
            while time.thread_time() - start < 0.3:
                for _ in range(20):
                    fn()
                n += 20
            best = min(best, (time.thread_time() - start) / n * 1e6)
        results[name] = best
    body_v2 = json.dumps(
        {"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP64", "data": row}]}
    ).encode()
    results["asgi_noop_app_us"] = _asgi_cost(noop_app, "/", body_v1)
    results["asgi_sluice_v1_predictions_us"] = _asgi_cost(app, "/api/v1.0/predictions", body_v1)
    results["asgi_sluice_v2_infer_us"] = _asgi_cost(app, f"/v2/models/{app.name}/infer", body_v2)
    return results


def _asgi_cost(app: Any, path: str, body: bytes) -> float:
    """CPU time of one request through an ASGI app without a socket: what the app adds to the server."""
    import asyncio

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    message = {"type": "http.request", "body": body, "more_body": False}

    async def receive() -> dict[str, Any]:
        return message

    async def send(_: dict[str, Any]) -> None:
        pass

    async def timed() -> float:
        for _ in range(500):
            await app(scope, receive, send)
        best = float("inf")
        for _ in range(3):
            start = time.thread_time()
            for _ in range(3000):
                await app(scope, receive, send)
            best = min(best, (time.thread_time() - start) / 3000 * 1e6)
        return best

    return asyncio.run(timed())


# the run ----------------------------------------------------------------------------------------------
def targets(bundle: Path, row: list[float], mlserver: Path | None) -> list[Target]:
    from model.bundle import Bundle

    digest = Bundle.open(bundle).digest
    body_v1 = json.dumps({"data": {"ndarray": [row]}}).encode()
    body_v2 = json.dumps(
        {"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP64", "data": row}]}
    ).encode()
    body_mlserver = json.dumps(
        {
            "inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP64", "data": row}],
            "outputs": [{"name": "predict_proba"}],
        }
    ).encode()
    serve = [str(BIN / "sluice"), "serve", "--model", str(bundle), "--port", "{port}", "--digest", digest]
    has_probabilities: Callable[[Any], bool] = lambda r: len(r["data"]["ndarray"][0]) == 2  # noqa: E731
    out = [
        Target(
            "no-op floor (uvicorn+httptools, bare ASGI)",
            [str(BIN / "python"), "-m", "uvicorn", "benchmarks.serving:noop_app", "--port", "{port}",
             "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
             "--lifespan", "off", "--no-server-header", "--no-date-header", "--no-proxy-headers"],
            "/",
            body_v1,
            "/",
        ),
        Target(
            "FastAPI no-op (same uvicorn flags)",
            [str(BIN / "python"), "-m", "uvicorn", "benchmarks.serving:fastapi_noop", "--factory", "--port",
             "{port}", "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
             "--lifespan", "off", "--no-server-header", "--no-date-header", "--no-proxy-headers"],
            "/",
            body_v1,
            "/docs",
        ),
        Target("sluice serve (Seldon v1)", serve, "/api/v1.0/predictions", body_v1, "/health/ping", check=has_probabilities),
        Target("sluice serve (OIP v2)", serve, "/v2/models/sluice-classifier/infer", body_v2, "/v2/health/ready"),
        Target(
            "sluice serve --backend sklearn (Seldon v1)",
            [*serve, "--backend", "sklearn"],
            "/api/v1.0/predictions",
            body_v1,
            "/health/ping",
            check=has_probabilities,
        ),
        Target(
            "seldon-core-microservice + serving.component",
            [str(BIN / "seldon-core-microservice"), "serving.component.Classifier", "--service-type", "MODEL",
             "--http-port", "{port}", "--grpc-port", str(_free_port()), "--metrics-port", str(_free_port()),
             "--log-level", "WARNING"],
            "/api/v1.0/predictions",
            body_v1,
            "/health/ping",
            env={
                "PYTHONPATH": str(REPO),
                "PREDICTIVE_UNIT_PARAMETERS": json.dumps(
                    [{"name": "model_uri", "type": "STRING", "value": str(bundle)},
                     {"name": "model_digest", "type": "STRING", "value": digest}]
                ),
            },
            check=has_probabilities,
        ),
    ]  # fmt: skip
    if mlserver is not None:
        root = _mlserver_model(bundle)
        settings = root / "settings.json"
        out.append(
            Target(
                "MLServer 1.7.1 sklearn runtime (parallel_workers 0, debug off)",
                [str(mlserver), "start", str(root)],
                "/v2/models/sk/infer",
                body_mlserver,
                "/v2/models/sk/ready",
                env={"MLSERVER_HTTP_PORT": "{port}", "MLSERVER_DEBUG": "false", "MLSERVER_PARALLEL_WORKERS": "0",
                     "MLSERVER_GRPC_PORT": str(_free_port()), "MLSERVER_METRICS_PORT": str(_free_port())},
                cwd=root,
            )
        )  # fmt: skip
        settings.write_text(json.dumps({"debug": False, "parallel_workers": 0}))
    return out


def _summary(points: list[Point]) -> list[dict[str, Any]]:
    """Medians over rounds; ratios to the floor are taken within a round, then their median."""
    floor_name = points[0].target  # round 0 runs in target order: the floor first
    floor = {p.round: p for p in points if p.target == floor_name}
    rows = []
    for name in dict.fromkeys(p.target for p in points):
        mine = [p for p in points if p.target == name]
        rows.append(
            {
                "target": name,
                "rps_c16": statistics.median(p.rps_c16 for p in mine),
                "rps_c16_rounds": [round(p.rps_c16) for p in mine],
                "vs_floor": statistics.median(p.rps_c16 / floor[p.round].rps_c16 for p in mine),
                "p50_ms_c1": statistics.median(p.p50_ms_c1 for p in mine),
                "p50_vs_floor": statistics.median(p.p50_ms_c1 / floor[p.round].p50_ms_c1 for p in mine),
                "p99_ms_c1": statistics.median(p.p99_ms_c1 for p in mine),
                "cpu_us_per_request": statistics.median(p.cpu_us_per_request for p in mine),
                "errors": sum(p.errors for p in mine),
            }
        )
    return rows


def _markdown(
    rows: list[dict[str, Any]],
    in_process: dict[str, float],
    goals: dict[str, Any],
    meta: dict[str, Any],
    profile: dict[str, float] | None,
    hostile: dict[str, dict[str, Any]] | None = None,
) -> str:
    lines = [
        "# Real-time serving: single-row requests",
        "",
        f"{meta['date']}, {meta['cpus']} CPUs, Python {meta['python']}, wrk over loopback (wrk shares the CPUs), "
        f"{DURATION} s per point, {meta['rounds']} rounds (median; per-round throughput in brackets; ratios to the "
        f"floor taken within each round). Load average before the run: {meta['loadavg']}. "
        "Logistic regression on 30 features. CPU is the server's whole process tree.",
        "",
        "| server | req/s @c16 | vs floor | p50 us @c1 | p99 us @c1 | CPU us/req | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['rps_c16']:,.0f} ({', '.join(f'{x:,}' for x in r['rps_c16_rounds'])}) "
            f"| {r['vs_floor']:.2f} | {r['p50_ms_c1'] * 1000:.0f} | {r['p99_ms_c1'] * 1000:.0f} "
            f"| {r['cpu_us_per_request']:.0f} | {r['errors']} |"
        )
    lines += [
        "",
        "In-process, one row, no HTTP (CPU time per call, best of 3):",
        "",
        "| call | us |",
        "|---|---:|",
    ]
    lines += [f"| {k.removesuffix('_us')} | {v:.1f} |" for k, v in in_process.items()]
    if profile:
        lines += [
            "",
            "Where `sluice serve` spends its time under the c=16 load (py-spy, share of samples, inclusive):",
            "",
            "| stage | % |",
            "|---|---:|",
        ]
        lines += [f"| {stage} | {share} |" for stage, share in profile.items()]
    if hostile:
        lines += [
            "",
            "Hostile requests to `sluice serve` (wall time of the whole exchange over loopback, 5 tries):",
            "",
            "| request | bytes | status | median ms | slowest ms |",
            "|---|---:|---|---:|---:|",
        ]
        lines += [
            f"| {name} | {h['bytes']:,} | {', '.join(map(str, h['statuses']))} | {h['median_ms']:.1f} "
            f"| {h['max_ms']:.1f} |"
            for name, h in hostile.items()
        ]
    lines += ["", "Goals:", ""]
    lines += [
        f"- {k}: {v['value']} (goal {v['goal']}): {'met' if v['met'] else 'NOT met'}"
        for k, v in goals.items()
    ]
    return "\n".join(lines) + "\n"


def _goals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by = {r["target"]: r for r in rows}
    sluice = by["sluice serve (Seldon v1)"]
    goals: dict[str, Any] = {
        "throughput vs no-op floor": {
            "value": round(sluice["vs_floor"], 2),
            "goal": ">= 0.5",
            "met": sluice["vs_floor"] >= 0.5,
        },
        "p50 vs floor p50": {
            "value": round(sluice["p50_vs_floor"], 2),
            "goal": "<= 2",
            "met": sluice["p50_vs_floor"] <= 2,
        },
    }
    mlserver = next((r for r in rows if r["target"].startswith("MLServer")), None)
    if mlserver:
        ratio = sluice["rps_c16"] / mlserver["rps_c16"]
        goals["throughput vs MLServer"] = {
            "value": round(ratio, 1),
            "goal": ">= 5 (aim 20)",
            "met": ratio >= 5,
        }
    return goals


def main(results_dir: Path) -> None:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    WORK.mkdir(parents=True, exist_ok=True)
    bundle = _bundle()
    row = _first_row(bundle)
    body_v1 = json.dumps({"data": {"ndarray": [row]}}).encode()
    print("  in-process predict ...", flush=True)
    in_process = _in_process(bundle, row, body_v1)
    mlserver = _mlserver_ready()
    loadavg = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    points: list[Point] = []
    running: list[Running] = []
    profile: dict[str, float] | None = None
    hostile: dict[str, dict[str, Any]] = {}
    try:
        # All servers up at once (idle ones cost nothing), measured in turns, the order rotated each round:
        # a swing in CPU speed or in the machine's other load then hits every server alike.
        for target in targets(bundle, row, mlserver):
            running.append(_launch(target))
        for round_ in range(ROUNDS):
            print(f"  round {round_ + 1}/{ROUNDS}", flush=True)
            shift = round_ % len(running)
            for r in running[shift:] + running[:shift]:
                points.append(_measure(r, round_))
        print("  profiling sluice serve ...", flush=True)
        sluice = next(r for r in running if r.target.name == "sluice serve (Seldon v1)")
        profile = _profile(sluice)
        hostile = _hostile(sluice.url.removesuffix(sluice.target.path), row)
    finally:
        for r in running:
            _stop(r.process)
    rows = _summary(points)
    goals = _goals(rows)
    huge = hostile["huge shape list (1.7 MB)"]
    goals["huge shape list refused"] = {
        "value": f"{huge['statuses']} in {huge['max_ms']:.0f} ms (slowest of 5)",
        "goal": "4xx in < 1000 ms",
        "met": all(400 <= s < 500 for s in huge["statuses"]) and huge["max_ms"] < 1000,
    }
    goals["every hostile request refused with a 4xx"] = {
        "value": sorted({s for h in hostile.values() for s in h["statuses"]}),
        "goal": "all 4xx",
        "met": all(400 <= s < 500 for h in hostile.values() for s in h["statuses"]),
    }
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "duration_s": DURATION,
        "rounds": ROUNDS,
        "concurrency": CONCURRENCY,
        "loadavg": loadavg,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "serving.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "summary": rows,
                "in_process_us": in_process,
                "profile_percent": profile,
                "hostile": hostile,
                "goals": goals,
                "points": [asdict(p) for p in points],
            },
            indent=2,
        )
        + "\n"
    )
    markdown = _markdown(rows, in_process, goals, meta, profile, hostile)
    (results_dir / "serving.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main(REPO / "benchmarks" / "results")
