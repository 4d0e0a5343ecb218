"""seldon-core's own SeldonClient through the router, as users point it at an ingress or at Seldon's gateway.

`gateway="seldon"` calls /api/v1.0/predictions; `gateway="istio"` calls the ingress form
/seldon/<namespace>/<deployment>/api/v1.0/predictions. Both send feedback built from the answer they got,
which must reach the predictor that answered.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from up_harness import RunningRuntime, metric_samples, predictor

from model.bundle import Bundle
from serving.local.processes import serving_command

pytestmark = pytest.mark.timeout(180)


@pytest.fixture()
def two_models(
    up: Callable[..., RunningRuntime], bundle_dir: Path, rf_bundle_dir: Path
) -> tuple[RunningRuntime, dict[str, str]]:
    bundles = [Bundle.open(p, verify=False) for p in (bundle_dir, rf_bundle_dir)]
    names = {f"m-{b.short_digest}": b.digest for b in bundles}
    rt = up(
        [predictor(name, 50, b.path, b.digest) for name, b in zip(names, bundles, strict=True)],
        command=serving_command,
    )
    return rt, names


@pytest.mark.parametrize("gateway", ["seldon", "istio"])
def test_seldon_client_predicts_and_sends_feedback_through_the_router(
    two_models: tuple[RunningRuntime, dict[str, str]], test_rows: pd.DataFrame, gateway: str
) -> None:
    from seldon_core.seldon_client import SeldonClient

    rt, names = two_models
    client = SeldonClient(
        gateway=gateway,
        transport="rest",
        gateway_endpoint=rt.url.removeprefix("http://"),
        deployment_name="sd",
        namespace="sluice",
        client_return_type="proto",
    )
    answered: Counter[str] = Counter()
    X = test_rows.to_numpy()
    for i in range(12):
        result = client.predict(data=X[i : i + 1], payload_type="ndarray", names=list(test_rows.columns))
        assert result.success, result.msg
        response = result.response
        who = response.meta.tags["sluice_predictor"].string_value
        assert who in names
        assert response.meta.requestPath["classifier"] == names[who]  # the model that answered says so
        assert np.isclose(
            sum(response.data.ndarray.values[0].list_value.values[j].number_value for j in range(2)), 1.0
        )
        feedback = client.feedback(
            prediction_request=result.request, prediction_response=response, reward=1.0
        )
        assert feedback.success, feedback.msg
        answered[who] += 1
    text = rt.metrics()
    feedback_counts = {
        labels["predictor_name"]: value
        for labels, value in metric_samples(text, "seldon_api_model_feedback_total")
    }
    assert feedback_counts == {name: float(n) for name, n in answered.items()}
    served = {
        labels["predictor_name"]: value
        for labels, value in metric_samples(text, "seldon_api_executor_server_requests_seconds_count")
        if labels["service"] == "predictions"
    }
    assert served == {name: float(n) for name, n in answered.items()}  # feedback never counted as serving


def test_an_ingress_path_naming_another_deployment_is_404(
    two_models: tuple[RunningRuntime, dict[str, str]],
) -> None:
    from seldon_core.seldon_client import SeldonClient

    rt, _ = two_models
    client = SeldonClient(
        gateway="istio",
        transport="rest",
        gateway_endpoint=rt.url.removeprefix("http://"),
        deployment_name="another",
        namespace="sluice",
    )
    result = client.predict(data=np.zeros((1, 30)), payload_type="ndarray")
    assert not result.success and result.msg.startswith("404")
