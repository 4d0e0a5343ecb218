"""`sluice model profile`'s inference: types, nullability, categories, the task, bounds and the reference."""

import numpy as np
import pandas as pd
import pytest
from sample_tables import SPECIES, penguins

from model.contract import ContractError
from model.datasets import read_source
from model.profile import profile


def test_a_mixed_table_is_profiled_type_by_type():
    contract = profile(penguins(), "species", drop=["penguin_id"], source="data/source/penguins.csv")
    assert contract.task == "multiclass" and contract.classes == list(SPECIES)
    assert contract.ignored == ["penguin_id"] and contract.layout == "columns"
    types = {f.name: (f.type, f.nullable) for f in contract.features}
    assert types == {
        "bill_length_mm": ("numeric", True),
        "flipper length": ("numeric", False),
        "body_mass_g": ("numeric", True),
        "island": ("categorical", True),
        "sex": ("categorical", True),
        "adult": ("boolean", True),
    }
    island = contract.feature("island")
    assert island.categories == ["Biscoe", "Dream", "Torgersen"]
    assert sum(island.reference.frequencies.values()) == pytest.approx(1.0, abs=1e-5)
    assert 0.02 < island.reference.null_fraction < 0.09
    assert set(contract.feature("adult").reference.frequencies) == {True, False}
    mass = contract.feature("body_mass_g")
    assert mass.bounds[0] == 0.0 and mass.bounds[1] > penguins()["body_mass_g"].max()
    q = mass.reference.quantiles
    assert list(q) == [0.05, 0.25, 0.5, 0.75, 0.95] and q[0.05] < q[0.5] < q[0.95]
    assert contract.profiled.rows == 600 and contract.profiled.source == "data/source/penguins.csv"


def test_builtin_sets_infer_their_tasks():
    from pathlib import Path

    diabetes = profile(read_source("builtin:diabetes", Path(".")), "target")
    assert diabetes.task == "regression" and diabetes.classes == [] and diabetes.target.bounds[0] == 0.0
    assert diabetes.feature("sex").type == "numeric"
    assert diabetes.feature("bmi").bounds[0] < 0  # scaled columns go negative: bounds below the minimum
    iris = profile(read_source("builtin:iris", Path(".")), "target")
    assert iris.task == "multiclass" and iris.classes == [0, 1, 2]


@pytest.mark.parametrize(
    ("values", "task", "classes"),
    [
        ([0, 1] * 10, "binary", [0, 1]),
        ([True, False] * 10, "binary", [0, 1]),
        (["yes", "no"] * 10, "binary", ["no", "yes"]),
        ([1, 2, 3, 4] * 5, "multiclass", [1, 2, 3, 4]),
        (list(np.linspace(0, 1, 20)), "regression", []),
        (list(range(40)), "regression", []),
    ],
)
def test_the_task_follows_the_target(values, task, classes):
    frame = pd.DataFrame({"x": np.arange(len(values), dtype=float), "y": values})
    contract = profile(frame, "y")
    assert (contract.task, contract.classes) == (task, classes)


def test_the_task_can_be_forced():
    frame = pd.DataFrame({"x": range(40), "y": list(range(4)) * 10})
    assert profile(frame, "y", task="regression").task == "regression"
    with pytest.raises(ContractError, match="task binary needs 2 classes"):
        profile(frame, "y", task="binary")


@pytest.mark.parametrize(
    ("frame", "kwargs", "message"),
    [
        (pd.DataFrame({"x": [1, 2]}), {"target": "y"}, "no target column 'y'"),
        (pd.DataFrame({"x": [1, 2], "y": [1, None]}), {"target": "y"}, "target 'y' is missing in 1 rows"),
        (
            pd.DataFrame({"id": [f"u{i}" for i in range(80)], "y": [0, 1] * 40}),
            {"target": "y"},
            r"column 'id' has 80 distinct text values .* \(--drop id\)",
        ),
        (
            pd.DataFrame({"x": [None, None], "z": [1, 2], "y": [0, 1]}),
            {"target": "y"},
            "column 'x' holds no values",
        ),
        (pd.DataFrame({"x": [1, 2], "y": [0, 1]}), {"target": "y", "drop": ["nope"]}, "cannot drop 'nope'"),
        (pd.DataFrame({"y": [0, 1]}), {"target": "y"}, "no feature columns"),
        (
            pd.DataFrame({"x": [1.0, 2.0], "y": ["a", "b"]}),
            {"target": "y", "task": "regression"},
            "not numeric",
        ),
    ],
)
def test_profile_refuses_what_it_cannot_turn_into_a_contract(frame, kwargs, message):
    with pytest.raises(ContractError, match=message):
        profile(frame, **kwargs)
