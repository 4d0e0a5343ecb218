from pathlib import Path

import pytest
import yaml

from model.contract import load_contract
from model.params import ChampionPin, ParamsError, check_task, load_params, update_params, write_champion

REPO = Path(__file__).resolve().parents[2]


def test_repository_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.data.source == "builtin:breast_cancer"
    assert params.train.model in {"logistic_regression", "random_forest"}
    assert params.evaluate.champion is None
    assert params.registry.register_experiments is False
    check_task(params, load_contract(REPO / "contract.yaml"), Path("params.yaml"), Path("contract.yaml"))


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [
        ("train:\n  model: xgboost\n", "train.model", "'xgboost'"),
        ("data:\n  test_size: 1.5\n", "data.test_size", "1.5"),
        ("evaluate:\n  tolerance: -1\n", "evaluate.tolerance", "-1"),
        ("validate:\n  quantile_tolerance: 0\n", "validate.quantile_tolerance", "0"),
        ("train:\n  modle: random_forest\n", "train.modle", "random_forest"),
        ("data:\n  source: builtin:titanic\n", "data.source", "titanic"),
        ("data:\n  source: /etc/passwd.csv\n", "data.source", "/etc/passwd.csv"),
        ("data:\n  source: data/source/../../x.csv\n", "data.source", "without `..`"),
        ("data:\n  source: data/other/x.csv\n", "data.source", "under data/source/"),
        ("data:\n  source: data/source/x.xlsx\n", "data.source", ".csv or .parquet"),
        ("evaluate:\n  champion: {version: '1', digest: nope}\n", "evaluate.champion.digest", "nope"),
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


def test_bundles_packaged_before_data_source_still_read():
    from model.params import DataParams

    assert (
        DataParams.model_validate({"dataset": "breast_cancer", "seed": 1}).source == "builtin:breast_cancer"
    )


def test_params_that_do_not_fit_the_task_name_both_files(tmp_path):
    params = load_params(REPO / "params.yaml")
    regression = load_contract(REPO / "contract.yaml").model_copy(deep=True)
    regression.target.task = "regression"
    with pytest.raises(
        ParamsError,
        match=r"params.yaml: field train.model: logistic_regression .* task regression \(c.yaml\); use random_forest or ridge",
    ):
        check_task(params, regression, Path("params.yaml"), Path("c.yaml"))
    params.train.model = "ridge"
    with pytest.raises(ParamsError, match=r"evaluate.gate_metric: roc_auc is not a regression metric"):
        check_task(params, regression, Path("params.yaml"), Path("c.yaml"))


def test_pinning_the_champion_keeps_comments_and_reads_back(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    pin = ChampionPin(version="3", digest="sha256:" + "a" * 64)
    assert write_champion(path, pin).evaluate.champion == pin
    text = path.read_text()
    assert "# Parameters of the training pipeline" in text and "# builtin:breast_cancer (the default)" in text
    assert yaml.safe_load(text)["evaluate"]["champion"] == {"version": "3", "digest": pin.digest}
    assert write_champion(path, None).evaluate.champion is None


def test_an_update_that_breaks_params_is_rolled_back(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    before = path.read_text()
    with pytest.raises(ParamsError, match="data.source"):
        update_params(path, {"data.source": "../../etc/passwd.csv"})
    assert path.read_text() == before
