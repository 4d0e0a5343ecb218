"""How a bundle's ONNX graph takes validated rows and what its outputs mean.

For the predictor core and the edge runtime alike: numpy only, and the signature as signature.json holds it
(a mapping). Layout `matrix`: one float32 tensor [rows, features]. Layout `columns` (a model with text
features): one [rows, 1] tensor per feature, float32 or string. A classifier answers a label and each
class's probability; a regression one value per row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np


class Prediction(NamedTuple):
    """One answer per input row.

    A classifier: the label, and the probability of each class (signature order). A regression: the
    predicted value in `labels`, and the same values as one column in `probabilities` (the matrix the
    protocols answer with, and what `check_answer` checks).
    """

    labels: np.ndarray
    probabilities: np.ndarray


class OnnxGraph:
    """A signature's view of its ONNX graph: the inputs to feed, the outputs to ask for, how to read them."""

    def __init__(self, signature: Mapping[str, Any]):
        features = list(signature.get("features") or [])
        self.layout = str(signature.get("layout", "matrix"))
        self.classifier = str(signature.get("task", "binary")) != "regression"
        outputs = [str(o) for o in signature.get("onnx_outputs") or ["label", "probabilities"]]
        self.outputs = outputs[:2] if self.classifier else outputs[:1]
        if self.layout == "matrix":
            self.input = str(signature.get("onnx_input", "input"))
            self.inputs: list[tuple[str, bool]] = []
        elif self.layout == "columns":
            names = [str(i) for i in signature.get("onnx_inputs") or []]
            if len(names) != len(features):
                raise ValueError(f"layout columns: {len(names)} ONNX inputs for {len(features)} features")
            self.inputs = [(name, _type(f) == "categorical") for name, f in zip(names, features, strict=True)]
        else:
            raise ValueError(f"layout {self.layout!r}: expected matrix or columns")

    def feeds(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Validated rows (Features.validate's output) -> ONNX Runtime's inputs."""
        if self.layout == "matrix":
            return {self.input: X.astype(np.float32, copy=False)}
        return {
            name: X[:, j : j + 1].astype(object if text else np.float32)
            for j, (name, text) in enumerate(self.inputs)
        }

    def answer(self, outputs: list[Any]) -> Prediction:
        if self.classifier:
            labels, probabilities = outputs
            return Prediction(labels if labels.ndim == 1 else labels.reshape(-1), probabilities)
        values = np.asarray(outputs[0], dtype=np.float64).reshape(-1)
        return Prediction(values, values.reshape(-1, 1))


def _type(feature: Any) -> str:
    return str(feature.get("type", "numeric") if isinstance(feature, Mapping) else "numeric")
