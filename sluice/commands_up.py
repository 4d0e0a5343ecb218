"""`sluice up DIR`: run a SeldonDeployment or a KServe InferenceService on this machine (one process per
predictor, and the router)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from sluice.console import console, err_console, report
from sluice.log_options import (
    LogFileMb,
    LogKeepFiles,
    LogMaxlen,
    LogPolicy,
    LogSample,
    PredictionLogDir,
    open_prediction_log,
)


def up(
    directory: Annotated[
        Path,
        typer.Argument(
            help="a directory holding a SeldonDeployment or a KServe InferenceService (e.g. "
            "gitops/environments/local)"
        ),
    ],
    port: Annotated[
        int, typer.Option(help="the router's traffic port (Seldon v1 and Open Inference v2)")
    ] = 8000,
    host: Annotated[str, typer.Option(help="the router's traffic address")] = "127.0.0.1",
    admin_port: Annotated[
        int, typer.Option(help="the admin port: /metrics (what the gates read), /routes, /healthz, /readyz")
    ] = 8001,
    admin_host: Annotated[
        str, typer.Option(help="the admin address (loopback by default: metrics and internal addresses)")
    ] = "127.0.0.1",
    log_dir: Annotated[
        Path | None, typer.Option(help="where predictor processes write their logs (default: a temp dir)")
    ] = None,
    ready_timeout: Annotated[float, typer.Option(help="seconds a predictor may take to become ready")] = 90.0,
    request_timeout: Annotated[
        float, typer.Option(help="seconds the router waits for a predictor's answer (then 504)")
    ] = 30.0,
    read_timeout: Annotated[
        float, typer.Option(help="seconds a caller has to send a whole request once begun (then 408)")
    ] = 10.0,
    max_connections: Annotated[
        int, typer.Option(help="open connections the router accepts (more get 503 and are closed)")
    ] = 1024,
    prediction_log: PredictionLogDir = None,
    log_sample: LogSample = None,
    log_policy: LogPolicy = None,
    log_file_mb: LogFileMb = 64.0,
    log_keep_files: LogKeepFiles = None,
    log_maxlen: LogMaxlen = 1_000_000,
) -> None:
    """Start one predictor process per predictor, then the router; follow the manifest as it changes.

    Routing: weights from predictors[].traffic (an InferenceService: each canary's trafficPercent, the stable
    predictor the rest), a shadow gets mirrored copies, `x-sluice-user: KEY` (or the A/B
    policy's sticky key) pins a caller, `x-sluice-predictor: NAME` picks one. Metrics (Seldon executor
    names) are on the admin port, at /metrics. Ctrl-C stops everything.
    """
    import asyncio

    import uvloop
    from rich.markup import escape

    from serving.local.spec import ManifestError
    from serving.local.supervisor import LocalRuntime, RuntimeEvent, StartupError
    from serving.router.listener import Limits

    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)

    def show(event: RuntimeEvent) -> None:
        if event.level >= logging.ERROR:
            err_console.print(f"[bold red]{escape(event.message)}[/]", highlight=False)
        elif event.level >= logging.WARNING:
            console.print(f"[yellow]{escape(event.message)}[/]", highlight=False)
        else:
            console.print(escape(event.message), highlight=False)
        if event.converged:
            _table(runtime)

    plog = open_prediction_log(
        prediction_log, log_sample, log_policy, log_file_mb, log_keep_files, log_maxlen
    )
    runtime = LocalRuntime(
        directory,
        host=host,
        port=port,
        admin_host=admin_host,
        admin_port=admin_port,
        log_dir=log_dir,
        ready_timeout=ready_timeout,
        request_timeout=request_timeout,
        limits=Limits(read_timeout=read_timeout, max_connections=max_connections),
        prediction_log=plog,
        on_event=show,
    )
    console.print(
        f"sluice up {escape(str(directory))} (predictor logs in {runtime.log_dir})", highlight=False
    )
    try:
        asyncio.run(runtime.serve(), loop_factory=uvloop.new_event_loop)
    except (ManifestError, StartupError, OSError) as e:
        report(e)
    except KeyboardInterrupt:
        pass
    console.print("stopped", highlight=False)


def _table(runtime: object) -> None:
    from rich.markup import escape
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
        table.add_row(
            str(row["name"]),
            escape(traffic),
            str(row["port"]),
            str(row["pid"]),
            escape(str(row["model_uri"])),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `sluice` app."""
    app.command("up")(up)
