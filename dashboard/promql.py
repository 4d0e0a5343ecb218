"""The PromQL behind every figure: the dashboard's live figures (against Prometheus), the Grafana panels and the
alert rules are all built here, from the metric names of deployment/metric_names.py.

Every selector names the environment's namespace: staging and production run the same deployment and
predictor names, and only `namespace` tells their series apart. A `Scope` holds the values a query selects,
either literal (the dashboard's own queries, quoted as PromQL strings) or Grafana variables (`$namespace`).
"""

from __future__ import annotations

from dataclasses import dataclass

from deployment import metric_names as n

REQUESTS = n.SERVER_REQUESTS
FEEDBACK = n.total(n.FEEDBACK)
REWARD = n.total(n.FEEDBACK_REWARD)
COMPARISONS = n.total(n.SHADOW_COMPARISONS)
DISAGREEMENTS = n.total(n.SHADOW_DISAGREEMENTS)

# Series of the server-request histogram that are feedback, not predictions (Seldon's executor labels them
# `feedback`, the local router with the request path): serving figures never count them.
FEEDBACK_SERVICES = "feedback|.*/feedback"


def string(value: str) -> str:
    """A PromQL double-quoted string literal holding exactly `value`."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@dataclass(frozen=True)
class Scope:
    """What a query selects: one environment's namespace and deployment, as values or as Grafana variables."""

    namespace: str
    deployment: str | None = None
    variables: bool = False  # the values are Grafana template variables, written as they are
    pattern: bool = False  # `namespace` is a regular expression (alert rules over every environment)

    @classmethod
    def grafana(cls) -> Scope:
        return cls("$namespace", "$deployment", variables=True)

    def _value(self, v: str) -> str:
        return f'"{v}"' if self.variables else string(v)

    def selector(self, *extra: str, deployment: bool = True) -> str:
        """`{namespace="...",deployment_name="...",extra...}`."""
        op = "=~" if self.pattern else "="
        parts = [f"{n.NAMESPACE}{op}{self._value(self.namespace)}"]
        if deployment and self.deployment is not None:
            parts.append(f"{n.DEPLOYMENT}={self._value(self.deployment)}")
        parts += extra
        return "{" + ",".join(parts) + "}"


# Prediction requests only: the server-request histogram counts feedback too (service="feedback").
PREDICTIONS = f'{n.SERVICE}="{n.SERVICE_PREDICTIONS}"'
ERRORS = f'{n.CODE}=~"5.."'
BY = f"sum by ({n.PREDICTOR})"


# live figures, one series per predictor ------------------------------------------------------------------
def requests_per_second(s: Scope, window: str) -> str:
    return f"{BY} (rate({REQUESTS}_count{s.selector(PREDICTIONS)}[{window}]))"


def error_ratio(s: Scope, window: str) -> str:
    """5xx over all prediction requests; 0 (not no data) for a predictor that never failed."""
    errors = f"{BY} (rate({REQUESTS}_count{s.selector(PREDICTIONS, ERRORS)}[{window}]))"
    requests = requests_per_second(s, window)
    return f"({errors} or {requests} * 0) / {requests}"


def latency_quantile(s: Scope, q: float, window: str) -> str:
    buckets = f"sum by ({n.PREDICTOR}, le) (rate({REQUESTS}_bucket{s.selector(PREDICTIONS)}[{window}]))"
    return f"histogram_quantile({q:g}, {buckets})"


def feedback_per_second(s: Scope, window: str) -> str:
    return f"{BY} (rate({FEEDBACK}{s.selector()}[{window}]))"


def accuracy(s: Scope, window: str) -> str:
    """Mean reward per feedback: accuracy, when feedback rewards 1 for a right answer and 0 for a wrong one."""
    return f"{BY} (rate({REWARD}{s.selector()}[{window}])) / {feedback_per_second(s, window)}"


def disagreement(s: Scope, window: str) -> str:
    """Share of a shadow's answers that differ from the live model's."""
    compared = f"{BY} (rate({COMPARISONS}{s.selector()}[{window}]))"
    return f"{BY} (rate({DISAGREEMENTS}{s.selector()}[{window}])) / {compared}"


# the reconciler's own metrics ------------------------------------------------------------------------------
def weights(s: Scope) -> str:
    return f"max by ({n.PREDICTOR}) ({n.ROLLOUT_WEIGHT}{s.selector()})"


def stage(s: Scope) -> str:
    return f"max({n.ROLLOUT_STAGE}{s.selector()})"


def time_in_stage(s: Scope) -> str:
    return f"time() - max({n.ROLLOUT_STAGE_ENTERED}{s.selector()})"


def deadline_in(s: Scope) -> str:
    return f"max({n.ROLLOUT_DEADLINE}{s.selector()}) - time()"


def since_last_tick(s: Scope) -> str:
    return f"time() - max({n.RECONCILER_LAST_TICK}{s.selector(deployment=False)})"


def loop_failures(s: Scope) -> str:
    return f"max({n.LOOP_FAILURES}{s.selector(deployment=False)})"


def since_last_turn(s: Scope) -> str:
    return f"time() - max({n.LOOP_LAST_TURN}{s.selector(deployment=False)})"


def loop_turns(s: Scope, window: str) -> str:
    return (
        f"sum by ({n.LOOP_STEP}) (increase({n.total(n.LOOP_TURNS)}{s.selector(deployment=False)}[{window}]))"
    )


def gate_field(s: Scope, metric: str) -> str:
    return f"max by ({n.GATE}, {n.VERDICT}) ({metric}{s.selector()})"


def gate_verdicts(s: Scope) -> str:
    return f"max by ({n.GATE}, {n.VERDICT}) ({n.GATE_VERDICT}{s.selector()} == 1)"


def decisions(s: Scope, window: str) -> str:
    return f"sum by ({n.ACTION}) (increase({n.total(n.RECONCILER_DECISIONS)}{s.selector()}[{window}]))"


def drift(s: Scope) -> str:
    return (
        f"max by ({n.NAMESPACE}, {n.DEPLOYMENT}, {n.PREDICTOR}, {n.FEATURE}) ({n.DRIFT_SCORE}{s.selector()})"
    )


def _per_predictor(metric: str, s: Scope) -> str:
    return f"max by ({n.PREDICTOR}) ({metric}{s.selector()})"


def prediction_drift(s: Scope) -> str:
    return _per_predictor(n.PREDICTION_DRIFT, s)


def live_accuracy(s: Scope) -> str:
    return _per_predictor(n.LIVE_ACCURACY, s)


def live_error(s: Scope) -> str:
    return _per_predictor(n.LIVE_ERROR, s)
