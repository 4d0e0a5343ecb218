"""`sluice model profile`: a first contract from a reference sample, for a person to review and commit.

Types are inferred from the values (booleans, numbers, text with few distinct values), the task from the
target (text or few integers: classes; many numbers: regression). Bounds are wider than what was seen (from
zero for a non-negative column up to the maximum plus the observed range), so drift passes and a corrupt
value does not; the reference distribution (quantiles, or category frequencies) is recorded as seen, and the
`validate` stage compares new data with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from model.contract import (
    QUANTILES,
    Contract,
    ContractError,
    FeatureSpec,
    Profiled,
    Reference,
    TargetSpec,
    Task,
    as_category,
    dump_contract,
)

MAX_CATEGORIES = 50  # more distinct text values than this is an ID or free text, not a category
MAX_INTEGER_CLASSES = 20  # an integer target with more distinct values is a regression target


def profile(
    frame: pd.DataFrame,
    target: str,
    *,
    task: Task | None = None,
    drop: list[str] | tuple[str, ...] = (),
    source: str = "",
    max_categories: int = MAX_CATEGORIES,
) -> Contract:
    """The contract `frame` satisfies; `drop` lists columns to keep out of the model (kept as `ignored`)."""
    if target not in frame.columns:
        raise ContractError(f"{source or 'the table'}: no target column {target!r} (columns: {_list(frame)})")
    unknown = [c for c in drop if c not in frame.columns]
    if unknown:
        raise ContractError(f"{source or 'the table'}: cannot drop {unknown[0]!r}: no such column")
    if len(frame) == 0:
        raise ContractError(f"{source or 'the table'}: no rows to profile")
    features = [
        _feature(frame[c], c, max_categories, source) for c in frame.columns if c != target and c not in drop
    ]
    if not features:
        raise ContractError(f"{source or 'the table'}: no feature columns left besides the target")
    return Contract(
        target=_target(frame[target], target, task, source),
        features=features,
        ignored=list(drop),
        profiled=Profiled(
            source=source or "(a data frame)",
            rows=len(frame),
            at=datetime.now(UTC).isoformat(timespec="seconds"),
        ),
    )


def _list(frame: pd.DataFrame) -> str:
    names = [repr(str(c)) for c in frame.columns[:8]]
    return ", ".join(names) + (", ..." if len(frame.columns) > 8 else "")


def _is_boolean(column: pd.Series) -> bool:
    if column.dtype == bool:
        return True
    if column.dtype != object:
        return False
    values = column.dropna()
    return len(values) > 0 and all(isinstance(v, bool | np.bool_) for v in values)


def _feature(column: pd.Series, name: str, max_categories: int, source: str) -> FeatureSpec:
    null_fraction = _round(float(column.isna().mean()))
    nullable = null_fraction > 0
    if column.notna().sum() == 0:
        raise ContractError(f"{source}: column {name!r} holds no values at all: drop it (--drop {name})")
    if _is_boolean(column):
        values = column.dropna().astype(bool)
        return FeatureSpec(
            name=name,
            type="boolean",
            nullable=nullable,
            reference=Reference(frequencies=_frequencies(values), null_fraction=null_fraction),
        )
    if pd.api.types.is_numeric_dtype(column):
        values = column.dropna().astype("float64")
        return FeatureSpec(
            name=name,
            type="numeric",
            nullable=nullable,
            bounds=_bounds(values),
            reference=Reference(quantiles=_quantiles(values), null_fraction=null_fraction),
        )
    values = column.dropna().map(as_category)
    distinct = values.nunique()
    if distinct > max_categories:
        raise ContractError(
            f"{source}: column {name!r} has {distinct} distinct text values (more than {max_categories}): "
            f"an ID or free text rather than a category; drop it (--drop {name}) or raise --max-categories"
        )
    return FeatureSpec(
        name=name,
        type="categorical",
        nullable=nullable,
        categories=sorted(values.unique().tolist()),
        reference=Reference(frequencies=_frequencies(values), null_fraction=null_fraction),
    )


def _target(column: pd.Series, name: str, task: Task | None, source: str) -> TargetSpec:
    if column.isna().any():
        raise ContractError(
            f"{source}: target {name!r} is missing in {int(column.isna().sum())} rows: a reference sample "
            "needs every label"
        )
    if _is_boolean(column):
        column = column.astype(bool).astype("int64")
    numeric = pd.api.types.is_numeric_dtype(column)
    integral = numeric and bool((column == column.round()).all())
    distinct = column.nunique()
    if task is None:
        if numeric and (not integral or distinct > MAX_INTEGER_CLASSES):
            task = "regression"
        else:
            task = "binary" if distinct == 2 else "multiclass"
    if task == "regression":
        if not numeric:
            raise ContractError(
                f"{source}: target {name!r} is not numeric, so it cannot be a regression target"
            )
        values = column.astype("float64")
        return TargetSpec(
            name=name, task=task, bounds=_bounds(values), reference=Reference(quantiles=_quantiles(values))
        )
    labels: pd.Series = column.astype("int64") if integral else column.map(as_category)
    if not integral and numeric:
        raise ContractError(f"{source}: target {name!r} holds fractional numbers: use --task regression")
    if distinct > MAX_CATEGORIES:
        raise ContractError(f"{source}: target {name!r} has {distinct} distinct labels: too many classes")
    classes = sorted(labels.unique().tolist())
    expected = 2 if task == "binary" else None
    if expected and len(classes) != expected:
        raise ContractError(f"{source}: task binary needs 2 classes in {name!r}, found {len(classes)}")
    return TargetSpec(
        name=name, task=task, classes=classes, reference=Reference(frequencies=_frequencies(labels))
    )


def _frequencies(values: pd.Series) -> dict[Any, float]:
    counts = values.value_counts(normalize=True, sort=False)
    return {_plain(k): _round(float(v)) for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))}


def _plain(value: Any) -> Any:
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _quantiles(values: pd.Series) -> dict[float, float]:
    found = values.quantile(list(QUANTILES))
    return {q: _round(float(found[q])) for q in QUANTILES}


def _bounds(values: pd.Series) -> tuple[float, float]:
    lo, hi = float(values.min()), float(values.max())
    span = hi - lo or max(abs(hi), 1.0)
    low = 0.0 if lo >= 0 else _nice(lo - span, up=False)
    return low, _nice(hi + span, up=True)


def _round(x: float, digits: int = 6) -> float:
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - math.floor(math.log10(abs(x))))


def _nice(x: float, up: bool, digits: int = 2) -> float:
    """`x` rounded outward to `digits` significant digits (49.2 -> 50, -0.0314 -> -0.032)."""
    if x == 0:
        return 0.0
    exponent = math.floor(math.log10(abs(x))) - digits + 1
    steps = math.ceil(x / 10**exponent) if up else math.floor(x / 10**exponent)
    return round(steps * 10**exponent, max(0, -exponent))


@dataclass
class ProfileResult:
    """What `sluice model profile` did: the contract it wrote, and what it changed around it."""

    contract: Contract
    path: Path
    source: str
    tracked: str = ""
    params_changes: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def profile_source(
    root: Path,
    data: str,
    target: str,
    *,
    task: Task | None = None,
    drop: list[str] | tuple[str, ...] = (),
    out: Path | None = None,
    max_categories: int = MAX_CATEGORIES,
    track: bool = True,
    set_source: bool = True,
    force: bool = False,
) -> ProfileResult:
    """Profile `data` (a file, or builtin:<name>) into a contract file; by default also track the file with DVC
    and point params.yaml at it, fitting `train.model` and `evaluate.gate_metric` to the task."""
    from model.datasets import BUILTIN_PREFIX, check_source, read_source, read_table
    from model.layout import Layout
    from model.params import CLASSIFIERS, REGRESSORS, TASK_METRICS, ParamsError, load_params, update_params

    layout = Layout.at(root)
    out = out or layout.contract
    if out.exists() and not force:
        raise ContractError(
            f"{out}: exists; --force replaces it (review the change with `git diff {out.name}`)"
        )
    if data.startswith(BUILTIN_PREFIX):
        source, frame = data, read_source(data, layout.root)
    else:
        path = Path(data).resolve()
        frame = read_table(path)
        try:
            source = path.relative_to(layout.root).as_posix()
        except ValueError:
            source = str(path)
    contract = profile(frame, target, task=task, drop=drop, source=source, max_categories=max_categories)
    result = ProfileResult(contract, out, source)
    problem = check_source(source)
    # Tracking can fail (a file Git already tracks): before anything is written, so a failure leaves nothing.
    if not data.startswith(BUILTIN_PREFIX) and track and not problem:
        result.tracked = track_with_dvc(layout.root, source)
    previous = _previous(out)
    dump_contract(contract, out)
    if not set_source:
        return result
    if problem:
        result.notes.append(f"params.yaml left as it is: data.source {source!r}: {problem}")
        return result
    try:
        params = load_params(layout.params)
    except ParamsError as e:
        result.notes.append(f"params.yaml left as it is: {e}")
        return result
    changes: dict[str, Any] = {}
    if params.data.source != source:
        changes["data.source"] = source
    fits = CLASSIFIERS if contract.is_classifier else REGRESSORS
    if params.train.model not in fits:
        changes["train.model"] = "logistic_regression" if contract.is_classifier else "ridge"
    if params.evaluate.gate_metric not in TASK_METRICS[contract.task]:
        changes["evaluate.gate_metric"] = DEFAULT_GATE_METRIC[contract.task]
    if params.evaluate.champion is not None and (
        previous is None or previous.task != contract.task or previous.feature_names != contract.feature_names
    ):
        changes["evaluate.champion"] = None
        result.notes.append(
            f"the pinned champion (version {params.evaluate.champion.version}) was trained on another contract: "
            "unpinned, so the first model of this contract is gated on no champion"
        )
    if changes:
        update_params(layout.params, changes)
    result.params_changes = changes
    return result


DEFAULT_GATE_METRIC: dict[str, str] = {"binary": "roc_auc", "multiclass": "macro_f1", "regression": "rmse"}


def _previous(path: Path) -> Contract | None:
    from model.contract import load_contract

    try:
        return load_contract(path) if path.exists() else None
    except ContractError:
        return None


def track_with_dvc(root: Path, source: str) -> str:
    """Track `source` with DVC unless it already is; returns what was done, for the person to read."""
    import subprocess
    import sys

    pointer = root / f"{source}.dvc"
    if pointer.exists():
        return f"already tracked by DVC ({pointer.relative_to(root)})"
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "add", source], cwd=root, capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        said = " ".join(line.strip() for line in (proc.stderr or proc.stdout).splitlines() if line.strip())
        said = said.removeprefix("ERROR:").strip()
        raise ContractError(f"`dvc add {source}` failed: {said[:600] or f'exit code {proc.returncode}'}")
    return f"tracked with `dvc add {source}` (commit {source}.dvc)"


def reprofile(contract: Contract, frame: pd.DataFrame, source: str) -> Contract:
    """`contract` with each column's reference distribution measured again on `frame`, and nothing else changed.

    What a person reviewed stays as it is: types, categories and classes, bounds, nullability and each column's
    share of missing values. Only the distribution the `validate` stage and monitoring compare new data with
    moves: a retrain on live data that drifted trains on the shift, and is judged and monitored against it.
    Values that break the contract (text in a numeric column, out of its bounds, a category or class it does
    not list) are left out of the measurement, so the `validate` stage still refuses them by name.
    """

    def numeric(column: str, old: Reference | None, bounds: tuple[float, float] | None) -> Reference | None:
        values = pd.to_numeric(frame[column], errors="coerce").dropna().astype("float64")
        if bounds is not None:
            values = values[(values >= bounds[0]) & (values <= bounds[1])]
        if old is None or not old.quantiles or values.empty:
            return old
        return old.model_copy(update={"quantiles": _quantiles(values)})

    def frequencies(column: str, old: Reference | None, allowed: list[Any]) -> Reference | None:
        values = frame[column].dropna()
        values = values[values.isin(allowed)]
        if old is None or not old.frequencies or values.empty:
            return old
        return old.model_copy(update={"frequencies": _frequencies(values)})

    features = []
    for f in contract.features:
        if f.name not in frame.columns:
            features.append(f)
            continue
        if f.type == "numeric":
            reference = numeric(f.name, f.reference, f.bounds)
        elif f.type == "boolean":
            reference = frequencies(f.name, f.reference, [True, False])
        else:
            reference = frequencies(f.name, f.reference, list(f.categories or []))
        features.append(f.model_copy(update={"reference": reference}))
    t = contract.target
    if t.name not in frame.columns:
        target = t
    elif t.task == "regression":
        target = t.model_copy(update={"reference": numeric(t.name, t.reference, t.bounds)})
    else:
        target = t.model_copy(update={"reference": frequencies(t.name, t.reference, list(t.classes or []))})
    return contract.model_copy(
        update={
            "features": features,
            "target": target,
            "profiled": Profiled(
                source=source, rows=len(frame), at=datetime.now(UTC).isoformat(timespec="seconds")
            ),
        }
    )
