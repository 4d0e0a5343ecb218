from pathlib import Path

import pytest

from model.params import ParamsError, load_params

REPO = Path(__file__).resolve().parents[3]


def test_repository_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.train.model in {"logistic_regression", "random_forest"}
    assert params.validate_.class_balance[0] < params.validate_.class_balance[1]


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [
        ("train:\n  model: xgboost\n", "train.model", "'xgboost'"),
        ("data:\n  test_size: 1.5\n", "data.test_size", "1.5"),
        ("evaluate:\n  tolerance: -1\n", "evaluate.tolerance", "-1"),
        ("validate:\n  class_balance: [0.9, 0.1]\n", "validate", "class_balance"),
        ("train:\n  modle: random_forest\n", "train.modle", "random_forest"),
    ],
)
def test_bad_params_name_file_field_and_value(tmp_path, text, field, value):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError) as err:
        load_params(path)
    message = str(err.value)
    assert str(path) in message
    assert field in message
    assert value in message


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
