"""The Great Expectations suite generated from a contract, against corrupted copies of real tables."""

from pathlib import Path

import numpy as np
import pytest
from sample_tables import penguins

from model.checks import build_suite, validate_frame
from model.contract import load_contract
from model.data import load_raw
from model.params import ValidateParams
from model.profile import profile, reprofile

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def raw():
    return load_raw()


@pytest.fixture(scope="module")
def contract():
    return load_contract(REPO / "contract.yaml")


def failures(report):
    return {(v.expectation, v.column): v for v in report.violations}


def test_clean_data_passes(raw, contract):
    report = validate_frame(raw, contract, ValidateParams(), data="data/raw/table.csv")
    assert report.success, report.render()
    assert report.evaluated > 120 and report.rows == len(raw)
    assert report.render().endswith(f"569 rows of data/raw/table.csv against {contract.path}")


def test_the_suite_is_generated_from_the_contract(contract):
    suite = build_suite(contract, ValidateParams())
    kinds = {}
    for e in suite.expectations:
        kinds.setdefault(e.expectation_type, set()).add(getattr(e, "column", None))
    assert kinds["expect_column_quantile_values_to_be_between"] == {*contract.feature_names}
    assert kinds["expect_column_kl_divergence_to_be_less_than"] == {"target"}
    between = next(
        e
        for e in suite.expectations
        if e.expectation_type == "expect_column_values_to_be_between" and e.column == "mean_area"
    )
    assert (between.min_value, between.max_value) == contract.feature("mean_area").bounds


# One corrupted copy of the table carries every corruption below, each in its own column: one validation
# run answers all the tests that read it.
UNIT_CHANGES = {"mean_radius": 0.01, "mean_texture": 100.0, "mean_perimeter": 2.54}


@pytest.fixture(scope="module")
def corrupted(raw, contract):
    bad = raw.copy()
    for column, factor in UNIT_CHANGES.items():
        bad[column] = bad[column] * factor  # e.g. millimetres written as metres
    bad.loc[[3, 10, 20], "mean_smoothness"] = np.nan
    bad.loc[5, "worst_area"] = 99999.0
    bad.loc[6, "mean_concavity"] = -1.0
    bad["mean_symmetry"] = bad["mean_symmetry"].astype(str)
    bad = bad.drop(columns=["mean_area"]).rename(columns={"worst_symmetry": "symmetry"})
    bad["target"] = 1
    report = validate_frame(bad, contract, ValidateParams(), data="data/raw/table.csv")
    assert not report.success
    return bad, report, failures(report)


@pytest.mark.parametrize(("column", "factor"), UNIT_CHANGES.items())
def test_a_unit_change_fails_on_the_distribution_with_the_observed_quantiles(
    corrupted, contract, column, factor
):
    bad, report, found = corrupted
    quantiles = found[("expect_column_quantile_values_to_be_between", column)]
    median = float(np.quantile(bad[column], 0.5, method="nearest"))
    assert quantiles.observed[0.5] == pytest.approx(median, rel=1e-4)
    low, high = contract.feature(column).reference.quantiles[0.5] * np.array([0.5, 1.5])
    assert "quantile 0.5 is" in quantiles.details and not low < median < high
    text = report.render()
    assert "data/raw/table.csv" in text and str(contract.path) in text and f"'{column}'" in text


def test_a_unit_change_within_the_bounds_is_caught_by_the_distribution_alone(corrupted):
    _, _, found = corrupted
    assert [k for k in found if k[1] == "mean_radius"] == [
        ("expect_column_quantile_values_to_be_between", "mean_radius")
    ]


def test_nulls_are_reported_with_count(corrupted):
    _, report, found = corrupted
    v = found[("expect_column_values_to_not_be_null", "mean_smoothness")]
    assert "3 unexpected values" in v.details
    assert "mean_smoothness" in report.render()


def test_out_of_range_values_are_reported_with_the_values(corrupted):
    _, _, found = corrupted
    assert found[("expect_column_values_to_be_between", "worst_area")].observed == [99999.0]
    assert found[("expect_column_values_to_be_between", "mean_concavity")].observed == [-1.0]


def test_dropped_and_renamed_columns_are_reported(corrupted):
    _, _, found = corrupted
    schema = found[("expect_table_columns_to_match_set", None)]
    assert schema.details == "missing 'mean_area'; missing 'worst_symmetry'; unexpected 'symmetry'"
    assert ("expect_column_values_to_be_between", "mean_area") in found


def test_wrong_type_and_class_balance(corrupted):
    _, _, found = corrupted
    assert found[("expect_column_values_to_be_in_type_list", "mean_symmetry")].details.startswith(
        "569 unexpected"
    )
    balance = found[("expect_column_kl_divergence_to_be_less_than", "target")]
    assert balance.observed == {"0": 0.0, "1": 1.0}
    assert "KL divergence" in balance.details


@pytest.fixture(scope="module")
def mixed():
    frame = penguins()
    return frame, profile(frame, "species", drop=["penguin_id"])


def test_a_mixed_table_passes_its_own_profile(mixed):
    frame, contract = mixed
    report = validate_frame(frame, contract, ValidateParams(min_rows=100))
    assert report.success, report.render()


def test_mixed_table_violations_name_column_and_value(mixed):
    frame, contract = mixed
    bad = frame.copy()
    bad.loc[4, "island"] = "Atlantis"
    bad.loc[: len(bad) // 2, "sex"] = None  # half the rows lose a nullable column
    bad.loc[7, "adult"] = "sometimes"
    bad.loc[9, "species"] = "Emperor"
    found = failures(validate_frame(bad, contract, ValidateParams(min_rows=100)))
    assert found[("expect_column_values_to_be_in_set", "island")].observed == ["Atlantis"]
    assert (
        "a value the reference never had"
        in found[("expect_column_kl_divergence_to_be_less_than", "island")].details
    )
    assert found[("expect_column_proportion_of_non_null_values_to_be_between", "sex")].observed < 0.55
    assert found[("expect_column_values_to_be_in_set", "adult")].observed == ["sometimes"]
    assert found[("expect_column_values_to_be_in_set", "species")].observed == ["Emperor"]


def test_category_frequencies_drift_fails(mixed):
    frame, contract = mixed
    shifted = frame.copy()
    shifted.loc[shifted["island"].notna(), "island"] = "Torgersen"
    shifted.loc[shifted.index[::2], "island"] = "Biscoe"
    found = failures(validate_frame(shifted, contract, ValidateParams(min_rows=100)))
    kl = found[("expect_column_kl_divergence_to_be_less_than", "island")]
    assert kl.observed["Dream"] == 0.0 and "against the reference" in kl.details


# live data versions: the reference re-profiled, the reviewed rules kept ---------------------------------------
LIVE = "data/source/live.csv"


def drifted_copy(raw):
    """The client's instrument recalibrated: one feature reads two standard deviations higher, another 30 %."""
    live = raw.copy()
    live["mean_concave_points"] = live["mean_concave_points"] + 0.08
    live["mean_radius"] = live["mean_radius"] * 1.3
    return live


def test_a_drifted_live_version_passes_once_its_reference_is_reprofiled(raw, contract):
    live = drifted_copy(raw)
    before = failures(validate_frame(live, contract, ValidateParams(), data=LIVE))
    assert set(before) == {
        ("expect_column_quantile_values_to_be_between", "mean_concave_points"),
        ("expect_column_quantile_values_to_be_between", "mean_radius"),
    }
    moved = reprofile(contract, live, LIVE)
    report = validate_frame(live, moved, ValidateParams(), data=LIVE)
    assert report.success, report.render()
    assert moved.feature("mean_concave_points").reference.quantiles[0.5] == pytest.approx(
        contract.feature("mean_concave_points").reference.quantiles[0.5] + 0.08, rel=1e-4
    )
    assert moved.profiled.source == LIVE and moved.profiled.rows == len(live)
    # What a person reviewed is unchanged: only the reference distributions moved.
    strip = {"reference": True}
    for old, new in zip(contract.features, moved.features, strict=True):
        assert old.model_dump(exclude=strip) == new.model_dump(exclude=strip)
        assert old.reference.null_fraction == new.reference.null_fraction
    assert moved.target.model_dump(exclude=strip) == contract.target.model_dump(exclude=strip)


def test_a_broken_live_version_is_still_refused_by_column_and_value(raw, contract):
    live = drifted_copy(raw).astype({"mean_symmetry": object, "target": object})
    live.loc[4, "mean_symmetry"] = "n/a"  # text in a numeric column
    live.loc[6, "mean_concavity"] = -1.0  # below its physical bounds
    live.loc[[3, 10], "mean_smoothness"] = np.nan  # a column that may not be missing
    live.loc[9, "target"] = 2  # a class the contract does not list
    moved = reprofile(contract, live, LIVE)
    report = validate_frame(live, moved, ValidateParams(), data=LIVE)
    found = failures(report)
    assert "n/a" in found[("expect_column_values_to_be_in_type_list", "mean_symmetry")].observed
    assert found[("expect_column_values_to_be_between", "mean_concavity")].observed == [-1.0]
    assert "2 unexpected values" in found[("expect_column_values_to_not_be_null", "mean_smoothness")].details
    assert found[("expect_column_values_to_be_in_set", "target")].observed == [2]
    # The drift itself is no longer a failure; the broken values are, each named with the file they are in.
    assert not {k[1] for k in found} & {"mean_concave_points", "mean_radius"}
    text = report.render()
    assert LIVE in text and "'mean_symmetry'" in text and "'n/a'" in text and "'target'" in text
    # The broken values are not measured into the reference: the class the contract lacks is not in it.
    assert set(moved.target.reference.frequencies) == {0, 1}


def test_a_mixed_live_version_keeps_its_categories(mixed):
    frame, contract = mixed
    shifted = frame.copy()
    shifted.loc[shifted.index[::2], "island"] = "Biscoe"  # the client's mix of islands changed
    assert not validate_frame(shifted, contract, ValidateParams(min_rows=100)).success
    moved = reprofile(contract, shifted, LIVE)
    assert validate_frame(shifted, moved, ValidateParams(min_rows=100)).success
    shifted.loc[4, "island"] = "Atlantis"
    moved = reprofile(contract, shifted, LIVE)
    assert "Atlantis" not in moved.feature("island").reference.frequencies
    found = failures(validate_frame(shifted, moved, ValidateParams(min_rows=100)))
    assert found[("expect_column_values_to_be_in_set", "island")].observed == ["Atlantis"]
