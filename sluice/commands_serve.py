"""`sluice serve`: serve one model bundle over HTTP (Seldon v1 and Open Inference Protocol v2).

Registered on the top-level app by sluice/cli.py. The same server runs as `python -m serving.http.server`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from sluice.console import console, report


def serve(
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="Bundle directory, file:// URI, or models:/name@alias | models:/name/N."
        ),
    ],
    port: Annotated[int, typer.Option("--port", "-p", help="Port to listen on.")] = 9000,
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    name: Annotated[
        str | None, typer.Option("--name", help="Model name to serve under (default: the bundle's name).")
    ] = None,
    digest: Annotated[
        str | None,
        typer.Option("--digest", help="Refuse to serve unless the bundle digest is this (sha256:...)."),
    ] = None,
    backend: Annotated[
        str, typer.Option("--backend", help="onnx (ONNX Runtime, fast) or sklearn (the estimator).")
    ] = "onnx",
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", help="Larger request bodies get 413.")
    ] = 4 * 1024 * 1024,
    log_level: Annotated[str, typer.Option("--log-level")] = "warning",
) -> None:
    """Serve a model bundle: Seldon v1 (/api/v1.0/predictions), OIP v2 (/v2/...), /metrics, /docs."""
    from model.bundle import BundleError
    from model.registry import RegistryError
    from serving.core.predictor import BACKENDS
    from serving.http.server import build_app, run

    if backend not in BACKENDS:
        report(f"--backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    try:
        app = build_app(
            model,
            name=name,
            digest=digest,
            backend=backend,
            max_body_bytes=max_body_bytes,
        )
    except (BundleError, RegistryError, OSError) as e:
        report(e)
    console.print(f"docs at http://{host}:{port}/docs, metrics at /metrics", highlight=False)
    run(app, host, port, log_level)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `sluice` app."""
    app.command("serve")(serve)
