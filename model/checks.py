"""The `validate` stage: a Great Expectations 1.x suite, defined in code, run on the raw table.

The suite checks the schema (column names and order), types, null rates, value ranges and class balance.
A failure is reported per expectation with the column and the observed value, so a person reading CI output
knows what to fix without opening Great Expectations' data docs.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from model.contract import CLASSES, COLUMNS, FEATURE_BOUNDS, TARGET
from model.params import ValidateParams


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "rows": self.rows,
            "expectations_evaluated": self.evaluated,
            "expectations_failed": len(self.violations),
            "violations": [asdict(v) for v in self.violations],
        }

    def render(self) -> str:
        if self.success:
            return f"data validation passed: {self.evaluated} expectations on {self.rows} rows"
        lines = [
            f"data validation FAILED: {len(self.violations)} of {self.evaluated} expectations on {self.rows} rows"
        ]
        lines += [f"  - {v}" for v in self.violations]
        return "\n".join(lines)


def build_suite(params: ValidateParams) -> Any:
    import great_expectations as gx
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name="raw_data")
    suite.add_expectation(gxe.ExpectTableColumnsToMatchOrderedList(column_list=COLUMNS))
    suite.add_expectation(gxe.ExpectTableRowCountToBeBetween(min_value=params.min_rows))
    mostly = 1.0 - params.max_null_fraction
    for column, (low, high) in FEATURE_BOUNDS.items():
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=column, mostly=mostly))
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeInTypeList(column=column, type_list=["float64", "float32"])
        )
        suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high))
    suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=TARGET))
    suite.add_expectation(gxe.ExpectColumnDistinctValuesToBeInSet(column=TARGET, value_set=list(CLASSES)))
    low, high = params.class_balance
    suite.add_expectation(gxe.ExpectColumnMeanToBeBetween(column=TARGET, min_value=low, max_value=high))
    return suite


def _observed(result: dict[str, Any], exception_info: Any) -> tuple[Any, str]:
    if "observed_value" in result:
        details = result.get("details", {})
        mismatched = details.get("mismatched") if isinstance(details, dict) else None
        if mismatched:
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


def validate_frame(frame: pd.DataFrame, params: ValidateParams) -> ValidationReport:
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
    suite = context.suites.add(build_suite(params))
    result = batch_def.get_batch(batch_parameters={"dataframe": frame}).validate(suite)
    violations = []
    for res in result.results:
        if res.success:
            continue
        config = res.expectation_config
        if config is None:  # every result of suite.validate carries its configuration
            continue
        observed, details = _observed(dict(res.result or {}), res.exception_info)
        violations.append(Violation(config.type, config.kwargs.get("column"), observed, details))
    return ValidationReport(bool(result.success), len(frame), len(result.results), violations)
