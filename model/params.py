"""params.yaml, typed: the knobs of the training pipeline, validated before any stage does work."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ParamsError(ValueError):
    """params.yaml is missing, malformed, or has a field with a wrong value."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataParams(_Strict):
    dataset: Literal["breast_cancer"] = "breast_cancer"
    test_size: float = Field(0.25, gt=0.0, lt=1.0)
    seed: int = 42
    # Fraction of training labels flipped at random: lets a demo or a test produce a deliberately bad model.
    label_noise: float = Field(0.0, ge=0.0, le=1.0)


class ValidateParams(_Strict):
    min_rows: int = Field(100, ge=1)
    max_null_fraction: float = Field(0.0, ge=0.0, le=1.0)
    class_balance: tuple[float, float] = (0.2, 0.8)

    @model_validator(mode="after")
    def _ordered(self) -> ValidateParams:
        lo, hi = self.class_balance
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"class_balance must be [low, high] with 0 <= low < high <= 1, got {[lo, hi]}")
        return self


class LogisticRegressionParams(_Strict):
    C: float = Field(1.0, gt=0.0)
    max_iter: int = Field(1000, ge=1)


class RandomForestParams(_Strict):
    n_estimators: int = Field(100, ge=1)
    max_depth: int | None = Field(8, ge=1)
    min_samples_leaf: int = Field(1, ge=1)


class TrainParams(_Strict):
    model: Literal["logistic_regression", "random_forest"] = "logistic_regression"
    seed: int = 42
    logistic_regression: LogisticRegressionParams = LogisticRegressionParams()
    random_forest: RandomForestParams = RandomForestParams()


class EvaluateParams(_Strict):
    gate_metric: Literal["roc_auc", "accuracy", "f1", "log_loss"] = "roc_auc"
    # The candidate may be worse than the champion by at most this much on gate_metric.
    tolerance: float = Field(0.01, ge=0.0)
    # ONNX parity checked at packaging time on the test split.
    onnx_tolerance: float = Field(1e-4, gt=0.0)


class RegistryParams(_Strict):
    model_name: str = Field("sluice-classifier", min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


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
