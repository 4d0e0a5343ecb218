"""`sluice loop --metrics-port`: the retraining loop's own Prometheus metrics.

A loop that runs unattended for months fails quietly: a registry down for a day, or a change that broke the
pipeline, makes every turn an `error`. Each failed turn is retried with a back-off, and no retrain is collected,
trained or opened meanwhile. These metrics let an alert rule see that (`SluiceLoopFailing`, in
gitops/monitoring/). Every series carries the first environment's namespace (its manifest's
metadata.namespace) and name. Metric and label names: deployment/metric_names.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from deployment import metric_names as n
from monitor.loop import Outcome


class LoopMetrics:
    """Fed by `run_loop`'s `on_outcome`; `serve()` exposes them over HTTP."""

    def __init__(
        self,
        namespace: str,
        environment: str,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.registry = registry if registry is not None else CollectorRegistry()
        self.clock = clock
        labels, self._values = [n.NAMESPACE, n.ENVIRONMENT], (namespace, environment)
        self.last_turn = Gauge(
            n.LOOP_LAST_TURN, "When the loop's last turn ended (seconds since the epoch).", labels,
            registry=self.registry,
        ).labels(*self._values)  # fmt: skip
        self.failures = Gauge(
            n.LOOP_FAILURES, "Turns in a row that failed and are retried with a back-off (0: the last one worked).",
            labels, registry=self.registry,
        ).labels(*self._values)  # fmt: skip
        self.turns = Counter(
            n.LOOP_TURNS, "The loop's turns and the promotions it carried along the chain, by the step done.",
            [*labels, n.LOOP_STEP], registry=self.registry,
        )  # fmt: skip

    def record(self, outcome: Outcome) -> None:
        """Take one outcome (a turn's, or a link of the environment chain that followed it)."""
        self.turns.labels(*self._values, outcome.step).inc()
        if outcome.step.startswith("chain-"):
            return  # carried along after a turn: the turn itself was recorded
        self.last_turn.set(self.clock())
        if outcome.step == "error":
            self.failures.inc()
        else:
            self.failures.set(0)

    def serve(self, port: int, host: str = "127.0.0.1") -> tuple[Any, Any]:
        """Serve /metrics on host:port from a daemon thread; returns (server, thread)."""
        from prometheus_client import start_http_server

        return start_http_server(port, addr=host, registry=self.registry)


def namespace_of(repo: Path, env: str) -> str:
    """The environment's manifest's metadata.namespace ("" when it names none or cannot be read)."""
    import yaml

    from rollout.scm import manifest_paths

    for path in manifest_paths(env):
        try:
            doc = yaml.safe_load((repo / path).read_text())
        except (OSError, yaml.YAMLError):
            continue
        meta = doc.get("metadata") if isinstance(doc, dict) else None
        namespace = meta.get("namespace") if isinstance(meta, dict) else None
        return namespace if isinstance(namespace, str) else ""
    return ""
