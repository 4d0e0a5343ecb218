"""Task-aware metrics: what `train` and `evaluate` report, and what the evaluate gate may compare.

- binary: accuracy, roc_auc, f1, precision, recall (of the second class), macro_f1, log_loss
- multiclass: accuracy, macro_f1, log_loss
- regression: rmse, mae, r2
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from model.contract import Task

# Metrics where a smaller value is better: the gate's direction flips for them.
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae"})


@dataclass
class Predictions:
    """A model's answers on a split: labels (or values) and, for a classifier, probabilities per class."""

    values: np.ndarray
    probabilities: np.ndarray | None
    classes: list[Any]


def predict(model: Any, X: pd.DataFrame, task: Task) -> Predictions:
    if task == "regression":
        return Predictions(np.asarray(model.predict(X), dtype=np.float64).reshape(-1), None, [])
    probabilities = np.asarray(model.predict_proba(X))
    classes = list(model.classes_)
    return Predictions(
        np.asarray(classes, dtype=object)[probabilities.argmax(axis=1)], probabilities, classes
    )


def score(task: Task, y: pd.Series, predictions: Predictions) -> dict[str, float]:
    from sklearn import metrics as m

    if task == "regression":
        err = predictions.values - y.to_numpy(dtype=np.float64)
        return {
            "rmse": float(np.sqrt(np.mean(err**2))),
            "mae": float(np.mean(np.abs(err))),
            "r2": float(m.r2_score(y, predictions.values)),
        }
    assert predictions.probabilities is not None
    truth = y.to_numpy()
    labels = predictions.values.astype(truth.dtype) if truth.dtype != object else predictions.values
    proba = np.clip(predictions.probabilities, 1e-15, 1 - 1e-15)
    out = {
        "accuracy": float(m.accuracy_score(truth, labels)),
        "macro_f1": float(
            m.f1_score(truth, labels, average="macro", labels=predictions.classes, zero_division=0)
        ),
        "log_loss": float(m.log_loss(truth, proba, labels=predictions.classes)),
    }
    if task == "binary":
        positive = predictions.classes[1]
        out |= {
            "roc_auc": float(m.roc_auc_score(truth == positive, predictions.probabilities[:, 1])),
            "f1": float(m.f1_score(truth, labels, pos_label=positive, zero_division=0)),
            "precision": float(m.precision_score(truth, labels, pos_label=positive, zero_division=0)),
            "recall": float(m.recall_score(truth, labels, pos_label=positive, zero_division=0)),
        }
    return out
