"""The MLflow model of a bundle: a pyfunc whose `predict` answers what Sluice serves.

The `package` stage logs each bundle as an MLflow model from this file ("models from code": the file is
stored with the model and run at load, so nothing is pickled) with the bundle as its one artifact, and
registers that model. So `models:/name/3` means the same bundle to Sluice and to MLflow's own tools:
`mlflow models serve -m models:/name/3 --env-manager local` answers class probabilities (one column per
class, named by its label) for a classifier, and the predicted value (column `prediction`) for a
regression, from the same ONNX graph `sluice serve` runs, on rows checked against the same signature
(a category it does not list, or a null where none is allowed, is refused).
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

BUNDLE_ARTIFACT = "bundle"


class BundleModel(PythonModel):
    def load_context(self, context: Any) -> None:
        from model.bundle import Bundle

        self.open(Bundle.open(context.artifacts[BUNDLE_ARTIFACT]))

    def open(self, bundle: Any) -> BundleModel:
        import onnxruntime as ort

        self.bundle = bundle
        self.session = ort.InferenceSession(str(bundle.onnx_path), providers=["CPUExecutionProvider"])
        return self

    # A DataFrame hint is one MLflow accepts without deriving a schema from it: the logged signature is the
    # schema (MLflow converts JSON requests to a DataFrame and checks its columns' types first).
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        import numpy as np
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from model.bundle import onnx_feeds
        from model.contract import ContractError, typed_frame

        signature = self.bundle.signature
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        try:
            typed = typed_frame(frame.reset_index(drop=True), signature.features, "request")
        except ContractError as e:
            # MLflow's scoring server answers an INVALID_PARAMETER_VALUE error with a 400, as Sluice does.
            raise MlflowException(str(e), error_code=INVALID_PARAMETER_VALUE) from None
        outputs = self.session.run(signature.onnx_outputs, onnx_feeds(signature, typed))
        if not signature.is_classifier:
            return pd.DataFrame({"prediction": np.asarray(outputs[0], dtype=np.float64).reshape(-1)})
        probabilities = np.asarray(outputs[1], dtype=np.float64)
        return pd.DataFrame(probabilities, columns=[str(c) for c in signature.classes])


mlflow.models.set_model(BundleModel())
