"""`sluice router MANIFEST`: the router of `sluice up`, run in a cluster in front of the per-predictor Services of
Seldon Core or KServe."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from sluice.console import report
from sluice.log_options import (
    LogFileMb,
    LogKeepFiles,
    LogMaxlen,
    LogPolicy,
    LogSample,
    PredictionLogDir,
    open_prediction_log,
)


def router(
    manifest: Annotated[
        Path,
        typer.Argument(
            help="the SeldonDeployment or InferenceService file to route by, or a directory holding it (a "
            "mounted ConfigMap)"
        ),
    ],
    port: Annotated[int, typer.Option(help="the traffic port (Seldon v1 and Open Inference v2)")] = 8000,
    host: Annotated[str, typer.Option(help="the traffic address")] = "0.0.0.0",
    admin_port: Annotated[
        int, typer.Option(help="the admin port: /metrics, /routes, /healthz, /readyz")
    ] = 8001,
    admin_host: Annotated[
        str, typer.Option(help="the admin address (in a pod: 0.0.0.0 for Prometheus; not on the Service)")
    ] = "127.0.0.1",
    domain: Annotated[
        str, typer.Option(help="the cluster's DNS domain for Service names")
    ] = "svc.cluster.local",
    predictor_port: Annotated[
        int | None,
        typer.Option(
            help="the port of the predictor Services [default: 8000 for Seldon's executor, 80 for KServe]"
        ),
    ] = None,
    probe_path: Annotated[
        str | None,
        typer.Option(
            help="readiness path probed on each predictor Service [default: /ready for Seldon's executor; for "
            "KServe /v2/models/<isvc>/versions/<digest>/ready, which only the pinned model answers]"
        ),
    ] = None,
    request_timeout: Annotated[
        float, typer.Option(help="seconds to wait for a predictor's answer (then 504)")
    ] = 30.0,
    read_timeout: Annotated[
        float, typer.Option(help="seconds a caller has to send a whole request once begun (then 408)")
    ] = 10.0,
    max_connections: Annotated[int, typer.Option(help="open connections accepted (more get 503)")] = 1024,
    resolve: Annotated[
        list[str] | None,
        typer.Option(
            help="SERVICE:PORT=HOST:PORT: connect there for that Service (keeps its Host header); repeat"
        ),
    ] = None,
    prediction_log: PredictionLogDir = None,
    log_sample: LogSample = None,
    log_policy: LogPolicy = None,
    log_file_mb: LogFileMb = 64.0,
    log_keep_files: LogKeepFiles = None,
    log_maxlen: LogMaxlen = 1_000_000,
) -> None:
    """Route a deployment's traffic to the Services Seldon Core or KServe creates for its predictors.

    Same routing as `sluice up` (weights, shadow mirror and comparison, sticky keys, overrides, feedback to
    the predictor that answered, one retry elsewhere), stateless so that replicas scale out; the manifest
    file is followed as it changes (a ConfigMap generated from gitops/environments/<env>/).
    """
    import asyncio

    import uvloop

    from deployment.view import ManifestError
    from serving.router.cluster import ClusterRouter, ClusterSettings
    from serving.router.listener import Limits

    mapping = {}
    for item in resolve or []:
        service, sep, target = item.partition("=")
        if not sep or ":" not in service or ":" not in target:
            report(f"--resolve {item!r}: expected SERVICE:PORT=HOST:PORT")
        mapping[service] = target
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    plog = open_prediction_log(
        prediction_log, log_sample, log_policy, log_file_mb, log_keep_files, log_maxlen
    )
    settings = ClusterSettings(
        manifest,
        host=host,
        port=port,
        admin_host=admin_host,
        admin_port=admin_port,
        domain=domain,
        predictor_port=predictor_port,
        probe_path=probe_path,
        request_timeout=request_timeout,
        limits=Limits(read_timeout=read_timeout, max_connections=max_connections),
        prediction_log=plog,
        resolve=mapping,
    )
    try:
        asyncio.run(ClusterRouter(settings).serve(), loop_factory=uvloop.new_event_loop)
    except (ManifestError, OSError) as e:
        report(e)
    except KeyboardInterrupt:
        pass


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `sluice` app."""
    app.command("router")(router)
