"""Metric providers: where observations come from. The engine sees only the `MetricProvider` Protocol.

Both providers read the metric names and labels of Seldon's executor, which the local gateway exports too:
`seldon_api_executor_server_requests_seconds_{bucket,count,sum}` and `seldon_api_model_feedback_total`,
`seldon_api_model_feedback_reward_total` (labels deployment_name, predictor_name, model_name, code), plus
`sluice_shadow_comparisons_total` / `sluice_shadow_disagreements_total` (label predictor_name).

Only prediction requests count toward request totals, errors and latency: the server-request histogram's
`service` label tells them from feedback (`predictions` and `feedback`, as Seldon's executor and the router
label them). A series without the label counts as predictions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from deployment import metric_names as names
from rollout.observations import Observations

REQUESTS = names.SERVER_REQUESTS
FEEDBACK = names.total(names.FEEDBACK)
REWARD = names.total(names.FEEDBACK_REWARD)
COMPARISONS = names.total(names.SHADOW_COMPARISONS)
DISAGREEMENTS = names.total(names.SHADOW_DISAGREEMENTS)

# The `service` values that are predictions (Seldon's executor and the router: "predictions" for every
# protocol's prediction path; "feedback", "status" and "metadata" are not).
PREDICTION_SERVICES: frozenset[str] = frozenset({names.SERVICE_PREDICTIONS})


def is_prediction(service: str | None) -> bool:
    """Whether a server-request series with this `service` label counts as predictions."""
    return service is None or service in PREDICTION_SERVICES


class MetricsError(RuntimeError):
    """A metric source that cannot be reached or answers something unreadable."""


class MetricProvider(Protocol):
    def observe(
        self,
        deployment: str,
        predictors: Sequence[str],
        window: float,
        custom: Mapping[str, str] | None = None,
        since: float | None = None,
        namespace: str | None = None,
    ) -> Observations:
        """Counts per predictor over the last `window` seconds; with `since`, also totals over the last `since`
        seconds, the time in the stage (Observations.stage, which the gates judge); `custom` maps names to
        PromQL templates (a promql gate's value and its sample). `namespace` is the environment's (the
        manifest's metadata.namespace): two environments run the same deployment and predictor names, and only
        the namespace tells their series apart."""
        ...
