"""The `validate` stage: a Great Expectations 1.x suite generated from the contract, run on the raw table.

Per column: presence, type, nulls (none, or at most the reference's share plus `validate.null_tolerance`),
allowed categories or classes, physical bounds; and the distribution against the contract's reference:
a numeric column's quantiles may move by `validate.quantile_tolerance` of its reference 5-95 % range (so a
column divided by 100 fails), category and class frequencies by `validate.max_kl_divergence`. Each failure
names the column, the observed value and what was expected, so CI output says what to fix without opening
Great Expectations' data docs.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from model.contract import Contract, FeatureSpec, Reference
from model.params import ValidateParams

NUMERIC_TYPES = [
    *(f"{p}{b}" for p in ("int", "uint", "Int", "UInt") for b in (8, 16, 32, 64)),
    *("float16", "float32", "float64", "Float32", "Float64"),
]
# An object column is checked value by value: Python strings, Python booleans (pandas' string dtype is
# converted to object first, see validate_frame).
TEXT_TYPES = ["str"]
BOOLEAN_TYPES = ["bool", "boolean"]


@dataclass
class Violation:
    expectation: str
    column: str | None
    observed: Any
    details: str = ""

    def __str__(self) -> str:
        where = f"column {self.column!r}" if self.column else "table"
        extra = f" ({self.details})" if self.details else ""
        return f"{self.expectation} failed on {where}: observed {self.observed!r}{extra}"


@dataclass
class ValidationReport:
    success: bool
    rows: int
    evaluated: int
    violations: list[Violation] = field(default_factory=list)
    data: str = ""
    contract: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "data": self.data,
            "contract": self.contract,
            "rows": self.rows,
            "expectations_evaluated": self.evaluated,
            "expectations_failed": len(self.violations),
            "violations": [asdict(v) for v in self.violations],
        }

    def render(self) -> str:
        where = f" of {self.data}" if self.data else ""
        against = f" against {self.contract}" if self.contract else ""
        if self.success:
            return (
                f"data validation passed: {self.evaluated} expectations on {self.rows} rows{where}{against}"
            )
        lines = [
            f"data validation FAILED: {len(self.violations)} of {self.evaluated} expectations on "
            f"{self.rows} rows{where}{against}"
        ]
        lines += [f"  - {v}" for v in self.violations]
        return "\n".join(lines)


def build_suite(contract: Contract, params: ValidateParams) -> Any:
    import great_expectations as gx
    import great_expectations.expectations as gxe

    expectations: list[Any] = [
        gxe.ExpectTableColumnsToMatchSet(column_set=contract.columns, exact_match=True),
        gxe.ExpectTableRowCountToBeBetween(min_value=params.min_rows),
    ]
    for feature in contract.features:
        expectations += _feature_expectations(feature, params)
    target = contract.target
    expectations.append(gxe.ExpectColumnValuesToNotBeNull(column=target.name))
    if target.task == "regression":
        expectations.append(gxe.ExpectColumnValuesToBeInTypeList(column=target.name, type_list=NUMERIC_TYPES))
        if target.bounds:
            lo, hi = target.bounds
            expectations.append(
                gxe.ExpectColumnValuesToBeBetween(column=target.name, min_value=lo, max_value=hi)
            )
        expectations.append(_quantiles(target.name, target.reference, target.bounds, params))
    else:
        expectations.append(gxe.ExpectColumnValuesToBeInSet(column=target.name, value_set=contract.classes))
        expectations.append(_frequencies(target.name, target.reference, params))
    # All at once: `add_expectation` compares each new one with every one before it (quadratic).
    return gx.ExpectationSuite(name="raw_data", expectations=[e for e in expectations if e is not None])


def _feature_expectations(feature: FeatureSpec, params: ValidateParams) -> list[Any]:
    import great_expectations.expectations as gxe

    name, reference = feature.name, feature.reference
    out: list[Any] = []
    if feature.nullable:
        allowed = min(1.0, (reference.null_fraction if reference else 0.0) + params.null_tolerance)
        out.append(gxe.ExpectColumnProportionOfNonNullValuesToBeBetween(column=name, min_value=1.0 - allowed))
    else:
        out.append(gxe.ExpectColumnValuesToNotBeNull(column=name))
    if feature.type == "numeric":
        out.append(gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=NUMERIC_TYPES))
        if feature.bounds:
            lo, hi = feature.bounds
            out.append(gxe.ExpectColumnValuesToBeBetween(column=name, min_value=lo, max_value=hi))
        out.append(_quantiles(name, reference, feature.bounds, params))
    elif feature.type == "boolean":
        out.append(gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=BOOLEAN_TYPES))
        out.append(gxe.ExpectColumnValuesToBeInSet(column=name, value_set=[True, False]))
        out.append(_frequencies(name, reference, params))
    else:
        out.append(gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=TEXT_TYPES))
        out.append(gxe.ExpectColumnValuesToBeInSet(column=name, value_set=list(feature.categories or [])))
        out.append(_frequencies(name, reference, params))
    return [e for e in out if e is not None]


def quantile_ranges(
    reference: Reference, bounds: tuple[float, float] | None, tolerance: float
) -> tuple[list[float], list[list[float]]]:
    """Each reference quantile widened by `tolerance` x the reference's 5-95 % range."""
    q = reference.quantiles or {}
    keys = sorted(q)
    spread = q[keys[-1]] - q[keys[0]] if keys else 0.0
    if spread <= 0:  # a (nearly) constant column: fall back on its bounds, then on the value itself
        spread = (
            (bounds[1] - bounds[0]) / 10 if bounds and bounds[1] > bounds[0] else max(abs(q[keys[0]]), 1.0)
        )
    margin = tolerance * spread
    return keys, [[q[k] - margin, q[k] + margin] for k in keys]


def _quantiles(
    column: str, reference: Reference | None, bounds: tuple[float, float] | None, params: ValidateParams
) -> Any:
    import great_expectations.expectations as gxe

    if reference is None or not reference.quantiles:
        return None
    quantiles, ranges = quantile_ranges(reference, bounds, params.quantile_tolerance)
    return gxe.ExpectColumnQuantileValuesToBeBetween(
        column=column, quantile_ranges={"quantiles": quantiles, "value_ranges": ranges}
    )


def _frequencies(column: str, reference: Reference | None, params: ValidateParams) -> Any:
    import great_expectations.expectations as gxe

    if reference is None or not reference.frequencies:
        return None
    values = list(reference.frequencies)
    return gxe.ExpectColumnKLDivergenceToBeLessThan(
        column=column,
        partition_object={"values": values, "weights": [reference.frequencies[v] for v in values]},
        threshold=params.max_kl_divergence,
    )


def _observed(expectation: str, result: dict[str, Any], exception_info: Any) -> tuple[Any, str]:
    found = result.get("details")
    details: dict[str, Any] = found if isinstance(found, dict) else {}
    if expectation == "expect_column_quantile_values_to_be_between" and "observed_value" in result:
        return _quantile_failure(result, details)
    if expectation == "expect_column_kl_divergence_to_be_less_than" and "details" in result:
        return _frequency_failure(result, details)
    if "observed_value" in result:
        mismatched = details.get("mismatched")
        if isinstance(mismatched, dict):
            parts = [f"missing {c!r}" for c in mismatched.get("missing", [])]
            parts += [f"unexpected {c!r}" for c in mismatched.get("unexpected", [])]
            return result["observed_value"], "; ".join(parts)
        if isinstance(mismatched, list) and mismatched:
            found = "; ".join(
                f"position {m['Expected Column Position']}: expected {m['Expected']!r}, found {m['Found']!r}"
                for m in mismatched
            )
            return result["observed_value"], found
        return result["observed_value"], ""
    if "unexpected_count" in result:
        sample = [
            None if (isinstance(x, float) and x != x) else x
            for x in result.get("partial_unexpected_list", [])[:5]
        ]
        pct = result.get("unexpected_percent")
        pct_text = f", {pct:.1f}% of non-null rows" if isinstance(pct, float) else ""
        return sample, f"{result['unexpected_count']} unexpected values{pct_text}"
    message = ""
    infos = (
        exception_info.values()
        if isinstance(exception_info, dict) and "raised_exception" not in exception_info
        else [exception_info]
    )
    for info in infos:
        if isinstance(info, dict) and info.get("raised_exception"):
            message = str(info.get("exception_message", "")).splitlines()[0]
            break
    return None, message or "could not be evaluated"


def _quantile_failure(result: dict[str, Any], details: dict[str, Any]) -> tuple[Any, str]:
    observed = result["observed_value"] or {}
    quantiles, values = observed.get("quantiles", []), observed.get("values", [])
    ok = details.get("success_details") or [True] * len(quantiles)
    ranges = result.get("_ranges") or []
    failed = {q: float(f"{v:.6g}") for q, v, good in zip(quantiles, values, ok, strict=False) if not good}
    parts = []
    for i, (q, v, good) in enumerate(zip(quantiles, values, ok, strict=False)):
        if not good:
            expected = f" expected {ranges[i][0]:.6g} to {ranges[i][1]:.6g}" if i < len(ranges) else ""
            parts.append(f"quantile {q:g} is {v:.6g},{expected}")
    return failed, "; ".join(parts) + " (against the contract's reference distribution)"


def _frequency_failure(result: dict[str, Any], details: dict[str, Any]) -> tuple[Any, str]:
    observed = details.get("observed_partition", {})
    expected = details.get("expected_partition", {})
    seen = {
        str(v): round(float(w), 3)
        for v, w in zip(observed.get("values", []), observed.get("weights", []), strict=False)
    }
    want = {
        str(v): round(float(w), 3)
        for v, w in zip(expected.get("values", []), expected.get("weights", []), strict=False)
    }
    value = result.get("observed_value")
    kl = "infinite (a value the reference never had)" if value is None else f"{value:.4f}"
    return seen, f"frequencies against the reference {want}: KL divergence {kl}"


def validate_frame(
    frame: pd.DataFrame,
    contract: Contract,
    params: ValidateParams,
    *,
    data: str | Path = "",
) -> ValidationReport:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_def = (
        context.data_sources.add_pandas("sluice")
        .add_dataframe_asset("raw")
        .add_batch_definition_whole_dataframe("whole")
    )
    suite = context.suites.add(build_suite(contract, params))
    # Great Expectations compares dtypes by equality, and pandas' string dtype (the default for text since
    # pandas 3) equals none it knows: text is checked as what it holds, Python strings in an object column.
    text = [c for c in frame.columns if isinstance(frame[c].dtype, pd.StringDtype)]
    frame = frame.astype(dict.fromkeys(text, object)) if text else frame
    result = batch_def.get_batch(batch_parameters={"dataframe": frame}).validate(suite)
    violations = []
    for res in result.results:
        if res.success:
            continue
        config = res.expectation_config
        if config is None:  # every result of suite.validate carries its configuration
            continue
        raw = dict(res.result or {})
        ranges = config.kwargs.get("quantile_ranges")
        if isinstance(ranges, dict):
            raw["_ranges"] = ranges.get("value_ranges")
        observed, details = _observed(config.type, raw, res.exception_info)
        violations.append(Violation(config.type, config.kwargs.get("column"), observed, details))
    return ValidationReport(
        bool(result.success),
        len(frame),
        len(result.results),
        violations,
        data=str(data),
        contract=str(contract.path),
    )
