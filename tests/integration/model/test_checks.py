"""The Great Expectations suite against corrupted copies of the real raw table."""

import numpy as np
import pytest

from model.checks import validate_frame
from model.data import load_raw
from model.params import ValidateParams


@pytest.fixture(scope="module")
def raw():
    return load_raw()


def failures(report):
    return {(v.expectation, v.column): v for v in report.violations}


def test_clean_data_passes(raw):
    report = validate_frame(raw, ValidateParams())
    assert report.success, report.render()
    assert report.evaluated > 90 and report.rows == len(raw)


def test_nulls_are_reported_with_count(raw):
    bad = raw.copy()
    bad.loc[[3, 10, 20], "mean_texture"] = np.nan
    report = validate_frame(bad, ValidateParams())
    assert not report.success
    v = failures(report)[("expect_column_values_to_not_be_null", "mean_texture")]
    assert "3 unexpected values" in v.details
    assert "mean_texture" in report.render()


def test_out_of_range_values_are_reported_with_the_values(raw):
    bad = raw.copy()
    bad.loc[5, "worst_area"] = 99999.0
    bad.loc[6, "mean_radius"] = -1.0
    report = validate_frame(bad, ValidateParams())
    found = failures(report)
    assert found[("expect_column_values_to_be_between", "worst_area")].observed == [99999.0]
    assert found[("expect_column_values_to_be_between", "mean_radius")].observed == [-1.0]


def test_dropped_column_is_reported(raw):
    report = validate_frame(raw.drop(columns=["mean_area"]), ValidateParams())
    found = failures(report)
    schema = found[("expect_table_columns_to_match_ordered_list", None)]
    assert "mean_area" in schema.details
    assert ("expect_column_values_to_be_between", "mean_area") in found
    assert "mean_area" in report.render()


def test_renamed_column_is_reported(raw):
    report = validate_frame(raw.rename(columns={"mean_smoothness": "smoothness"}), ValidateParams())
    schema = failures(report)[("expect_table_columns_to_match_ordered_list", None)]
    assert "expected 'mean_smoothness', found 'smoothness'" in schema.details
    assert "smoothness" in schema.observed


def test_wrong_type_and_class_balance(raw):
    bad = raw.copy()
    bad["mean_symmetry"] = bad["mean_symmetry"].astype(str)
    bad["target"] = 1
    report = validate_frame(bad, ValidateParams())
    found = failures(report)
    assert found[("expect_column_values_to_be_in_type_list", "mean_symmetry")].observed in (
        "object",
        "str",
        "string",
    )
    assert found[("expect_column_mean_to_be_between", "target")].observed == 1.0
