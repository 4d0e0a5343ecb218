"""`sluice doctor`: what a project made from the template still lacks, as a table (fine / missing / how to
fix), or JSON for CI. Exits 1 when anything required is missing. Registered on the top-level app by
sluice/cli.py."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from sluice.console import console

STYLE = {"ok": "green", "missing": "bold red", "warn": "yellow", "skipped": "dim"}
MARK = {"ok": "fine", "missing": "MISSING", "warn": "warn", "skipped": "skipped"}


def doctor(
    project: Annotated[Path, typer.Option("--project", "-C", help="The project's root.")] = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON (for CI).")] = False,
    github: Annotated[
        bool,
        typer.Option("--github", help="Check the GitHub adapter (token from GITHUB_TOKEN): PRs, merges."),
    ] = False,
    mlflow_uri: Annotated[
        str | None,
        typer.Option(
            "--mlflow-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow to check for the registered model."
        ),
    ] = None,
    prometheus_url: Annotated[
        str | None,
        typer.Option(
            "--prometheus-url", envvar="PROMETHEUS_URL", help="Prometheus to check for predictor series."
        ),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", help="Environments whose series to look for (default: those Argo CD deploys)."),
    ] = None,
    remote: Annotated[str, typer.Option(help="The Git remote Argo CD and the pipelines use.")] = "origin",
    argo_server: Annotated[
        str | None,
        typer.Option("--argo-server", envvar="ARGO_SERVER_URL", help="Argo Server URL (https://...)."),
    ] = None,
    argocd_server: Annotated[
        str | None,
        typer.Option("--argocd-server", envvar="ARGOCD_SERVER_URL", help="Argo CD API URL (https://...)."),
    ] = None,
    kube_api: Annotated[
        str | None, typer.Option("--kube-api", envvar="KUBE_API_URL", help="Kubernetes API server URL.")
    ] = None,
) -> None:
    """Check that the project is wired up: names consistent across manifests, policies, workflows and pipelines;
    the Git remote and default branch; the GitHub token (--github); MLflow, Prometheus and the cluster when
    given; secrets documented; the images a cluster pulls pinned by a real digest (a warning until a release
    builds them). Exit 1 when anything required is missing."""
    from doctor.run import Options, diagnose

    opts = Options(
        root=project.resolve(),
        remote=remote,
        check_github=github,
        github_token=os.environ.get("GITHUB_TOKEN") or None,
        mlflow_uri=mlflow_uri,
        prometheus_url=prometheus_url,
        environments=list(env or []),
        argo_server=argo_server,
        argo_token=os.environ.get("ARGO_TOKEN") or None,
        argocd_server=argocd_server,
        argocd_token=os.environ.get("ARGOCD_AUTH_TOKEN") or None,
        kube_api=kube_api,
        kube_token=os.environ.get("KUBE_TOKEN") or None,
    )
    if as_json:
        report = diagnose(opts)
        typer.echo(json.dumps(report.as_dict(), indent=2))
        raise typer.Exit(0 if report.healthy else 1)
    with console.status("checking") as status:
        report = diagnose(opts, progress=lambda name: status.update(f"checking {name}"))
    _table(report)
    raise typer.Exit(0 if report.healthy else 1)


def _table(report: object) -> None:
    from rich.markup import escape
    from rich.table import Table

    from doctor.report import Report

    assert isinstance(report, Report)
    table = Table(title="sluice doctor", show_lines=False, expand=False)
    for column in ("area", "check", "status", "what", "where", "how to fix"):
        table.add_column(column, overflow="fold")
    for f in report.findings:
        status = str(f.status)
        table.add_row(
            f.area,
            escape(f.check),
            f"[{STYLE[status]}]{MARK[status]}[/]",
            escape(f.detail),
            escape(f.where),
            escape(f.fix),
        )
    console.print(table)
    counts = report.counts()
    summary = ", ".join(f"{n} {MARK[s]}" for s, n in counts.items() if n)
    verdict = "[green]ready[/]" if report.healthy else "[bold red]not ready[/]"
    console.print(f"{verdict}: {summary}")


def register(app_: typer.Typer) -> None:
    """Add this module's command to the `sluice` app."""
    app_.command("doctor")(doctor)
