"""The `sluice` command: wires the subcommands of model/, serving/, rollout/ and pipelines/.

Heavy libraries (MLflow, Great Expectations, scikit-learn) are imported inside the commands that use them,
so `sluice --help` answers at once. Each area's commands live in `sluice/commands_<area>.py`.
"""

from __future__ import annotations

import typer

from sluice import (
    commands_batch,
    commands_demo,
    commands_doctor,
    commands_edge,
    commands_gitops,
    commands_loop,
    commands_model,
    commands_monitor,
    commands_pipelines,
    commands_rollout,
    commands_router,
    commands_serve,
    commands_stream,
    commands_ui,
    commands_up,
)

app = typer.Typer(
    name="sluice",
    help="GitOps CI/CD for ML models: train with DVC, serve with Seldon, promote through Git behind metric gates.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"sluice {version('sluice')}")
        except PackageNotFoundError:  # running from a checkout that was never installed
            typer.echo("sluice (not installed: run `make setup`)")
        raise typer.Exit()


@app.callback()
def _root(
    _: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """GitOps CI/CD for ML models: train with DVC, serve with Seldon, promote through Git behind metric gates."""


app.add_typer(commands_model.app, name="model")
app.command("demo")(commands_demo.demo)
for area in (
    commands_serve,
    commands_up,
    commands_router,
    commands_rollout,
    commands_gitops,
    commands_batch,
    commands_stream,
    commands_edge,
    commands_pipelines,
    commands_ui,
    commands_monitor,
    commands_loop,
    commands_doctor,
):
    area.register(app)


# Which install set brings a library the commands import when they run (pyproject.toml's extras).
EXTRA_OF = {
    "onnxruntime": "serve",
    "uvicorn": "serve",
    "uvloop": "serve",
    "httptools": "serve",
    "orjson": "serve",
    "prometheus_client": "serve",
    "redis": "serve",
    "swagger_ui_bundle": "serve",
    "mlflow": "serve",
    "pyarrow": "batch",
    "distributed": "dask",
    "dask": "dask",
    "pyspark": "spark",
    "confluent_kafka": "kafka",
    "seldon_core": "seldon",
    "dvc": "train",
    "great_expectations": "train",
    "sklearn": "train",
    "skops": "train",
    "skl2onnx": "train",
    "onnx": "train",
    "onnxconverter_common": "train",
    "pandas": "train",
    "matplotlib": "train",
    "hera": "gitops",
    "httpx": "gitops",
    "ruamel": "gitops",
    "jsonschema": "gitops",
    "referencing": "gitops",
    "kubernetes_validate": "gitops",
    "fastapi": "ui",
    "starlette": "ui",
    "jinja2": "ui",
    "markupsafe": "ui",
}


def main() -> None:
    try:
        app()
    except ModuleNotFoundError as e:
        extra = EXTRA_OF.get((e.name or "").partition(".")[0])
        if extra is None:
            raise
        typer.echo(
            f"error: this command needs the `{extra}` install set (module {e.name} is missing): "
            f"pip install 'sluice[{extra}]'",
            err=True,
        )
        raise SystemExit(1) from None
