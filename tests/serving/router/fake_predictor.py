"""A small real HTTP predictor for gateway tests: speaks the paths the gateway forwards, answers as itself.

`python fake_predictor.py --port N --name NAME [--model M --digest D] [--report-fd FD] [--label 0|1]
[--delay S] [--status 500] [--exit-after N] [--hang-after N]` (`--hang-after`: after N predictions the process
stops answering anything, health included; `--report-fd`: bind port N (0: any) and write the port to FD, as
the real predictor server does). Answers Seldon v1 predictions with a probability row that names class
`--label`, v2 infer with a label output, feedback with an empty answer, and the readiness probe
`/v2/models/M/versions/D/ready` for its model and digest only; counts requests per path at `GET /fake/stats`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import time
from collections import Counter
from typing import Any

import orjson
import uvicorn


def make_app(
    name: str,
    label: int,
    delay: float,
    status: int,
    exit_after: int,
    hang_after: int = 0,
    model: str = "classifier",
    digest: str = "",
) -> Any:
    counts: Counter[str] = Counter()
    bodies: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        counts[path] += 1
        code = 200
        ready = f"/v2/models/{model}/versions/{digest}/ready"
        if path == ready:
            answer = {"name": model, "ready": True}
        elif path.endswith("/ready") and path.startswith("/v2/models/"):
            code, answer = 404, {"error": f"this predictor serves {model} at {digest}"}
        elif path == "/fake/stats":
            answer: Any = {"name": name, "counts": dict(counts), "bodies": bodies[-20:]}
        elif path in ("/v2/health/ready", "/health/ping", "/v2/health/live"):
            answer = {"ready": True}
        elif path.startswith("/v2/models/") and path.endswith("/infer"):
            answer = {
                "model_name": name,
                "outputs": [{"name": "label", "datatype": "INT64", "shape": [1], "data": [label]}],
            }
        elif path == "/api/v1.0/predictions":
            probs = [0.2, 0.8] if label == 1 else [0.8, 0.2]
            answer = {"data": {"names": ["t:0", "t:1"], "ndarray": [probs]}, "meta": {"requestPath": {}}}
        elif path == "/api/v1.0/feedback":
            bodies.append(orjson.loads(body))
            answer = {"data": {"ndarray": []}, "meta": {}}
        else:
            code, answer = 404, {"error": f"no route {path}"}
        if path not in ("/fake/stats", "/v2/health/ready", "/health/ping", "/v2/health/live", ready):
            if delay:
                await asyncio.sleep(delay)
            if status != 200:
                code, answer = status, {"error": f"{name} fails on purpose"}
        data = orjson.dumps(answer)
        await send(
            {
                "type": "http.response.start",
                "status": code,
                "headers": [(b"content-type", b"application/json"), (b"x-fake-name", name.encode())],
            }
        )
        await send({"type": "http.response.body", "body": data})
        served = sum(v for k, v in counts.items() if k.startswith(("/api", "/v2/models")))
        if exit_after and served >= exit_after:
            os._exit(3)
        if hang_after and served >= hang_after:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # still stoppable at once
            time.sleep(3600)  # blocks the event loop: alive, but answers nothing

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--name", required=True)
    parser.add_argument("--label", type=int, default=1)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument("--exit-after", type=int, default=0)
    parser.add_argument("--hang-after", type=int, default=0)
    parser.add_argument("--model", default="classifier")
    parser.add_argument("--digest", default="")
    parser.add_argument("--report-fd", type=int, default=None)
    a, _ = parser.parse_known_args()
    app = make_app(a.name, a.label, a.delay, a.status, a.exit_after, a.hang_after, a.model, a.digest)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    sock = socket.socket()
    sock.bind((a.host, a.port))
    sock.listen(128)
    if a.report_fd is not None:
        with open(a.report_fd, "w") as report:
            report.write(f"{sock.getsockname()[1]}\n")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
