"""The reconciler's own Prometheus metrics: what its last tick read and decided, and when it last ticked.

`sluice rollout reconcile --watch --metrics-port PORT` serves them, so that Grafana shows the rollout (stage,
weights, gates) next to the traffic, and alert rules see a rollout stuck past its deadline, a gate failing
and a loop that stopped ticking. The gauges are rendered from the last tick at each scrape (a gate or a
predictor that is gone leaves no stale series); counters count failures and the decisions written to Git.
Every series carries the environment's namespace (the manifest's metadata.namespace), like the serving
metrics it sits beside. Metric and label names: deployment/metric_names.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric

from deployment import metric_names as n
from rollout.policy import Policy
from rollout.state import Rollout

if TYPE_CHECKING:
    from rollout.run import Tick

VERDICTS = ("pass", "fail", "hold", "no-data-pass", "skip")


def stage_deadline(policy: Policy, rollout: Rollout) -> float | None:
    """By when the stage in `rollout` must have moved on, if the loop is ticking and Git accepts its writes.

    A stage that judges by gates moves once its bake time is over and its gates pass, or at the latest when
    the longest no-data wait of a holding gate runs out (the gate then fails, or passes, by its rule). An A/B
    test ends by its maximum duration. One observation window and two ticks are added for the last decision
    to be observed, made and written. None when the stage is not in the policy's plan.
    """
    from rollout.decision import current_step

    _, step = current_step(policy, rollout)
    if step is None:
        return None
    slack = policy.window + 2 * policy.interval + float(getattr(policy, "warmup", 0.0) or 0.0)
    if step.judge == "ab":
        return rollout.entered_at + policy.ab.max_duration + slack
    limit = getattr(getattr(policy, step.judge, None), "max_duration", None)
    if step.judge != "gates" and limit is not None:  # e.g. a bandit's maximum duration
        return rollout.entered_at + float(limit) + slack
    waits = [g.no_data_deadline for g in policy.gates if g.no_data == "hold"]
    return rollout.entered_at + max([step.bake, *waits]) + slack


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and x == x else None


@dataclass(frozen=True)
class _Last:
    """What the gauges show: the last tick's reading of Git and its decision."""

    at: float
    namespace: str
    environment: str
    deployment: str
    interval: float
    result: Any = None  # TickResult
    deadline: float | None = None


class ReconcilerMetrics:
    """A prometheus_client collector fed by the loop's `on_tick`; `serve()` exposes it over HTTP."""

    def __init__(
        self, env: str, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time
    ):
        self.env = env
        self.clock = clock
        self.registry = registry if registry is not None else CollectorRegistry()
        self._lock = threading.Lock()
        self._last: _Last | None = None
        self._namespace = ""
        self._deployment = ""
        self.failures = Counter(
            n.RECONCILER_TICK_FAILURES,
            "Ticks that failed and are retried with a back-off (Git, GitHub, Prometheus or a policy unreadable).",
            [n.NAMESPACE, n.ENVIRONMENT],
            registry=self.registry,
        )
        self.decisions = Counter(
            n.RECONCILER_DECISIONS,
            "Decisions the reconciler wrote to Git, by action (advance, promote, rollback, ...).",
            [n.NAMESPACE, n.ENVIRONMENT, n.DEPLOYMENT, n.ACTION],
            registry=self.registry,
        )
        self.registry.register(self)

    def record(self, step: Tick) -> None:
        """Take one turn of the loop (run()'s on_tick)."""
        now = self.clock()
        result = step.result
        interval = step.next_in
        deadline = None
        if result is not None:
            state = result.state
            if state is not None:
                self._namespace = state.namespace or ""
                self._deployment = state.deployment
            if result.policy is not None:
                interval = result.policy.interval
                r = _rollout_after(result)
                if r is not None and r.active:
                    deadline = stage_deadline(result.policy, r)
            if result.wrote:
                self.decisions.labels(
                    self._namespace, self.env, self._deployment, result.decision.action.value
                ).inc()
        elif step.error:
            self.failures.labels(self._namespace, self.env).inc()
        with self._lock:
            previous = self._last.result if self._last is not None else None
            self._last = _Last(
                now,
                self._namespace,
                self.env,
                self._deployment,
                interval,
                result if result is not None else previous,
                deadline if result is not None else (self._last.deadline if self._last else None),
            )

    # prometheus_client collector ---------------------------------------------------------------------------
    def describe(self) -> Iterator[Metric]:
        return iter(())  # rendered at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            last = self._last
        if last is None:
            return
        base = [n.NAMESPACE, n.ENVIRONMENT]
        values = [last.namespace, last.environment]
        beat = GaugeMetricFamily(
            n.RECONCILER_LAST_TICK,
            "When the reconciler last finished a tick (seconds since the epoch).",
            labels=base,
        )
        beat.add_metric(values, last.at)
        yield beat
        every = GaugeMetricFamily(
            n.RECONCILER_TICK_INTERVAL,
            "Seconds between the reconciler's ticks (the policy's interval).",
            labels=base,
        )
        every.add_metric(values, last.interval)
        yield every
        result = last.result
        if result is None or result.state is None:
            return
        yield from self._rollout(last, result)

    def _rollout(self, last: _Last, result: Any) -> Iterator[Metric]:
        labels = [n.NAMESPACE, n.ENVIRONMENT, n.DEPLOYMENT]
        values = [last.namespace, last.environment, last.deployment]
        state = result.state
        layout = result.decision.layout if _merged(result) else None
        weights = GaugeMetricFamily(
            n.ROLLOUT_WEIGHT,
            "Traffic per predictor as Git holds it (a shadow's: the share of requests mirrored to it).",
            labels=[*labels, n.PREDICTOR, n.SHADOW],
        )
        slots = (
            [(s.name, s.traffic, s.shadow) for s in layout]
            if layout is not None
            else [(p.name, p.traffic, p.shadow) for p in state.predictors]
        )
        live = [s for s in slots if not s[2]]
        for name, traffic, shadow in slots:
            share = traffic if shadow or len(live) > 1 else 100
            weights.add_metric([*values, name, "true" if shadow else "false"], float(share))
        yield weights
        # the gates of the last decision, even one that ended the rollout (a rollback says why through them)
        yield from self._gates(labels, values, result.decision.gates)
        r = _rollout_after(result)
        if r is None or not r.active:
            return
        info = GaugeMetricFamily(
            n.ROLLOUT_INFO,
            "The rollout in progress (1), by strategy, candidate, stable model and status.",
            labels=[*labels, n.STRATEGY, n.CANDIDATE, n.STABLE, n.STATUS],
        )
        info.add_metric([*values, r.strategy, r.candidate, r.stable, r.status], 1.0)
        yield info
        stage = GaugeMetricFamily(n.ROLLOUT_STAGE, "The rollout's stage (index in its plan).", labels=labels)
        stage.add_metric(values, float(r.stage))
        yield stage
        entered = GaugeMetricFamily(
            n.ROLLOUT_STAGE_ENTERED,
            "When the rollout entered its stage (seconds since the epoch).",
            labels=labels,
        )
        entered.add_metric(values, r.entered_at)
        yield entered
        if last.deadline is not None:
            deadline = GaugeMetricFamily(
                n.ROLLOUT_DEADLINE,
                "By when the stage must have moved on: bake time or the longest no-data wait, plus a window "
                "and two ticks (seconds since the epoch).",
                labels=labels,
            )
            deadline.add_metric(values, last.deadline)
            yield deadline

    def _gates(self, labels: list[str], values: list[str], gates: Any) -> Iterator[Metric]:
        glabels = [*labels, n.GATE, n.GATE_METRIC]
        verdict = GaugeMetricFamily(
            n.GATE_VERDICT,
            "1 for each gate's verdict at the last tick, 0 for the other verdicts.",
            labels=[*glabels, n.VERDICT],
        )
        fields = {
            n.GATE_ESTIMATE: (
                "The gate's estimate of the compared value at the last tick.",
                ("estimate", "value"),
            ),
            n.GATE_LOW: ("Low end of the gate's interval at the last tick.", ("low",)),
            n.GATE_HIGH: ("High end of the gate's interval at the last tick.", ("high",)),
            n.GATE_LIMIT: (
                "The limit the gate's threshold and margin set on the compared value.",
                ("limit",),
            ),
        }
        families = {name: GaugeMetricFamily(name, doc, labels=glabels) for name, (doc, _) in fields.items()}
        for g in gates:
            gv = [*values, g.gate, g.metric]
            for v in VERDICTS:
                verdict.add_metric([*gv, v], 1.0 if g.verdict == v else 0.0)
            for name, (_, attrs) in fields.items():
                x = next(
                    (_number(getattr(g, a, None)) for a in attrs if _number(getattr(g, a, None)) is not None),
                    None,
                )
                if x is not None:
                    families[name].add_metric(gv, x)
        yield verdict
        yield from families.values()

    def serve(self, port: int, host: str = "127.0.0.1") -> tuple[Any, threading.Thread]:
        """Serve /metrics on host:port from a daemon thread; returns (server, thread)."""
        from prometheus_client import start_http_server

        return start_http_server(port, addr=host, registry=self.registry)


def _merged(result: Any) -> bool:
    return result.outcome is not None and result.outcome.merged


def _rollout_after(result: Any) -> Rollout | None:
    """The rollout annotation on main after a tick: the one it merged, else the one it read."""
    if _merged(result) and result.decision.rollout is not None:
        r: Rollout = result.decision.rollout
        return r
    return result.state.rollout if result.state is not None else None
