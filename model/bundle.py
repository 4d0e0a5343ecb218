"""The model bundle: one directory that every serving mode loads (skops + ONNX + signature + metadata).

Reading a bundle needs only the standard library and pydantic; scikit-learn and onnxruntime are imported
only by the loader that needs them, so the edge runtime can read a bundle without scikit-learn.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SKOPS_FILE = "model.skops"
ONNX_FILE = "model.onnx"
SIGNATURE_FILE = "signature.json"
METRICS_FILE = "metrics.json"
METADATA_FILE = "metadata.json"
# metadata.json carries the digest, so it cannot be part of it.
DIGEST_EXCLUDES = frozenset({METADATA_FILE})

DType = Literal["float64", "float32", "int64"]


class BundleError(ValueError):
    """A bundle directory that is missing a file, has a malformed file, or fails its digest."""


class Feature(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    dtype: DType = "float64"


class Signature(BaseModel):
    """What a model takes and gives: ordered features, their dtypes, and the class labels."""

    model_config = ConfigDict(extra="forbid")
    features: list[Feature] = Field(min_length=1)
    target: str
    classes: list[int] = Field(min_length=2)
    onnx_input: str = "input"
    onnx_outputs: list[str] = ["label", "probabilities"]

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


class Metadata(BaseModel):
    """Where a bundle came from. `digest` names the model version everywhere (registry, images, manifests)."""

    model_config = ConfigDict(extra="allow")
    digest: str
    name: str
    git_commit: str | None = None
    data_hash: str | None = None
    params: dict[str, Any] = {}
    created_at: str | None = None
    mlflow_run_id: str | None = None


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def compute_digest(directory: Path) -> str:
    """sha256 over the bundle's files (names and contents, sorted by name), metadata.json excluded."""
    h = hashlib.sha256()
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name not in DIGEST_EXCLUDES)
    if not files:
        raise BundleError(f"{directory}: no files to digest")
    for p in files:
        h.update(p.name.encode())
        h.update(b"\0")
        h.update(file_digest(p).encode())
        h.update(b"\n")
    return "sha256:" + h.hexdigest()


def short_digest(digest: str, length: int = 12) -> str:
    """`sha256:abcdef...` -> `abcdef123456`, the form used in predictor names and labels."""
    return digest.split(":", 1)[-1][:length]


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise BundleError(
            f"{path}: missing (a bundle needs {SIGNATURE_FILE}, {METADATA_FILE} and a model file)"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e


class Bundle:
    """A packaged model on disk. Cheap to open: models are loaded only when asked for."""

    def __init__(self, path: Path, signature: Signature, metadata: Metadata, metrics: dict[str, Any]):
        self.path = path
        self.signature = signature
        self.metadata = metadata
        self.metrics = metrics

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = True) -> Bundle:
        path = Path(path)
        if not path.is_dir():
            raise BundleError(f"{path}: not a bundle directory")
        try:
            signature = Signature.model_validate(_read_json(path / SIGNATURE_FILE))
        except ValidationError as e:
            raise BundleError(f"{path / SIGNATURE_FILE}: {_first_error(e)}") from e
        try:
            metadata = Metadata.model_validate(_read_json(path / METADATA_FILE))
        except ValidationError as e:
            raise BundleError(f"{path / METADATA_FILE}: {_first_error(e)}") from e
        metrics_path = path / METRICS_FILE
        metrics = _read_json(metrics_path) if metrics_path.exists() else {}
        bundle = cls(path, signature, metadata, metrics)
        if verify:
            bundle.verify()
        return bundle

    @property
    def digest(self) -> str:
        return self.metadata.digest

    @property
    def short_digest(self) -> str:
        return short_digest(self.metadata.digest)

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX_FILE

    @property
    def skops_path(self) -> Path:
        return self.path / SKOPS_FILE

    def verify(self) -> None:
        actual = compute_digest(self.path)
        if actual != self.metadata.digest:
            raise BundleError(
                f"{self.path}: digest mismatch: metadata.json says {self.metadata.digest}, files hash to {actual}"
            )

    def load_sklearn(self) -> Any:
        """The scikit-learn estimator, loaded with skops' type allow-list (never pickle)."""
        from model.serialization import load_skops

        return load_skops(self.skops_path)

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "name": self.metadata.name,
            "digest": self.digest,
            "features": len(self.signature.features),
            "classes": self.signature.classes,
            "git_commit": self.metadata.git_commit,
            "data_hash": self.metadata.data_hash,
            "metrics": self.metrics,
        }


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"]) or "(root)"
    return f"field {loc}: {err['msg']} (got {err.get('input')!r})"
