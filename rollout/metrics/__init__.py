"""Metric providers: where observations come from. The engine sees only the `MetricProvider` Protocol.

Both providers read the metric names and labels of Seldon's executor, which the local gateway exports too:
`seldon_api_executor_server_requests_seconds_{bucket,count,sum}` and `seldon_api_model_feedback_total`,
`seldon_api_model_feedback_reward_total` (labels deployment_name, predictor_name, model_name, code), plus
`sluice_shadow_comparisons_total` / `sluice_shadow_disagreements_total` (label predictor_name).
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
        """Counts per predictor over the last `window` seconds; with `since`, also totals over that many
        seconds (Observations.stage, for A/B tests); `custom` maps gate names to PromQL templates. `namespace`
        is the environment's (the manifest's metadata.namespace): two environments run the same deployment
        and predictor names, and only the namespace tells their series apart."""
        ...
