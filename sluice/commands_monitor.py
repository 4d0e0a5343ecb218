"""`sluice monitor LOG_DIR`: drift, prediction drift and live accuracy from the router's prediction log."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sluice.console import console
from sluice.console import report as refuse
from sluice.stopping import saying, stop_on_signals

if TYPE_CHECKING:
    from monitor.assess import Thresholds
    from monitor.follow import Follower
    from monitor.run import Run


def _duration(value: str | None, option: str) -> float | None:
    if value is None:
        return None
    from rollout.policy import parse_duration

    try:
        return parse_duration(value)
    except ValueError as e:
        refuse(f"{option}: {e}")


def thresholds_from(
    policy: Path | None, drift: float | None, accuracy: float | None
) -> tuple[Thresholds, float, Any]:
    """Thresholds, the label window and the policy's monitoring section (a policy file, options override)."""
    from monitor.assess import Thresholds
    from rollout.policy import MonitoringSpec, PolicyError, load_policy

    spec = MonitoringSpec()
    if policy is not None:
        try:
            spec = load_policy(policy).monitoring
        except (PolicyError, OSError) as e:
            refuse(f"--policy {policy}: {e}")
    t = Thresholds(
        drift=drift if drift is not None else spec.drift_threshold,
        min_records=spec.min_records,
        min_labels=spec.min_labels,
        accuracy=accuracy if accuracy is not None else spec.accuracy_threshold,
        error=spec.error_threshold,
    )
    if t.drift <= 0:
        refuse(f"--drift-threshold: {t.drift} must be positive")
    return t, spec.label_window, spec


def monitor(
    log_dir: Annotated[
        str,
        typer.Argument(
            metavar="LOG",
            help="the prediction log: a directory (`sluice up --prediction-log DIR`) or a Redis stream "
            "redis://host:port/db?stream=KEY (`sluice router --prediction-log URL`; KEY defaults to "
            "sluice:predictions)",
        ),
    ],
    contract: Annotated[
        Path, typer.Option(help="the data contract whose reference distributions live data is compared with")
    ] = Path("contract.yaml"),
    policy: Annotated[
        Path | None,
        typer.Option(
            help="a promotion policy whose `monitoring` section sets thresholds and the label window"
        ),
    ] = None,
    namespace: Annotated[str | None, typer.Option(help="only this namespace's records")] = None,
    deployment: Annotated[str | None, typer.Option(help="only this deployment's records")] = None,
    window: Annotated[
        str | None, typer.Option(help="only predictions from the last DURATION (e.g. 1h, 2d) (default: all)")
    ] = None,
    label_window: Annotated[
        str | None,
        typer.Option(
            help="a label joins its prediction if it arrives within DURATION of it (default: the "
            "policy's monitoring.label_window, else 1d)"
        ),
    ] = None,
    drift_threshold: Annotated[
        float | None, typer.Option(help="PSI above which a feature drifted (default: policy, else 0.2)")
    ] = None,
    accuracy_threshold: Annotated[
        float | None, typer.Option(help="live accuracy under which to retrain")
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="write index.html, drift.png and summary.json into this directory")
    ] = Path("reports/monitor"),
    textfile: Annotated[
        Path | None, typer.Option(help="write the metrics to this file (node_exporter's textfile collector)")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="serve the metrics on this port at /metrics (with --watch)")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="the metrics address")] = "127.0.0.1",
    watch: Annotated[
        str | None, typer.Option(help="run again every DURATION until Ctrl-C (e.g. 5m) (default: run once)")
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(
            help="keep the reader's position and the records the window still uses in this directory: each run "
            "reads only what is new since the last (same figures as reading the whole log; a corrupt state "
            "is reported and the log read again from its start)"
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="exit with status 3 when a retrain is called for (for cron and CI)"),
    ] = False,
) -> None:
    """Compare live traffic with the training data and report what drifted.

    Per predictor: each feature's drift against the contract's reference (population stability index over the
    reference quantile bins or categories, with a chi-squared test; KS at the quantiles for numeric features),
    the predictions' drift against the target's reference, and live accuracy (a regression: mean absolute
    error) on feedback that joined its prediction by puid within the label window. Exports
    sluice_drift_score{namespace, deployment_name, predictor_name, feature} (what the alert rules read).
    """
    from model.contract import ContractError, load_contract

    t, default_label_window, _ = thresholds_from(policy, drift_threshold, accuracy_threshold)
    joined_window = _duration(label_window, "--label-window") or default_label_window
    span = _duration(window, "--window")
    interval = _duration(watch, "--watch")
    from rich.markup import escape

    from monitor.follow import Follower
    from monitor.sources import SourceError, open_source

    try:
        follower = Follower(open_source(log_dir), state)
    except SourceError as e:
        refuse(e)
    if follower.reset:
        console.print(f"[yellow]--state:[/] {escape(follower.reset)}; reading the log from its start")
    try:
        spec = load_contract(contract)
    except ContractError as e:
        refuse(f"{contract}: {e}")
    latest = _Latest()
    if metrics_port is not None:
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry(auto_describe=False)
        registry.register(latest)
        try:
            start_http_server(metrics_port, addr=metrics_host, registry=registry)
        except OSError as e:
            refuse(f"--metrics-port {metrics_port}: {e}")
    run = None
    stopping = saying("the report under way", console.print)
    with contextlib.suppress(KeyboardInterrupt), stop_on_signals(stopping) as stop:
        while True:
            try:
                run = _run(
                    follower, spec, t, namespace, deployment, span, joined_window, report, textfile, latest
                )
            except SourceError as e:
                if interval is None:
                    refuse(e)
                console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)  # --watch tries again
            if interval is None or stop.is_set() or stop.wait(interval):
                break  # Ctrl-C or SIGTERM ends --watch after the report under way is written
    if check and run is not None and run.reasons:
        raise typer.Exit(3)


class _Latest:
    """A collector serving the last run's registry."""

    def __init__(self) -> None:
        self.registry: Any = None

    def collect(self) -> Any:
        if self.registry is not None:
            yield from self.registry.collect()


def _run(
    follower: Follower,
    spec: Any,
    t: Thresholds,
    namespace: str | None,
    deployment: str | None,
    span: float | None,
    label_window: float,
    report: Path | None,
    textfile: Path | None,
    latest: _Latest,
) -> Run:
    from rich.markup import escape
    from rich.table import Table

    from monitor.metrics import registry_of, write_textfile
    from monitor.report import write_report
    from monitor.run import run_once

    run = run_once(
        follower.source.label,
        spec,
        t,
        namespace=namespace,
        deployment=deployment,
        window=span,
        label_window=label_window,
        follower=follower,
    )
    registry = registry_of(run.assessments, run.log.labels, run.at)
    latest.registry = registry
    if textfile is not None:
        write_textfile(registry, textfile)
    label = follower.source.label
    table = Table(
        title=f"{escape(label)}: {run.log.requests} requests ({follower.read_last} new records read)"
    )
    for column in (
        "predictor",
        "rows",
        "drifted features",
        "top PSI",
        "prediction PSI",
        "accuracy / MAE",
        "labels",
    ):
        table.add_column(column)
    for a in run.assessments:
        top = max(a.drifts, key=lambda x: x.score, default=None)
        quality = a.accuracy if a.accuracy is not None else a.error
        table.add_row(
            escape(a.predictor),
            f"{a.n}" + ("" if a.enough else " (too few)"),
            escape(", ".join(a.drifted) or "-"),
            "-" if top is None else f"{top.score:.3f} ({escape(top.feature)})",
            "-" if a.prediction is None else f"{a.prediction.score:.3f}",
            "-" if quality is None else f"{quality:.3f}",
            str(a.labelled),
        )
    console.print(table)
    lab = run.log.labels
    console.print(
        f"labels: {lab.joined} joined, {lab.late} late, {lab.unmatched} unmatched; skipped records: "
        f"{dict(run.log.skipped.counts) or 'none'}",
        highlight=False,
    )
    for reason in run.reasons:
        console.print(f"[bold red]retrain:[/] {escape(reason)}", highlight=False)
    if report is not None:
        page = write_report(report, run.assessments, run.log.labels, run.log.skipped, t, label)
        console.print(f"report: {escape(str(page))}", highlight=False)
    return run


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `sluice` app."""
    app.command("monitor")(monitor)
