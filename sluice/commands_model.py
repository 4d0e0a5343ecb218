"""`sluice model ...`: the training pipeline's stages, bundle inspection, and registry aliases."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from sluice.console import console, fail

app = typer.Typer(
    help="Train, package and inspect models (the stages `dvc repro` runs).", no_args_is_help=True
)

RootOption = Annotated[
    Path, typer.Option("--root", help="Repository root (the folder holding dvc.yaml and params.yaml).")
]


def _run_stage(name: str, root: Path) -> None:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    from model.bundle import BundleError
    from model.evaluate import GateFailed
    from model.package import ParityError
    from model.params import ParamsError
    from model.pipeline import STAGES, ValidationFailed
    from model.registry import RegistryError

    try:
        message = STAGES[name](root)
    except (
        ParamsError,
        ValidationFailed,
        GateFailed,
        ParityError,
        BundleError,
        RegistryError,
        FileNotFoundError,
    ) as e:
        fail(f"stage {name}: {e}")
    console.print(f"[green]{name}[/]: {message}", highlight=False)


def _stage_command(name: str, doc: str) -> None:
    def command(root: RootOption = Path(".")) -> None:
        _run_stage(name, root)

    command.__doc__ = doc
    app.command(name)(command)


_stage_command(
    "prepare", "Build the raw table from scikit-learn's bundled breast-cancer data; write train/test splits."
)
_stage_command("validate", "Check the raw data against the Great Expectations suite; stop on any violation.")
_stage_command("train", "Fit the scikit-learn pipeline chosen in params.yaml and log it to MLflow.")
_stage_command("evaluate", "Score the held-out split and gate the candidate against the registry's champion.")
_stage_command(
    "package", "Write the bundle (skops, ONNX, signature, metadata) to artifacts/model and register it."
)


@app.command("info")
def info(
    model: Annotated[
        str, typer.Argument(help="Bundle directory, file:// URI, or models:/name@alias.")
    ] = "artifacts/model",
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Print a bundle's signature, metrics and digest."""
    from model.bundle import Bundle, BundleError
    from model.registry import RegistryError, resolve_bundle_path

    try:
        bundle = Bundle.open(resolve_bundle_path(model))
    except (BundleError, RegistryError) as e:
        fail(str(e))
    if as_json:
        print(json.dumps({**bundle.describe(), "signature": bundle.signature.model_dump()}, indent=2))
        return
    from rich.table import Table

    d = bundle.describe()
    console.print(f"[bold]{d['name']}[/]  {d['digest']}", highlight=False)
    console.print(
        f"path {d['path']}  commit {d['git_commit'] or '-'}  data {d['data_hash'] or '-'}", highlight=False
    )
    table = Table("metric", "value", title="metrics")
    for key, value in bundle.metrics.items():
        if isinstance(value, int | float):
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    gate = bundle.metrics.get("gate")
    if isinstance(gate, dict):
        table.add_row("gate", "passed" if gate.get("passed") else "failed")
    console.print(table)
    sig = bundle.signature
    console.print(
        f"signature: {len(sig.features)} features ({', '.join(sig.feature_names[:4])}, ...), "
        f"classes {sig.classes}, ONNX input {sig.onnx_input!r}",
        highlight=False,
    )


@app.command("promote-alias")
def promote_alias(
    version: Annotated[str, typer.Argument(help="Registry version number, or a bundle digest (sha256:...).")],
    alias: Annotated[
        str, typer.Option(help="Alias to set. `champion` moves the old champion to `previous`.")
    ] = "champion",
    name: Annotated[
        str | None, typer.Option(help="Registered model name (default: registry.model_name in params.yaml).")
    ] = None,
    root: RootOption = Path("."),
) -> None:
    """Point a registry alias (by default `champion`) at a model version."""
    from model.params import ParamsError, load_params
    from model.registry import CHAMPION, Registry, RegistryError

    try:
        model_name = name or load_params(root / "params.yaml").registry.model_name
        registry = Registry(root)
        ref = (
            registry.by_digest(model_name, version)
            if version.startswith("sha256:")
            else registry.version(model_name, version)
        )
        if alias == CHAMPION:
            before = registry.promote(model_name, ref.version)
            was = (
                f" (was version {before.version}, now alias 'previous')"
                if before and before.version != ref.version
                else ""
            )
        else:
            registry.set_alias(model_name, alias, ref.version)
            was = ""
    except (ParamsError, RegistryError) as e:
        fail(str(e))
    console.print(f"{model_name}@{alias} -> version {ref.version} ({ref.digest}){was}", highlight=False)
