"""Run one predictor over HTTP: `python -m serving.http.server --model URI --port N` (what `sluice serve` runs).

The model is loaded (and its digest checked) before the port opens, so an open port means ready.
One worker, uvloop and httptools, access log off: the settings that measured fastest here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from serving.core.predictor import BACKENDS, Backend, Predictor
from serving.http.app import DEFAULT_MAX_BODY_BYTES, PredictorApp


def build_app(
    model: str,
    *,
    name: str | None = None,
    digest: str | None = None,
    backend: Backend = "onnx",
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    root: str | Path = ".",
) -> PredictorApp:
    predictor = Predictor.load(model, expected_digest=digest, backend=backend, root=root)
    return PredictorApp(predictor, name, max_body_bytes=max_body_bytes)


def run(
    app: PredictorApp,
    host: str = "127.0.0.1",
    port: int = 9000,
    log_level: str = "warning",
    report_fd: int | None = None,
) -> None:
    """Serve `app`; with `report_fd`, bind first (port 0: any free port), then write the port to that fd.

    The runtime that started this process learns the port from the process itself, so no other process can
    take it between a port being picked and being bound.
    """
    import socket

    import uvicorn

    sockets = None
    if report_fd is not None:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((host, port))
        sock.listen(2048)
        port = sock.getsockname()[1]
        sockets = [sock]
    print(
        f"serving {app.name} ({app.predictor.digest}, {app.predictor.backend}) on http://{host}:{port}",
        flush=True,
    )
    if report_fd is not None:
        with open(report_fd, "w", closefd=True) as report:
            report.write(f"{port}\n")
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level=log_level,
        server_header=False,
        date_header=False,
        proxy_headers=False,  # a predictor sits behind the router on loopback; nothing to rewrite
    )
    uvicorn.Server(config).run(sockets=sockets)


# What Seldon Core's operator sets in a model container: the graph's parameters and the port to serve on.
SELDON_PARAMETERS = "PREDICTIVE_UNIT_PARAMETERS"
SELDON_PORT = "PREDICTIVE_UNIT_HTTP_SERVICE_PORT"
SELDON_METRICS_PORT = "PREDICTIVE_UNIT_METRICS_SERVICE_PORT"  # where the operator's PodMonitors scrape


class SeldonEnvError(ValueError):
    """The operator's environment does not say which model to serve; the message names the variable."""


def seldon_env(environ: dict[str, str]) -> tuple[str, str | None, int]:
    """(model_uri, model_digest, port) from a Seldon Core model container's environment."""
    raw = environ.get(SELDON_PARAMETERS, "")
    try:
        parameters = json.loads(raw)
    except ValueError as e:
        raise SeldonEnvError(f"{SELDON_PARAMETERS}: not JSON ({e})") from None
    if not isinstance(parameters, list) or not all(isinstance(p, dict) for p in parameters):
        raise SeldonEnvError(f"{SELDON_PARAMETERS}: expected a list of {{name, type, value}} objects")
    values = {p.get("name"): p.get("value") for p in parameters}
    uri, digest = values.get("model_uri"), values.get("model_digest")
    if not isinstance(uri, str) or not uri:
        raise SeldonEnvError(f"{SELDON_PARAMETERS}: parameter 'model_uri' is missing or not a string")
    if digest is not None and not isinstance(digest, str):
        raise SeldonEnvError(f"{SELDON_PARAMETERS}: parameter 'model_digest' is not a string")
    port_text = environ.get(SELDON_PORT, "9000")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SeldonEnvError(f"{SELDON_PORT}: {port_text!r} is not a port number")
    return uri, digest or None, int(port_text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serving.http.server", description=__doc__)
    p.add_argument("--model", help="bundle path, file:// URI, or models:/name@alias|/version")
    p.add_argument("--port", type=int, help="0: any free port (with --report-fd)")
    p.add_argument(
        "--seldon-env",
        action="store_true",
        help=f"take the model, its digest and the port from the environment Seldon Core's operator gives a "
        f"model container ({SELDON_PARAMETERS}: model_uri, model_digest; {SELDON_PORT}, default 9000)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--name", default=None, help="model name served (default: the bundle's name)")
    p.add_argument("--digest", default=None, help="refuse a bundle whose digest differs (sha256:...)")
    p.add_argument("--backend", choices=BACKENDS, default="onnx", help="onnx (fast) or sklearn")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    p.add_argument("--log-level", default="warning")
    p.add_argument("--report-fd", type=int, default=None, help="write the bound port to this inherited fd")
    return p


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    if args.seldon_env:
        try:
            args.model, seldon_digest, seldon_port = seldon_env(dict(os.environ))
        except SeldonEnvError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        args.digest = args.digest or seldon_digest
        args.port = seldon_port if args.port is None else args.port
        metrics_port = os.environ.get(SELDON_METRICS_PORT, "")
    else:
        metrics_port = ""
        if args.model is None or args.port is None:
            cli.error("--model and --port are required (or --seldon-env)")
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    from model.bundle import BundleError
    from model.registry import RegistryError

    try:
        app = build_app(
            args.model,
            name=args.name,
            digest=args.digest,
            backend=args.backend,
            max_body_bytes=args.max_body_bytes,
        )
    except (BundleError, RegistryError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.seldon_env and metrics_port.isdigit() and int(metrics_port) != args.port:
        # The same metrics as /prometheus on the main port, also where Seldon's operator points Prometheus.
        from prometheus_client import start_http_server

        start_http_server(int(metrics_port), addr=args.host, registry=app.metrics.registry)
    run(app, args.host, args.port, args.log_level, args.report_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
