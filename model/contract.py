"""The data contract, read from `contract.yaml`: the target and task, and each feature's type and limits.

A contract is written from a reference sample by `sluice model profile` and reviewed by a person. Everything
downstream is generated from it: the Great Expectations suite of the `validate` stage (types, categories,
bounds, nulls, and distributions against the reference), the preprocessing inside the trained pipeline, and
the bundle's signature that serving checks requests against.

How values reach the model (`Contract.model_frame`): numeric and boolean features as float64 (booleans 0/1,
missing as NaN, imputed inside the pipeline); categorical features as strings, a missing one as `""`, which
the encoder knows as a category of its own when the feature is nullable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

if TYPE_CHECKING:
    import pandas as pd

CONTRACT_FILE = "contract.yaml"
Task = Literal["binary", "multiclass", "regression"]
FeatureType = Literal["numeric", "categorical", "boolean"]
TASKS: tuple[Task, ...] = ("binary", "multiclass", "regression")
# A missing categorical value, as the model sees it.
MISSING_CATEGORY = ""
# Quantiles recorded as a numeric column's reference distribution.
QUANTILES: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)
_TRUE = frozenset({"true", "1", "yes", "t", "y"})
_FALSE = frozenset({"false", "0", "no", "f", "n"})

Label = bool | int | str  # a class, a category, or a boolean feature's value


class ContractError(ValueError):
    """A contract file that is missing or malformed, or data that cannot be read the way it says."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Reference(_Strict):
    """A column's distribution in the reference sample the contract was profiled from."""

    quantiles: dict[float, float] | None = None
    frequencies: dict[Label, float] | None = None  # non-null values only
    null_fraction: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _sane(self) -> Reference:
        if self.quantiles:
            for q in self.quantiles:
                if not 0.0 <= q <= 1.0:
                    raise ValueError(f"quantile {q} is not between 0 and 1")
            values = [self.quantiles[q] for q in sorted(self.quantiles)]
            if any(not math.isfinite(v) for v in values) or values != sorted(values):
                raise ValueError(f"quantile values must be finite and non-decreasing, got {values}")
        if self.frequencies and any(not 0.0 <= w <= 1.0 for w in self.frequencies.values()):
            raise ValueError("frequencies must be between 0 and 1")
        return self


class FeatureSpec(_Strict):
    name: str = Field(min_length=1)
    type: FeatureType
    nullable: bool = False
    bounds: tuple[float, float] | None = None  # numeric: the physical range, wider than the reference
    categories: list[str] | None = None  # categorical: every value the model accepts
    reference: Reference | None = None

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        if any(ord(c) < 32 for c in self.name):
            raise ValueError(f"feature name {self.name!r} holds a control character")
        if self.type == "categorical":
            if not self.categories:
                raise ValueError(f"categorical feature {self.name!r} needs a non-empty `categories` list")
            if len(set(self.categories)) != len(self.categories):
                raise ValueError(f"feature {self.name!r}: categories repeat a value")
            if MISSING_CATEGORY in self.categories:
                raise ValueError(
                    f"feature {self.name!r}: the empty string means a missing value; "
                    "set `nullable: true` instead of listing it"
                )
        elif self.categories is not None:
            raise ValueError(f"feature {self.name!r}: only categorical features have categories")
        if self.bounds is not None:
            if self.type != "numeric":
                raise ValueError(f"feature {self.name!r}: only numeric features have bounds")
            lo, hi = self.bounds
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise ValueError(f"feature {self.name!r}: bounds must be [low, high], got {[lo, hi]}")
        return self


class TargetSpec(_Strict):
    name: str = Field(min_length=1)
    task: Task
    classes: list[int] | list[str] | None = None  # binary and multiclass: every label, in order
    bounds: tuple[float, float] | None = None  # regression
    reference: Reference | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TargetSpec:
        if self.task == "regression":
            if self.classes:
                raise ValueError("a regression target has no classes")
            if self.bounds is None:
                raise ValueError(
                    "a regression target needs `bounds` (its physical range: feedback errors are scaled by it)"
                )
            lo, hi = self.bounds
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"target bounds must be [low, high] with low < high, got {[lo, hi]}")
            return self
        classes = self.classes or []
        if any(isinstance(c, bool) for c in classes):
            raise ValueError("classes must be integers or strings (write booleans as 0 and 1)")
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes repeat a label: {classes}")
        if self.task == "binary" and len(classes) != 2:
            raise ValueError(f"a binary target needs exactly 2 classes, got {classes}")
        if self.task == "multiclass" and len(classes) < 3:
            raise ValueError(f"a multiclass target needs at least 3 classes, got {classes} (2 is binary)")
        if self.bounds is not None:
            raise ValueError("only a regression target has bounds")
        return self


class Profiled(_Strict):
    """Where the reference sample came from (for the person reviewing the contract)."""

    source: str
    rows: int
    at: str | None = None


class Contract(_Strict):
    """What the model is trained on and what it accepts, in the order the model takes its features."""

    target: TargetSpec
    features: list[FeatureSpec] = Field(min_length=1)
    ignored: list[str] = []  # columns the source has and the model does not use (IDs, free text)
    profiled: Profiled | None = None
    _path: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _unique(self) -> Contract:
        names = [f.name for f in self.features]
        seen: set[str] = set()
        for name in [*names, self.target.name, *self.ignored]:
            if name in seen:
                raise ValueError(
                    f"column {name!r} is listed twice (features, target and ignored are disjoint)"
                )
            seen.add(name)
        return self

    # what the contract says ------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._path or Path(CONTRACT_FILE)

    @property
    def task(self) -> Task:
        return self.target.task

    @property
    def is_classifier(self) -> bool:
        return self.target.task != "regression"

    @property
    def classes(self) -> list[Any]:
        return list(self.target.classes or [])

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def columns(self) -> list[str]:
        """Every column the source table must have."""
        return [*self.feature_names, self.target.name, *self.ignored]

    @property
    def layout(self) -> Literal["matrix", "columns"]:
        """`matrix`: one float tensor for all features; `columns`: one tensor per feature (text needs it)."""
        return "columns" if any(f.type == "categorical" for f in self.features) else "matrix"

    def feature(self, name: str) -> FeatureSpec:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def read_dtypes(self) -> dict[str, Any]:
        """`dtype=` for pandas readers: text columns stay text (so "007" is not the number 7)."""
        return {f.name: str for f in self.features if f.type == "categorical"} | (
            {self.target.name: str} if self.classes and isinstance(self.classes[0], str) else {}
        )

    # turning a table into what the model takes -----------------------------------------------------
    def model_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The features, in contract order, typed as the model takes them (see the module docstring)."""
        return typed_frame(frame, self.features, str(self.path))

    def target_series(self, frame: pd.DataFrame) -> pd.Series:
        """The target column typed as the model's labels: int or str classes, or float64 values."""
        import pandas as pd

        name = self.target.name
        if name not in frame.columns:
            raise ContractError(f"{self.path}: the table has no target column {name!r}")
        column = frame[name]
        if not self.is_classifier:
            return pd.to_numeric(column, errors="raise").astype("float64")
        if isinstance(self.classes[0], str):
            return column.map(as_category).astype(object)
        if column.dtype == bool or column.dtype == object:
            column = column.map(
                lambda v: int(_boolean(v, name, str(self.path))) if isinstance(v, bool | str) else v
            )
        values = pd.to_numeric(column, errors="raise")
        if values.isna().any() or not (values == values.round()).all():
            raise ContractError(f"{self.path}: target {name!r} holds values that are not integer classes")
        return values.astype("int64")


class _Typed(Protocol):
    name: str
    type: FeatureType
    nullable: bool
    categories: list[str] | None


def typed_frame(frame: pd.DataFrame, features: Sequence[_Typed], where: str) -> pd.DataFrame:
    """`frame`'s features in order, typed for the model; a value the features do not allow raises
    `ContractError` naming `where`, the column, the row and the value (a null where none is allowed, text
    in a number, a category not listed)."""
    import pandas as pd

    missing = [f.name for f in features if f.name not in frame.columns]
    if missing:
        raise ContractError(
            f"{where}: the table has no column {missing[0]!r} ({len(missing)} missing in all)"
        )
    out = {}
    for f in features:
        column = frame[f.name]
        if f.type == "numeric":
            typed = pd.to_numeric(column, errors="coerce").astype("float64")
            bad = typed.isna() & column.notna()
            if bad.any():
                row = bad.idxmax()
                raise ContractError(f"{where}: column {f.name!r}, row {row}: {column[row]!r} is not a number")
        elif f.type == "boolean":
            typed = column.map(lambda v, n=f.name: _boolean(v, n, where)).astype("float64")
        else:
            typed = column.map(as_category).astype(object)
            allowed = set(f.categories or ()) | ({MISSING_CATEGORY} if f.nullable else set())
            unknown = ~typed.isin(allowed) & (typed != MISSING_CATEGORY)
            if unknown.any():
                row = unknown.idxmax()
                shown = ", ".join(repr(c) for c in (f.categories or [])[:8])
                raise ContractError(
                    f"{where}: column {f.name!r}, row {row}: {typed[row]!r} is not one of its categories ({shown}"
                    f"{', ...' if len(f.categories or []) > 8 else ''})"
                )
        if not f.nullable:
            null = typed.isna() if f.type != "categorical" else typed == MISSING_CATEGORY
            if null.any():
                raise ContractError(
                    f"{where}: column {f.name!r}, row {null.idxmax()}: missing, and it may not be"
                )
        out[f.name] = typed
    return pd.DataFrame(out, index=frame.index)


def _boolean(value: Any, column: str, where: str | Path) -> float:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and value in (0, 1):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return 1.0 if value.strip().lower() in _TRUE else 0.0
    raise ContractError(f"{where}: column {column!r}: {value!r} is not a boolean (true/false, 1/0)")


def as_category(value: Any) -> str:
    """A categorical value as the model sees it: its text, or `""` when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or type(value).__name__ == "NAType":
        return MISSING_CATEGORY
    return str(value)


# files -----------------------------------------------------------------------------------------------
def load_contract(path: str | Path = CONTRACT_FILE) -> Contract:
    """Read and check a contract file; errors name the file and the field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ContractError(
            f"{path}: not found; write one with `sluice model profile DATA --target COLUMN`"
        ) from None
    except yaml.YAMLError as e:
        raise ContractError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, Mapping):
        raise ContractError(f"{path}: expected a mapping with `target` and `features`")
    try:
        contract = Contract.model_validate(raw)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            where = _where(raw, err["loc"])
            problems.append(f"{path}: {where}: {err['msg'].removeprefix('Value error, ')}")
        raise ContractError("\n".join(problems)) from None
    contract._path = path
    return contract


def _where(raw: Any, loc: tuple[Any, ...]) -> str:
    """`features.3.bounds` -> `features[3] ('mean_area').bounds`: the column's name, not just its index."""
    parts: list[str] = []
    node = raw
    for key in loc:
        if isinstance(key, int) and isinstance(node, list):
            name = node[key].get("name") if key < len(node) and isinstance(node[key], Mapping) else None
            parts[-1:] = [f"{parts[-1] if parts else ''}[{key}]" + (f" ({name!r})" if name else "")]
            node = node[key] if key < len(node) else None
        else:
            parts.append(str(key))
            node = node.get(key) if isinstance(node, Mapping) else None
    return "field " + ".".join(parts) if parts else "(root)"


HEADER = """\
# The data contract: what the model is trained on and what it accepts.
# Written by `sluice model profile` from a reference sample; review it and commit it.
# The `validate` stage generates its Great Expectations suite from this file (types, categories, bounds,
# nulls, and each column's distribution against `reference`); training builds its preprocessing from it;
# serving refuses requests that break it (a category not listed here is refused with a 400).
"""


class _Flow(list[Any]):
    """A list written on one line: `[0, 1]`."""


class _FlowMap(dict[Any, Any]):
    """A mapping written on one line: `{0.05: 9.53, 0.5: 13.4}`."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Flow, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))
_Dumper.add_representer(
    _FlowMap, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v, flow_style=True)
)


def _compact(node: Any, key: str = "") -> Any:
    if isinstance(node, dict):
        out = {k: _compact(v, str(k)) for k, v in node.items()}
        if key == "reference" and out.get("null_fraction") == 0.0:
            del out["null_fraction"]
        return _FlowMap(out) if key in ("quantiles", "frequencies") else out
    if isinstance(node, list | tuple):
        items = [_compact(v) for v in node]
        scalars = all(not isinstance(v, dict | list) for v in items)
        return _Flow(items) if scalars and (key != "categories" or len(items) <= 12) else items
    return node


def dump_contract(contract: Contract, path: str | Path) -> Path:
    path = Path(path)
    data = _compact(contract.model_dump(mode="python", exclude_none=True))
    if not data.get("ignored"):
        data.pop("ignored", None)
    path.write_text(HEADER + yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110))
    return path
