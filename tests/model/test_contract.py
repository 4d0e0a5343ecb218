"""The contract file: what it accepts, how it names what is wrong, and how it types a table for the model."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from model.contract import Contract, ContractError, dump_contract, load_contract

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def mixed() -> Contract:
    return Contract.model_validate(
        {
            "target": {"name": "species", "task": "multiclass", "classes": ["a", "b", "c"]},
            "features": [
                {"name": "mass", "type": "numeric", "nullable": True, "bounds": [0, 10]},
                {"name": "island", "type": "categorical", "categories": ["x", "y"], "nullable": True},
                {"name": "code", "type": "categorical", "categories": ["007", "8"]},
                {"name": "adult", "type": "boolean", "nullable": True},
            ],
            "ignored": ["id"],
        }
    )


def test_the_committed_contract_is_the_breast_cancer_set():
    contract = load_contract(REPO / "contract.yaml")
    assert contract.task == "binary" and contract.classes == [0, 1] and contract.target.name == "target"
    assert len(contract.features) == 30 and contract.layout == "matrix"
    assert contract.feature("mean_radius").bounds == (0.0, 57.0)
    assert all(f.type == "numeric" and not f.nullable and f.reference.quantiles for f in contract.features)


def test_dump_and_load_round_trip(mixed, tmp_path):
    path = dump_contract(mixed, tmp_path / "contract.yaml")
    assert path.read_text().startswith("# The data contract")
    again = load_contract(path)
    assert again.model_dump() == mixed.model_dump()
    assert again.path == path and again.layout == "columns"
    assert again.columns == ["mass", "island", "code", "adult", "species", "id"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["features"][1].update(type="text"), r"field features\[1\] \('mean_texture'\).type"),
        (
            lambda d: d["features"][0].update(bounds=[5, 1]),
            r"features\[0\] \('mean_radius'\): .*bounds must be \[low, high\], got \[5.0, 1.0\]",
        ),
        (
            lambda d: d["features"][2].update(categories=["a"]),
            r"features\[2\] \('mean_perimeter'\): .*only categorical features have categories",
        ),
        (lambda d: d["features"][3].update(name="target"), "column 'target' is listed twice"),
        (lambda d: d["target"].update(classes=[0, 1, 2]), "a binary target needs exactly 2 classes"),
        (lambda d: d["target"].update(task="regression"), "a regression target has no classes"),
        (
            lambda d: d["features"][4].update(type="categorical", categories=["", "x"]),
            "the empty string means a missing value",
        ),
        (lambda d: d["features"][5].update(reference={"quantiles": {0.5: 3, 0.05: 9}}), "non-decreasing"),
        (lambda d: d.update(extra=1), "field extra: Extra inputs are not permitted"),
    ],
)
def test_a_broken_contract_names_the_file_the_column_and_the_problem(tmp_path, change, message):
    data = yaml.safe_load((REPO / "contract.yaml").read_text())
    change(data)
    path = tmp_path / "contract.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ContractError, match=message) as err:
        load_contract(path)
    assert str(err.value).startswith(str(path))


def test_missing_and_malformed_contract_files(tmp_path):
    with pytest.raises(ContractError, match="not found; write one with `sluice model profile"):
        load_contract(tmp_path / "contract.yaml")
    (tmp_path / "bad.yaml").write_text("target: [unclosed\n")
    with pytest.raises(ContractError, match="not valid YAML"):
        load_contract(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ContractError, match="expected a mapping"):
        load_contract(tmp_path / "list.yaml")


def test_model_frame_types_values_as_the_model_takes_them(mixed):
    frame = pd.DataFrame(
        {
            "id": [1, 2, 3],
            "adult": [True, None, "false"],
            "mass": [1.5, None, "3"],
            "island": ["x", None, "y"],
            "code": ["007", "8", "8"],
            "species": ["a", "b", "c"],
        }
    )
    typed = mixed.model_frame(frame)
    assert list(typed.columns) == ["mass", "island", "code", "adult"]
    assert typed["mass"].dtype == np.float64 and np.isnan(typed["mass"][1]) and typed["mass"][2] == 3.0
    assert typed["island"].tolist() == ["x", "", "y"]
    assert typed["code"].tolist() == ["007", "8", "8"]
    assert typed["adult"][0] == 1.0 and np.isnan(typed["adult"][1]) and typed["adult"][2] == 0.0
    assert mixed.target_series(frame).tolist() == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("island", ["x", "z", "y"], r"column 'island', row 1: 'z' is not one of its categories \('x', 'y'\)"),
        ("code", ["007", None, "8"], "column 'code', row 1: missing, and it may not be"),
        ("mass", [1.0, "heavy", 2.0], "column 'mass', row 1: 'heavy' is not a number"),
        ("adult", [True, "maybe", False], "column 'adult': 'maybe' is not a boolean"),
    ],
)
def test_model_frame_refuses_what_the_contract_does_not_allow(mixed, column, values, message):
    frame = pd.DataFrame(
        {"mass": [1.0, 2.0, 3.0], "island": ["x", "y", "x"], "code": ["8"] * 3, "adult": [True] * 3}
    )
    frame[column] = values
    with pytest.raises(ContractError, match=message):
        mixed.model_frame(frame)


def test_integer_classes_read_from_booleans_and_refuse_fractions():
    contract = load_contract(REPO / "contract.yaml")
    assert contract.target_series(pd.DataFrame({"target": [True, False]})).tolist() == [1, 0]
    with pytest.raises(ContractError, match="not integer classes"):
        contract.target_series(pd.DataFrame({"target": [0.5, 1.0]}))
