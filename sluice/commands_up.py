"""`sluice up DIR`: run a SeldonDeployment on this machine (one process per predictor, one gateway port)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from sluice.console import console, err_console, fail


def up(
    directory: Annotated[
        Path, typer.Argument(help="a directory holding a SeldonDeployment (e.g. gitops/environments/local)")
    ],
    port: Annotated[int, typer.Option(help="the gateway's port (both protocols, and /metrics)")] = 8000,
    host: Annotated[str, typer.Option(help="the gateway's address")] = "127.0.0.1",
    log_dir: Annotated[
        Path | None, typer.Option(help="where predictor processes write their logs (default: a temp dir)")
    ] = None,
    ready_timeout: Annotated[float, typer.Option(help="seconds a predictor may take to become ready")] = 90.0,
    request_timeout: Annotated[
        float, typer.Option(help="seconds the gateway waits for a predictor's answer (then 504)")
    ] = 30.0,
) -> None:
    """Start one predictor process per predictor, then the gateway; follow the manifest as it changes.

    Routing: weights from predictors[].traffic, a shadow gets mirrored copies, `x-sluice-user: KEY` pins a
    caller, `x-sluice-predictor: NAME` picks one. Metrics (Seldon executor names) at /metrics.
    Ctrl-C stops everything.
    """
    import asyncio

    import uvloop

    from serving.local.spec import ManifestError
    from serving.local.supervisor import LocalRuntime, RuntimeEvent, StartupError

    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)

    def show(event: RuntimeEvent) -> None:
        if event.level >= logging.ERROR:
            err_console.print(f"[bold red]{event.message}[/]", highlight=False)
        elif event.level >= logging.WARNING:
            console.print(f"[yellow]{event.message}[/]", highlight=False)
        else:
            console.print(event.message, highlight=False)
        if event.converged:
            _table(runtime)

    runtime = LocalRuntime(
        directory,
        host=host,
        port=port,
        log_dir=log_dir,
        ready_timeout=ready_timeout,
        request_timeout=request_timeout,
        on_event=show,
    )
    console.print(f"sluice up {directory} (predictor logs in {runtime.log_dir})", highlight=False)
    try:
        asyncio.run(runtime.serve(), loop_factory=uvloop.new_event_loop)
    except (ManifestError, StartupError, OSError) as e:
        fail(str(e))
    except KeyboardInterrupt:
        pass
    console.print("stopped", highlight=False)


def _table(runtime: object) -> None:
    from rich.table import Table

    from serving.local.supervisor import LocalRuntime

    assert isinstance(runtime, LocalRuntime)
    table = Table(
        title=f"{runtime.spec.name if runtime.spec else ''} on http://{runtime.host}:{runtime.port}"
    )
    for column in ("predictor", "traffic", "port", "pid", "model"):
        table.add_column(column)
    for row in runtime.snapshot():
        traffic = f"shadow ({row['traffic'] or 100}% mirrored)" if row["shadow"] else f"{row['traffic']}%"
        table.add_row(str(row["name"]), traffic, str(row["port"]), str(row["pid"]), str(row["model_uri"]))
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `sluice` app."""
    app.command("up")(up)
