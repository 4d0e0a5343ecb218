"""Metric names and labels: what the router exports and what the gates read, on one machine and in a cluster.

The names and label names are those of Seldon Core v1's executor, so one gate definition reads a local
scrape of `sluice up` and Prometheus scraping Seldon's executors alike. Counter families are named without
their `_total` suffix (as prometheus_client declares them); `total(name)` gives the exposed series.

Every series carries `namespace` and `deployment_name`: two environments run the same deployment and
predictor names, and their series must never mix. `service` separates predictions from feedback with the
values Seldon's executor uses (`predictions`, `feedback`, whichever path or protocol carried them), so serving
figures never count feedback.
"""

from __future__ import annotations

# Seldon executor (histograms: _bucket, _count, _sum; counters: _total)
SERVER_REQUESTS = "seldon_api_executor_server_requests_seconds"
CLIENT_REQUESTS = "seldon_api_executor_client_requests_seconds"
FEEDBACK = "seldon_api_model_feedback"
FEEDBACK_REWARD = "seldon_api_model_feedback_reward"

# Sluice additions
SHADOW_COMPARISONS = "sluice_shadow_comparisons"
SHADOW_DISAGREEMENTS = "sluice_shadow_disagreements"
SHADOW_DROPPED = "sluice_shadow_dropped"
RETRIES = "sluice_gateway_retries"

# Label names
NAMESPACE = "namespace"
DEPLOYMENT = "deployment_name"
PREDICTOR = "predictor_name"
PREDICTOR_VERSION = "predictor_version"
MODEL = "model_name"
MODEL_IMAGE = "model_image"
MODEL_VERSION = "model_version"
SERVICE = "service"
METHOD = "method"
CODE = "code"

# Values of the `service` label (Seldon executor's PredictionHttpServiceName, FeedbackHttpServiceName)
SERVICE_PREDICTIONS = "predictions"
SERVICE_FEEDBACK = "feedback"


def total(counter: str) -> str:
    """The exposed series of a counter family: `name_total`."""
    return counter + "_total"
