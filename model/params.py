"""params.yaml, typed: the knobs of the training pipeline, validated before any stage does work."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from deployment.names import DIGEST
from model.datasets import BUILTIN_PREFIX, check_source

if TYPE_CHECKING:
    from model.contract import Contract


class ParamsError(ValueError):
    """params.yaml is missing, malformed, or has a field with a wrong value."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataParams(_Strict):
    # builtin:<name> (a set shipped inside scikit-learn) or a CSV/Parquet file under data/source/.
    source: str = BUILTIN_PREFIX + "breast_cancer"
    test_size: float = Field(0.25, gt=0.0, lt=1.0)
    seed: int = 42
    # Fraction of training labels replaced at random: lets a demo or a test produce a deliberately bad model.
    label_noise: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="before")
    @classmethod
    def _dataset(cls, data: Any) -> Any:
        # Bundles packaged before `source` existed record `dataset: breast_cancer`.
        if isinstance(data, dict) and "dataset" in data and "source" not in data:
            data = dict(data)
            data["source"] = BUILTIN_PREFIX + str(data.pop("dataset"))
        return data

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        problem = check_source(value)
        if problem:
            raise ValueError(problem)
        return value

    @property
    def builtin(self) -> str | None:
        return self.source.removeprefix(BUILTIN_PREFIX) if self.source.startswith(BUILTIN_PREFIX) else None


class ValidateParams(_Strict):
    min_rows: int = Field(100, ge=1)
    # A numeric column's 5/25/50/75/95 % quantiles may move by this share of its reference 5-95 % range
    # (a unit change moves them by far more).
    quantile_tolerance: float = Field(0.25, gt=0.0)
    # Categories' (and classes') frequencies against the reference: KL divergence at most this.
    max_kl_divergence: float = Field(0.1, gt=0.0)
    # A nullable column may have this much more of its rows missing than the reference had.
    null_tolerance: float = Field(0.05, ge=0.0, le=1.0)


class LogisticRegressionParams(_Strict):
    C: float = Field(1.0, gt=0.0)
    max_iter: int = Field(1000, ge=1)


class RandomForestParams(_Strict):
    n_estimators: int = Field(100, ge=1)
    max_depth: int | None = Field(8, ge=1)
    min_samples_leaf: int = Field(1, ge=1)


class RidgeParams(_Strict):
    alpha: float = Field(1.0, ge=0.0)


ModelKind = Literal["logistic_regression", "ridge", "random_forest"]
# Which estimators fit which task: a classifier's params on a regression contract is refused.
CLASSIFIERS: frozenset[str] = frozenset({"logistic_regression", "random_forest"})
REGRESSORS: frozenset[str] = frozenset({"ridge", "random_forest"})


class TrainParams(_Strict):
    model: ModelKind = "logistic_regression"
    seed: int = 42
    logistic_regression: LogisticRegressionParams = LogisticRegressionParams()
    ridge: RidgeParams = RidgeParams()
    random_forest: RandomForestParams = RandomForestParams()


GateMetric = Literal["roc_auc", "accuracy", "f1", "macro_f1", "log_loss", "rmse", "mae", "r2"]
# Which metrics each task reports (and so may gate on).
TASK_METRICS: dict[str, frozenset[str]] = {
    "binary": frozenset({"roc_auc", "accuracy", "f1", "macro_f1", "log_loss"}),
    "multiclass": frozenset({"accuracy", "macro_f1", "log_loss"}),
    "regression": frozenset({"rmse", "mae", "r2"}),
}


class ChampionPin(_Strict):
    """The model version the evaluate gate compares against, pinned so `dvc repro` depends on it."""

    version: str = Field(pattern=r"^[0-9]+$")
    digest: str = Field(pattern=DIGEST.pattern)


class EvaluateParams(_Strict):
    gate_metric: GateMetric = "roc_auc"
    # The candidate may be worse than the champion by at most this much on gate_metric (in its units).
    tolerance: float = Field(0.01, ge=0.0)
    # ONNX parity checked at packaging time on the test split: probabilities (or, for a regression,
    # predictions relative to max(1, |value|)) within this.
    onnx_tolerance: float = Field(1e-4, gt=0.0)
    # Written by `sluice model champion --pin` (and promote-alias); null: no champion, the gate passes.
    champion: ChampionPin | None = None


class RegistryParams(_Strict):
    model_name: str = Field("sluice-classifier", min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    # `dvc exp run` trains and packages but registers no model version unless this is true.
    register_experiments: bool = False


class Params(_Strict):
    data: DataParams = DataParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    registry: RegistryParams = RegistryParams()

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise ParamsError(f"{path}: not found") from e
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from e
    try:
        return Params.model_validate(raw or {})
    except ValidationError as e:
        problems = []
        for err in e.errors():
            field = ".".join(str(x) for x in err["loc"])
            problems.append(f"{path}: field {field}: {err['msg']} (got {err.get('input')!r})")
        raise ParamsError("\n".join(problems)) from e


def check_task(params: Params, contract: Contract, params_path: Path, contract_path: Path) -> None:
    """Refuse params that do not fit the contract's task, naming both files."""
    task = contract.task
    model = params.train.model
    fits = CLASSIFIERS if contract.is_classifier else REGRESSORS
    if model not in fits:
        raise ParamsError(
            f"{params_path}: field train.model: {model} does not fit task {task} ({contract_path}); "
            f"use {' or '.join(sorted(fits))}"
        )
    metric = params.evaluate.gate_metric
    if metric not in TASK_METRICS[task]:
        raise ParamsError(
            f"{params_path}: field evaluate.gate_metric: {metric} is not a {task} metric ({contract_path}); "
            f"use one of {', '.join(sorted(TASK_METRICS[task]))}"
        )


def update_params(path: str | Path, changes: dict[str, Any]) -> Params:
    """Set dotted keys (`evaluate.champion`, `data.source`) in params.yaml, keeping its comments and layout."""
    from ruamel.yaml import YAML

    path = Path(path)
    yaml_rt = YAML()
    yaml_rt.preserve_quotes = True
    yaml_rt.width = 120
    try:
        doc = yaml_rt.load(path.read_text())
    except FileNotFoundError as e:
        raise ParamsError(f"{path}: not found") from e
    doc = doc if doc is not None else {}
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = doc
        for key in parents:
            if node.get(key) is None:
                node[key] = {}
            node = node[key]
        node[leaf] = value
    text = path.read_text()
    with path.open("w") as f:
        yaml_rt.dump(doc, f)
    try:
        return load_params(path)  # what was written reads back
    except ParamsError:
        path.write_text(text)
        raise


def write_champion(path: str | Path, pin: ChampionPin | None) -> Params:
    """Pin (or clear) the champion the evaluate gate compares against."""
    return update_params(path, {"evaluate.champion": None if pin is None else pin.model_dump()})
