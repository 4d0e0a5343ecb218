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

# The reconciler's own metrics (`sluice rollout reconcile --watch --metrics-port`): what the last tick read and
# decided, so Grafana and alert rules see rollouts, gates and the loop's heartbeat. Gauges unless noted.
ROLLOUT_INFO = "sluice_rollout_info"  # 1, labelled with strategy, candidate, stable, status
ROLLOUT_STAGE = "sluice_rollout_stage"  # index of the stage in the strategy's plan
ROLLOUT_STAGE_ENTERED = "sluice_rollout_stage_entered_timestamp_seconds"
ROLLOUT_DEADLINE = "sluice_rollout_stage_deadline_timestamp_seconds"  # by when the stage must have moved
ROLLOUT_WEIGHT = "sluice_rollout_weight"  # traffic per predictor, as in Git (a shadow's: its mirror share)
GATE_VERDICT = "sluice_gate_verdict"  # 1 for the gate's verdict at the last tick, 0 for the others
GATE_ESTIMATE = "sluice_gate_estimate"  # the compared value's estimate
GATE_LOW = "sluice_gate_interval_low"
GATE_HIGH = "sluice_gate_interval_high"
GATE_LIMIT = "sluice_gate_limit"  # the edge the gate's threshold (and margin) sets on the compared value
RECONCILER_LAST_TICK = "sluice_reconciler_last_tick_timestamp_seconds"  # the heartbeat
RECONCILER_TICK_INTERVAL = "sluice_reconciler_tick_interval_seconds"
RECONCILER_TICK_FAILURES = "sluice_reconciler_tick_failures"  # counter: ticks that failed and are retried
RECONCILER_DECISIONS = "sluice_reconciler_decisions"  # counter: decisions written to Git, by action
# Model monitoring's drift score per feature (0 = same distribution as training): the name its exporter is to
# use; the alert rules and the Grafana dashboard read it, and show no data until it exists.
DRIFT_SCORE = "sluice_drift_score"
# The router's prediction log (counters): records written by kind, records dropped by reason.
PREDICTION_LOG_RECORDS = "sluice_prediction_log_records"
PREDICTION_LOG_DROPPED = "sluice_prediction_log_dropped"
# `sluice monitor` (gauges, labelled namespace, deployment_name, predictor_name): the predicted labels' drift
# against the target's reference, live accuracy (or, for a regression, mean absolute error) on joined feedback,
# the records read and labels joined or late, and when the last report was computed.
PREDICTION_DRIFT = "sluice_prediction_drift_score"
LIVE_ACCURACY = "sluice_live_accuracy"
LIVE_ERROR = "sluice_live_mean_absolute_error"
MONITOR_RECORDS = "sluice_monitor_records"
MONITOR_LABELS = "sluice_monitor_labels"  # by `state`: joined, late, unmatched
MONITOR_LAST_RUN = "sluice_monitor_last_run_timestamp_seconds"
# `sluice loop --metrics-port` (labelled namespace, environment): when its last turn ended, how many turns in a
# row failed (0 after one that worked), and its turns by the step they did (a counter: waiting, data, trained,
# rejected, promoted, error, chain-...).
LOOP_LAST_TURN = "sluice_loop_last_turn_timestamp_seconds"
LOOP_FAILURES = "sluice_loop_consecutive_failures"
LOOP_TURNS = "sluice_loop_turns"

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
ENVIRONMENT = "environment"
STRATEGY = "strategy"
CANDIDATE = "candidate"
STABLE = "stable"
STATUS = "status"
SHADOW = "shadow"
GATE = "gate"
GATE_METRIC = "metric"
VERDICT = "verdict"
ACTION = "action"
FEATURE = "feature"
LOOP_STEP = "step"

# Values of the `service` label (Seldon executor's PredictionHttpServiceName, FeedbackHttpServiceName)
SERVICE_PREDICTIONS = "predictions"
SERVICE_FEEDBACK = "feedback"


def total(counter: str) -> str:
    """The exposed series of a counter family: `name_total`."""
    return counter + "_total"
