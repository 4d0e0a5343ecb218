"""`sluice pipelines`: render the hera-authored Argo objects to pipelines/rendered/, list them, submit one.

Registered on the top-level app by sluice/cli.py. hera is imported inside the commands (it is not light).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from sluice.console import console, report

app = typer.Typer(
    help="Argo Workflows authored with hera: render them to YAML, validate, submit to an Argo Server.",
    no_args_is_help=True,
)


@app.command("render")
def render(
    out: Annotated[
        Path | None, typer.Option("--out", help="Directory to write to (default: pipelines/rendered).")
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; fail if the files on disk differ from the Python.")
    ] = False,
) -> None:
    """Render every pipeline to YAML (one file per object), validated against Argo's schema first."""
    from pipelines.catalog import RENDERED_DIR, catalog, stale, write_all
    from pipelines.schemas import validate_document

    directory = out or RENDERED_DIR
    problems = [str(p) for pipe in catalog() for p in validate_document(pipe.build(), pipe.filename)]
    if problems:
        report("rendered objects are not valid:\n  " + "\n  ".join(problems))
    if check:
        out_of_date = stale(directory)
        if out_of_date:
            report("out of date (run `sluice pipelines render`): " + ", ".join(map(str, out_of_date)))
        console.print(f"{directory}: up to date", highlight=False)
        return
    for path in write_all(directory):
        console.print(f"wrote {path}", highlight=False)


@app.command("list")
def list_pipelines() -> None:
    """List the pipelines: name, kind, title (as the Argo UI shows it) and the module defining it."""
    from rich.table import Table

    from pipelines.catalog import catalog
    from pipelines.conventions import DESCRIPTION, TITLE

    table = Table()
    table.add_column("name", no_wrap=True)
    for column in ("kind", "title", "defined in"):
        table.add_column(column)
    for pipe in catalog():
        doc = pipe.build()
        notes = doc["metadata"].get("annotations") or {}
        title = notes.get(TITLE) or notes.get(DESCRIPTION) or notes.get("sluice.dev/description", "")
        table.add_row(pipe.name, pipe.kind, title, pipe.module)
    console.print(table)


def _parameters(values: list[str]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            report(f"--parameter {item!r}: expected NAME=VALUE")
        out[key] = value
    return out


@app.command("submit")
def submit(
    name: Annotated[
        str, typer.Argument(help="WorkflowTemplate to run: train, build-serving-image, promote, batch-score.")
    ],
    parameter: Annotated[
        list[str] | None,
        typer.Option("--parameter", "-p", help="NAME=VALUE, repeatable (workflow arguments)."),
    ] = None,
    namespace: Annotated[
        str | None, typer.Option(help="Namespace (default: $ARGO_NAMESPACE, else the template's own).")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until the workflow stops; exit 1 unless it succeeded.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="With --wait: give up after this many seconds.")] = 3 * 3600,
    poll: Annotated[float, typer.Option(help="With --wait: seconds between status checks.")] = 10.0,
    outputs_to: Annotated[
        Path | None,
        typer.Option(
            "--outputs-to", help="With --wait: append the outputs as name=value lines (e.g. $GITHUB_OUTPUT)."
        ),
    ] = None,
) -> None:
    """Submit a WorkflowTemplate through the Argo Server API ($ARGO_SERVER, token in $ARGO_TOKEN)."""
    from pipelines.catalog import by_name
    from pipelines.submit import SubmitError
    from pipelines.submit import submit as submit_template
    from pipelines.submit import wait as wait_for

    server = os.environ.get("ARGO_SERVER", "").strip()
    if not server:
        report(
            "ARGO_SERVER is not set: export ARGO_SERVER=https://argo.example.com (and ARGO_TOKEN, "
            "from `argo auth token`) to submit to a cluster; see docs/cluster.md"
        )
    try:
        pipe = by_name(name)
    except KeyError as e:
        report(str(e.args[0]))
    if not pipe.submittable:
        report(f"{name} is a {pipe.kind}, not a WorkflowTemplate: Argo runs it by itself once applied")
    params = _parameters(parameter or [])
    doc = pipe.build()
    declared = {p["name"] for p in doc["spec"].get("arguments", {}).get("parameters", [])}
    unknown = sorted(set(params) - declared)
    if unknown:
        report(f"{name} has no parameter {', '.join(unknown)} (it takes: {', '.join(sorted(declared))})")
    skip_verify = os.environ.get("ARGO_INSECURE_SKIP_VERIFY", "").lower() in {"1", "true", "yes"}
    token = os.environ.get("ARGO_TOKEN")
    try:
        submitted = submit_template(
            server,
            namespace or os.environ.get("ARGO_NAMESPACE") or doc["metadata"]["namespace"],
            name,
            params,
            token=token,
            verify=not skip_verify,
        )
        console.print(
            f"submitted [bold]{submitted.name}[/] in {submitted.namespace}: {submitted.url}", highlight=False
        )
        if not wait:
            return
        finished = wait_for(
            server,
            submitted.namespace,
            submitted.name,
            token=token,
            verify=not skip_verify,
            timeout=timeout,
            poll=poll,
        )
    except SubmitError as e:
        report(e)
    for key, value in finished.outputs.items():
        console.print(f"  {key} = {value}", highlight=False)
    if outputs_to is not None:
        write_outputs(outputs_to, finished.outputs)
    if not finished.succeeded:
        report(f"{finished.name} {finished.phase}: {finished.message or 'see the Argo UI'} ({submitted.url})")
    console.print(f"[green]{finished.name} succeeded[/]", highlight=False)


def write_outputs(path: Path, outputs: dict[str, str]) -> None:
    """Append name=value lines in the $GITHUB_OUTPUT format; multi-line values as heredocs whose delimiter
    is random and absent from the value (as @actions/core does), so a value cannot end its heredoc early
    and write outputs of its own."""
    import re
    import uuid

    with path.open("a", encoding="utf-8") as f:
        for key, value in outputs.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", key):
                report(f"workflow output name {key!r} cannot be a GitHub Actions output name")
            if "\n" in value or "\r" in value:
                delimiter = f"ghadelimiter_{uuid.uuid4()}"
                while delimiter in value:
                    delimiter = f"ghadelimiter_{uuid.uuid4()}"
                f.write(f"{key}<<{delimiter}\n{value}\n{delimiter}\n")
            else:
                f.write(f"{key}={value}\n")


def register(app_: typer.Typer) -> None:
    """Add this module's commands to the `sluice` app."""
    app_.add_typer(app, name="pipelines")
