"""`sluice edge ...`: export an edge bundle, predict with the edge runtime, and roll bundles out to a fleet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sluice.console import console, report

app = typer.Typer(
    help="Edge serving: ONNX bundles for devices, a runtime without scikit-learn, fleet rollout by percentage.",
    no_args_is_help=True,
)


@app.command("export")
def export(
    model: Annotated[str, typer.Option("--model", help="Bundle path, file:// URI or models:/name@alias.")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the edge bundle to (replaced).")],
    variant: Annotated[
        str | None,
        typer.Option("--variant", help="Reduced-size variant: float16 or ort; kept only if parity holds."),
    ] = None,
    tolerance: Annotated[
        float, typer.Option("--tolerance", help="Largest probability difference the variant may show.")
    ] = 1e-3,
    parity_data: Annotated[
        Path | None,
        typer.Option(
            "--parity-data", help="CSV of rows to check parity on (default: the bundle's test split)."
        ),
    ] = None,
) -> None:
    """Write model.onnx, signature.json, metadata.json, selftest.json and manifest.json (sha256 of each file)."""
    from model.bundle import BundleError
    from model.registry import RegistryError
    from serving.edge.export import VARIANTS, VariantRefused
    from serving.edge.export import export as run_export

    if variant is not None and variant not in VARIANTS:
        report(f"--variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    try:
        exported = run_export(model, out, variant=variant, tolerance=tolerance, parity_data=parity_data)
    except VariantRefused as e:
        report(e)
    except (BundleError, RegistryError, ValueError, FileNotFoundError) as e:
        report(e)
    console.print(exported.explain(), highlight=False, markup=False)


@app.command("predict")
def predict(
    bundle: Annotated[Path, typer.Option("--bundle", help="An edge bundle directory.")],
    input: Annotated[
        Path | None,
        typer.Option("--input", help="CSV (header of feature names) or JSON rows; default: golden rows."),
    ] = None,
) -> None:
    """Predict with the edge runtime (numpy + onnxruntime only): one JSON line per row."""
    from serving.edge.manifest import EdgeBundleError
    from serving.edge.runtime import EdgeInputError, EdgeModel, golden_rows, read_rows

    try:
        model = EdgeModel.load(bundle)
        rows = read_rows(input) if input else golden_rows(bundle)
        result = model.predict_rows(rows)
    except (EdgeBundleError, EdgeInputError) as e:
        report(e)
    for label, probs in zip(result.labels.tolist(), result.probabilities.tolist(), strict=True):
        print(json.dumps({"prediction": label, "probabilities": probs}))


@app.command("publish")
def publish(
    bundle: Annotated[Path, typer.Option("--bundle", help="The edge bundle to roll out.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write <version>.tar.gz and update.json.")],
    version: Annotated[str, typer.Option("--version", help="The version name devices will see.")],
    percent: Annotated[float, typer.Option("--percent", help="Share of the fleet that takes it (0-100).")],
    url: Annotated[
        str | None, typer.Option("--url", help="Where devices fetch the archive (default: its file:// URI).")
    ] = None,
) -> None:
    """Pack an edge bundle and write the update manifest (version, sha256, rollout percentage, URL)."""
    from serving.edge.fleet import UpdateError
    from serving.edge.fleet import publish as run_publish
    from serving.edge.manifest import EdgeBundleError

    try:
        update = run_publish(bundle, out, version, percent, url)
    except (UpdateError, EdgeBundleError) as e:
        report(e)
    console.print(update.to_json(), highlight=False, markup=False)


@app.command("update")
def update(
    manifest: Annotated[Path, typer.Option("--manifest", help="The update manifest (update.json).")],
    device_root: Annotated[Path, typer.Option("--device-root", help="The device's bundle store.")],
    device_id: Annotated[str, typer.Option("--device-id", help="The device's stable id.")],
) -> None:
    """What a device runs on each poll: take the update if selected, verify, swap, self-test, fall back."""
    from serving.edge.fleet import Device, UpdateError, UpdateManifest

    try:
        result = Device(device_root, device_id).apply(UpdateManifest.read(manifest))
    except (UpdateError, OSError) as e:
        report(e)
    console.print(
        f"{result.outcome}: version {result.version}, current {result.current}. {result.detail}", markup=False
    )
    if result.outcome in ("rejected", "rolled-back"):
        raise typer.Exit(3)


def register(app_: typer.Typer) -> None:
    """Add this module's commands to the `sluice` app."""
    app_.add_typer(app, name="edge")
