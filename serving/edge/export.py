"""`sluice edge export`: a model bundle -> an edge bundle (ONNX model, signature, metadata, golden rows, manifest).

A reduced-size variant (float16 weights, or ONNX Runtime's ORT format) replaces the full-precision model
only when it keeps parity with it on the test split (every label, probabilities within a tolerance) and is
actually smaller; otherwise the export is refused with the numbers.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from serving.core.onnx_graph import OnnxGraph
from serving.core.validation import MISSING_CATEGORY, Features
from serving.edge.manifest import (
    METADATA_FILE,
    MODEL_FILE,
    SELFTEST_FILE,
    SIGNATURE_FILE,
    EdgeManifest,
    write_manifest,
)

Variant = Literal["float16", "ort"]
VARIANTS: tuple[Variant, ...] = ("float16", "ort")
VARIANT_FILES: dict[str, str] = {"float16": "model.fp16.onnx", "ort": "model.ort"}
GOLDEN_ROWS = 8
DEFAULT_TOLERANCE = 1e-3


class VariantRefused(RuntimeError):
    """The reduced-size variant broke parity or saved nothing; the message carries the numbers."""

    def __init__(self, report: VariantReport):
        super().__init__(report.explain())
        self.report = report


@dataclass(frozen=True)
class VariantReport:
    variant: str
    rows: int
    label_matches: int
    max_probability_diff: float
    tolerance: float
    full_bytes: int
    variant_bytes: int

    @property
    def parity(self) -> bool:
        return (
            self.rows > 0 and self.label_matches == self.rows and self.max_probability_diff <= self.tolerance
        )

    @property
    def smaller(self) -> bool:
        return self.variant_bytes < self.full_bytes

    @property
    def accepted(self) -> bool:
        return self.parity and self.smaller

    def explain(self) -> str:
        verdict = "accepted" if self.accepted else "refused"
        reasons = []
        if not self.parity:
            reasons.append("parity broken")
        if not self.smaller:
            reasons.append("not smaller")
        why = f" ({', '.join(reasons)})" if reasons else ""
        return (
            f"{self.variant} variant {verdict}{why}: labels match on {self.label_matches}/{self.rows} test rows, "
            f"largest probability difference {self.max_probability_diff:.2e} (tolerance {self.tolerance:.0e}); "
            f"size {self.variant_bytes} bytes vs {self.full_bytes} bytes full precision"
        )


@dataclass(frozen=True)
class ExportReport:
    out: Path
    manifest: EdgeManifest
    bundle_bytes: int
    variant: VariantReport | None

    def explain(self) -> str:
        text = (
            f"edge bundle {self.out} ({self.bundle_bytes} bytes, model {self.manifest.model_file}, "
            f"checksum sha256:{self.manifest.checksum[:12]})"
        )
        return text + (f"; {self.variant.explain()}" if self.variant else "")


def test_split(bundle: Any, parity_data: Path | None = None, root: str | Path = ".") -> np.ndarray:
    """Feature rows of the bundle's test split, validated as a request would be: a CSV given by the caller,
    or the split recreated from the bundle's params (its data source, seed and test size) under `root`.

    float32 for a model of numbers; an object matrix (floats and strings) for one with typed features."""
    import pandas as pd

    signature = bundle.signature
    names = signature.feature_names
    if parity_data is not None:
        frame = pd.read_csv(parity_data, dtype=signature.read_dtypes() or None)
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise ValueError(f"{parity_data}: missing feature column {missing[0]!r}")
    else:
        from model.data import load_raw, split
        from model.params import DataParams

        data_params = DataParams.model_validate(bundle.metadata.params.get("data", {}))
        raw = load_raw(data_params, root, signature)
        _, frame = split(raw, data_params, signature.target, signature.is_classifier)
    features = Features.of(signature.features)
    if features.plain:
        X: np.ndarray = frame[names].to_numpy(dtype=np.float32)
        return X
    return features.validate([[_json_value(v) for v in row] for row in frame[names].itertuples(index=False)])


def _json_value(value: Any) -> Any:
    """A cell as a JSON client would send it: None for missing, a Python number, bool or str."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def golden(X: np.ndarray, features: Features) -> list[list[Any]]:
    """Validated rows back as JSON rows (None for a missing value), for the self-test the device runs."""
    rows = []
    for row in X.tolist():
        rows.append(
            [
                None
                if (isinstance(v, float) and v != v) or (rule.type == "categorical" and v == MISSING_CATEGORY)
                else v
                for v, rule in zip(row, features.rules, strict=True)
            ]
        )
    return rows


def run_onnx(model: bytes | Path, graph: OnnxGraph, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels (a regression's values) and probabilities (its values as one column) of validated rows."""
    import onnxruntime as ort

    source = str(model) if isinstance(model, Path) else model
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    answer = graph.answer(session.run(graph.outputs, graph.feeds(X)))
    return np.asarray(answer.labels).reshape(-1), np.asarray(answer.probabilities, dtype=np.float64)


def build_variant(onnx_path: Path, variant: Variant, out: Path) -> Path:
    """Write the reduced-size variant of `onnx_path` into `out`; returns its path."""
    target = out / VARIANT_FILES[variant]
    if variant == "float16":
        import onnx
        from onnxconverter_common import float16

        converted = float16.convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
        target.write_bytes(converted.SerializeToString())
    elif variant == "ort":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(target)
        options.add_session_config_entry("session.save_model_format", "ORT")
        ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    else:
        raise ValueError(f"variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    return target


def compare(
    variant: str, full: Path, reduced: Path, graph: OnnxGraph, X: np.ndarray, tolerance: float
) -> VariantReport:
    labels, probs = run_onnx(full, graph, X)
    v_labels, v_probs = run_onnx(reduced, graph, X)
    return VariantReport(
        variant=variant,
        rows=len(X),
        label_matches=int((labels == v_labels).sum()),
        max_probability_diff=float(np.abs(probs - v_probs).max()) if len(X) else 0.0,
        tolerance=tolerance,
        full_bytes=full.stat().st_size,
        variant_bytes=reduced.stat().st_size,
    )


def export(
    model_uri: str,
    out: Path,
    *,
    variant: Variant | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    parity_data: Path | None = None,
    root: str | Path = ".",
) -> ExportReport:
    """Write an edge bundle for `model_uri` to `out` (replaced atomically). Raises `VariantRefused`."""
    from model.bundle import Bundle
    from model.registry import resolve_bundle_path

    bundle = Bundle.open(resolve_bundle_path(model_uri, root))
    X = test_split(bundle, parity_data, root)
    graph = OnnxGraph(bundle.signature.model_dump())
    features = Features.of(bundle.signature.features)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        report: VariantReport | None = None
        if variant is None:
            model_file = MODEL_FILE
            shutil.copyfile(bundle.onnx_path, staging / model_file)
        else:
            reduced = build_variant(bundle.onnx_path, variant, staging)
            report = compare(variant, bundle.onnx_path, reduced, graph, X, tolerance)
            if not report.accepted:
                raise VariantRefused(report)
            model_file = reduced.name
        signature = json.loads(bundle.signature.model_dump_json())
        (staging / SIGNATURE_FILE).write_text(json.dumps(signature, indent=2) + "\n")
        metadata: dict[str, Any] = {
            "digest": bundle.digest,
            "name": bundle.metadata.name,
            "git_commit": bundle.metadata.git_commit,
            "created_at": bundle.metadata.created_at,
            "variant": variant or "float32",
            "variant_parity": asdict(report) if report else None,
        }
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        rows = X[:GOLDEN_ROWS]
        labels, probs = run_onnx(bundle.onnx_path, graph, rows)
        selftest = {
            "rows": rows.astype(np.float64).tolist() if features.plain else golden(rows, features),
            "labels": labels.tolist(),
            "probabilities": probs.tolist(),
            # The variant was held to `tolerance` on the whole split; full precision reproduces itself.
            "tolerance": tolerance if variant else 1e-6,
        }
        (staging / SELFTEST_FILE).write_text(json.dumps(selftest) + "\n")
        manifest = write_manifest(staging, model_file, bundle.digest)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    return ExportReport(out, manifest, size, report)
