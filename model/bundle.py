"""The model bundle: one directory that every serving mode loads (skops + ONNX + signature + metadata).

Reading a bundle needs only the standard library and pydantic; scikit-learn and onnxruntime are imported
only by the loader that needs them, so the edge runtime can read a bundle without scikit-learn.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from model.contract import FeatureType, Task

if TYPE_CHECKING:
    import numpy as np

SKOPS_FILE = "model.skops"
ONNX_FILE = "model.onnx"
SIGNATURE_FILE = "signature.json"
METRICS_FILE = "metrics.json"
METADATA_FILE = "metadata.json"
# metadata.json carries the digest, so it cannot be part of it.
DIGEST_EXCLUDES = frozenset({METADATA_FILE})

DType = Literal["float64", "float32", "int64", "string"]
Layout = Literal["matrix", "columns"]


class BundleError(ValueError):
    """A bundle directory that is missing a file, has a malformed file, or fails its digest."""


class Feature(BaseModel):
    """One input of the model: numeric and boolean features reach it as float64 (booleans 0/1), categorical
    ones as strings from `categories` (a missing value as `""` when `nullable`)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    dtype: DType = "float64"
    type: FeatureType = "numeric"
    nullable: bool = False
    categories: list[str] | None = None


class Signature(BaseModel):
    """What a model takes and gives: ordered, typed features; the task; the class labels of a classifier.

    `layout` says how the ONNX graph takes its input: `matrix` (one float tensor `onnx_input` of shape
    [rows, features]) or `columns` (one tensor [rows, 1] per feature, `onnx_inputs` in feature order:
    float32, or string for a categorical feature). Outputs: `label` and `probabilities` for a classifier,
    one value per row (`variable`) for a regression.
    """

    model_config = ConfigDict(extra="forbid")
    features: list[Feature] = Field(min_length=1)
    target: str
    task: Task = "binary"
    # Labels are integers or strings, all of one kind (typed Any so callers that know which need no cast).
    classes: list[Any] = Field(default_factory=list, validate_default=True)
    # A regression's physical range of values (the contract's target bounds): it scales an error into
    # [0, 1], so feedback on a regression can be counted as a reward like a classifier's accuracy.
    target_bounds: tuple[float, float] | None = Field(None, validate_default=True)
    layout: Layout = "matrix"
    onnx_input: str = "input"
    onnx_inputs: list[str] | None = None
    onnx_outputs: list[str] = ["label", "probabilities"]

    @field_validator("classes")
    @classmethod
    def _classes(cls, classes: list[Any], info: ValidationInfo) -> list[Any]:
        task = info.data.get("task", "binary")
        kinds = {
            str if isinstance(c, str) else int if isinstance(c, int) and not isinstance(c, bool) else None
            for c in classes
        }
        if None in kinds or len(kinds) > 1:
            raise ValueError(f"class labels must be all integers or all strings, got {classes}")
        if task == "regression" and classes:
            raise ValueError("a regression model has no classes")
        if task == "binary" and len(classes) != 2:
            raise ValueError(f"a binary classifier needs 2 classes, got {classes}")
        if task == "multiclass" and len(classes) < 3:
            raise ValueError(f"a multiclass classifier needs at least 3 classes, got {classes}")
        return classes

    @field_validator("target_bounds")
    @classmethod
    def _bounds(cls, bounds: tuple[float, float] | None, info: ValidationInfo) -> tuple[float, float] | None:
        if info.data.get("task") == "regression" and (bounds is None or not bounds[0] < bounds[1]):
            raise ValueError(f"a regression needs target_bounds [low, high] with low < high, got {bounds}")
        return bounds

    @field_validator("onnx_inputs")
    @classmethod
    def _inputs(cls, inputs: list[str] | None, info: ValidationInfo) -> list[str] | None:
        features = info.data.get("features") or []
        if info.data.get("layout") == "columns" and (inputs is None or len(inputs) != len(features)):
            raise ValueError(f"layout columns needs one ONNX input per feature ({len(features)})")
        return inputs

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def is_classifier(self) -> bool:
        return self.task != "regression"

    def read_dtypes(self) -> dict[str, Any]:
        """`dtype=` for pandas readers: text features (and text labels) stay text."""
        text = {f.name: str for f in self.features if f.type == "categorical"}
        return text | ({self.target: str} if self.classes and isinstance(self.classes[0], str) else {})


def onnx_feeds(signature: Signature, columns: Mapping[str, Any] | Any) -> dict[str, np.ndarray]:
    """The ONNX Runtime inputs for rows given as columns (a mapping or a DataFrame, values typed as in
    `Feature`): one float32 matrix, or one [rows, 1] tensor per feature."""
    import numpy as np

    if signature.layout == "matrix":
        matrix = np.column_stack([np.asarray(columns[n], dtype=np.float32) for n in signature.feature_names])
        return {signature.onnx_input: matrix}
    assert signature.onnx_inputs is not None
    feeds = {}
    for feature, input_name in zip(signature.features, signature.onnx_inputs, strict=True):
        dtype = object if feature.type == "categorical" else np.float32
        feeds[input_name] = np.asarray(columns[feature.name], dtype=dtype).reshape(-1, 1)
    return feeds


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
            "task": self.signature.task,
            "classes": self.signature.classes,
            "git_commit": self.metadata.git_commit,
            "data_hash": self.metadata.data_hash,
            "metrics": self.metrics,
        }


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"]) or "(root)"
    return f"field {loc}: {err['msg']} (got {err.get('input')!r})"
