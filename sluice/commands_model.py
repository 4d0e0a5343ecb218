"""`sluice model ...`: the training pipeline's stages, bundle inspection, and registry aliases."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from sluice.console import console, report

app = typer.Typer(
    help="Train, package and inspect models (the stages `dvc repro` runs).", no_args_is_help=True
)

RootOption = Annotated[
    Path, typer.Option("--root", help="Repository root (the folder holding dvc.yaml and params.yaml).")
]


def _run_stage(name: str, root: Path) -> None:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    from model.pipeline import STAGES, StageFailed, ValidationFailed

    try:
        message = STAGES[name](root)
    except (StageFailed, ValidationFailed) as e:
        report(f"stage {name}: {e}")
    console.print(f"[green]{name}[/]: {message}", highlight=False)


def _stage_command(name: str, doc: str) -> None:
    def command(root: RootOption = Path(".")) -> None:
        _run_stage(name, root)

    command.__doc__ = doc
    app.command(name)(command)


_stage_command(
    "prepare",
    "Read the table data.source names (a file in data/source/ or a built-in set); write train/test splits.",
)
_stage_command(
    "validate",
    "Check the raw table against contract.yaml (a generated Great Expectations suite); stop on any violation.",
)
_stage_command(
    "train", "Fit the scikit-learn pipeline built from contract.yaml and params.yaml; log it to MLflow."
)
_stage_command("evaluate", "Score the held-out split and gate the candidate against the pinned champion.")
_stage_command(
    "package",
    "Write the bundle (skops, ONNX, signature, metadata) to artifacts/model, log it as an MLflow model and "
    "register it (not under `dvc exp run` unless registry.register_experiments).",
)


@app.command("profile")
def profile(
    data: Annotated[
        str, typer.Argument(help="A CSV or Parquet file (under data/source/), or builtin:<name>.")
    ],
    target: Annotated[str, typer.Option("--target", "-t", help="The column to predict.")],
    task: Annotated[
        str | None,
        typer.Option(help="binary, multiclass or regression (default: inferred from the target's values)."),
    ] = None,
    drop: Annotated[
        list[str] | None,
        typer.Option("--drop", help="A column the model must not use (an ID, free text); repeatable."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Where to write the contract (default: ROOT/contract.yaml).")
    ] = None,
    max_categories: Annotated[
        int, typer.Option(help="A text column with more distinct values is refused as a category.")
    ] = 50,
    track: Annotated[bool, typer.Option(help="Track the file with `dvc add` unless it already is.")] = True,
    set_source: Annotated[
        bool,
        typer.Option(
            help="Point params.yaml at the data (data.source), and fit train.model and evaluate.gate_metric "
            "to the task when they do not."
        ),
    ] = True,
    force: Annotated[bool, typer.Option(help="Replace an existing contract file.")] = False,
    root: RootOption = Path("."),
) -> None:
    """Write contract.yaml from a reference sample of your data, for you to review and commit.

    Infers each column's type (numeric, categorical, boolean), nullability, bounds and categories, the task
    from the target, and records each column's reference distribution (quantiles or category frequencies)
    that `validate` compares new data with. Then, unless told not to, tracks the file with DVC and points
    params.yaml at it, so `dvc repro` trains on it:

        sluice model profile data/source/churn.csv --target churned --drop customer_id
    """
    from model.contract import TASKS, ContractError
    from model.datasets import SourceError
    from model.params import ParamsError
    from model.profile import profile_source

    if task is not None and task not in TASKS:
        report(f"--task {task!r}: expected one of {', '.join(TASKS)}")
    try:
        with console.status(f"profiling {data}"):
            result = profile_source(
                root.resolve(),
                data,
                target,
                task=task,  # checked against TASKS above
                drop=drop or [],
                out=out,
                max_categories=max_categories,
                track=track,
                set_source=set_source,
                force=force,
            )
    except (ContractError, SourceError, ParamsError) as e:
        report(e)
    c = result.contract
    kinds = {k: sum(f.type == k for f in c.features) for k in ("numeric", "categorical", "boolean")}
    nullable = [f.name for f in c.features if f.nullable]
    classes = f", classes {c.classes}" if c.is_classifier else ""
    console.print(
        f"[green]wrote[/] {result.path}: task {c.task} on {c.target.name!r}{classes}", highlight=False
    )
    console.print(
        f"  {len(c.features)} features ({', '.join(f'{n} {k}' for k, n in kinds.items() if n)}); "
        f"nullable: {', '.join(nullable) if nullable else 'none'}; ignored: {', '.join(c.ignored) or 'none'}",
        highlight=False,
    )
    if result.tracked:
        console.print(f"  data: {result.tracked}", highlight=False)
    for key, value in result.params_changes.items():
        console.print(f"  params.yaml: {key} = {value}", highlight=False)
    for note in result.notes:
        console.print(f"  [yellow]note[/]: {note}", highlight=False)
    console.print("Review the types, bounds and categories, commit, then `dvc repro`.", highlight=False)


@app.command("champion")
def champion(
    pin: Annotated[
        bool, typer.Option("--pin", help="Pin the registry's champion (or --version) as evaluate.champion.")
    ] = False,
    unpin: Annotated[
        bool, typer.Option("--unpin", help="Clear evaluate.champion: the next model is not gated.")
    ] = False,
    version: Annotated[
        str | None, typer.Option(help="Pin this registry version instead of @champion.")
    ] = None,
    root: RootOption = Path("."),
) -> None:
    """Show or pin the champion the evaluate stage compares candidates against.

    The evaluate gate scores the version pinned in params.yaml (evaluate.champion: version and digest), so
    `dvc repro` depends on it like on any other parameter; pin again when the registry's champion moves.
    """
    from model.params import ChampionPin, ParamsError, load_params, write_champion
    from model.registry import CHAMPION, Registry, RegistryError

    if pin and unpin:
        report("--pin and --unpin together: choose one")
    try:
        params = load_params(root / "params.yaml")
        name = params.registry.model_name
        if unpin:
            write_champion(root / "params.yaml", None)
            console.print(
                "evaluate.champion cleared: the next model is gated on no champion", highlight=False
            )
            return
        registry = Registry(root)
        current = registry.alias(name, CHAMPION)
        if pin or version:
            ref = registry.version(name, version) if version else current
            if ref is None:
                report(f"model {name!r} has no @{CHAMPION} in the registry to pin (--version picks one)")
            if not ref.digest:
                report(f"{name} version {ref.version} was not registered by Sluice (no digest tag)")
            write_champion(root / "params.yaml", ChampionPin(version=ref.version, digest=ref.digest))
            console.print(
                f"evaluate.champion pinned: {name} version {ref.version} ({ref.digest})", highlight=False
            )
            return
    except (ParamsError, RegistryError) as e:
        report(e)
    pinned = params.evaluate.champion
    console.print(
        f"pinned (params.yaml): {f'version {pinned.version} ({pinned.digest})' if pinned else 'none'}",
        highlight=False,
    )
    console.print(
        f"registry @{CHAMPION}: {f'version {current.version} ({current.digest})' if current else 'none'}",
        highlight=False,
    )
    if current is not None and (pinned is None or pinned.digest != current.digest):
        console.print(
            "[yellow]they differ[/]: `sluice model champion --pin` pins the registry's", highlight=False
        )


@app.command("register")
def register(root: RootOption = Path(".")) -> None:
    """Register artifacts/model as a new version (alias challenger): the bundle a `dvc exp run` left unregistered."""
    from model.bundle import BundleError
    from model.package import register_bundle
    from model.params import ParamsError
    from model.registry import RegistryError

    try:
        ref = register_bundle(root.resolve())
    except (BundleError, ParamsError, RegistryError) as e:
        report(e)
    console.print(
        f"registered {ref.name} version {ref.version} ({ref.digest}), alias challenger", highlight=False
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
        report(e)
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
    console.print(table)
    sig = bundle.signature
    console.print(
        f"signature: {len(sig.features)} features ({', '.join(sig.feature_names[:4])}, ...), "
        f"task {sig.task}{f', classes {sig.classes}' if sig.is_classifier else ''}, "
        + (f"ONNX input {sig.onnx_input!r}" if sig.layout == "matrix" else "one ONNX input per feature"),
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
    """Point a registry alias (by default `champion`) at a model version.

    Moving `champion` also pins it in params.yaml (evaluate.champion), the version the evaluate gate compares
    the next candidates against.
    """
    from model.params import ChampionPin, ParamsError, load_params, write_champion
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
            if ref.digest and name is None and (root / "params.yaml").exists():
                write_champion(root / "params.yaml", ChampionPin(version=ref.version, digest=ref.digest))
                was += "; pinned as evaluate.champion in params.yaml"
        else:
            registry.set_alias(model_name, alias, ref.version)
            was = ""
    except (ParamsError, RegistryError) as e:
        report(e)
    console.print(f"{model_name}@{alias} -> version {ref.version} ({ref.digest}){was}", highlight=False)
