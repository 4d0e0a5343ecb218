"""What a request is routed by: the deployment's routing table and one backend per predictor, swapped whole.

A `Backend` is a predictor as the router reaches it: its metric labels, its `Upstream`, whether it may take
traffic (`ready`, set by whoever runs or watches the predictor; `down_until` after a failed connect) and how
many requests are in flight (for draining). `Routes` bundles the table, the backends and the sticky header of
one manifest; the router replaces the whole object on a change, so every request sees one consistent view.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from deployment.kinds import Deployment
from serving.router.executor_metrics import DEFAULT_NAMESPACE, PredictorLabels
from serving.router.routing import RoutingTable, Target, sticky_header
from serving.router.upstream import Upstream

DOWN_AFTER_CONNECT_FAILURE = 0.5  # seconds a predictor that refused a connection is left out of routing


@dataclass(eq=False)
class Backend:
    """A routable predictor."""

    name: str
    labels: PredictorLabels
    upstream: Upstream
    ready: bool = False
    down_until: float = 0.0
    in_flight: int = 0

    @property
    def alive(self) -> bool:
        return self.ready and (self.down_until == 0.0 or time.monotonic() >= self.down_until)

    def refused(self) -> None:
        """A connection to it failed: route elsewhere for a moment rather than fail every request."""
        self.down_until = time.monotonic() + DOWN_AFTER_CONNECT_FAILURE


@dataclass(frozen=True)
class Routes:
    """Everything a request needs to be routed; replaced as a whole, so a change is atomic."""

    namespace: str
    deployment_name: str
    table: RoutingTable
    backends: dict[str, Backend]
    sticky: bytes | None = field(default=None)  # the request header that pins a user, in lower case
    digests: dict[str, str] = field(default_factory=dict)  # predictor name -> its model_digest

    def alive(self, name: str) -> bool:
        b = self.backends.get(name)
        return b is not None and b.alive


def routes_for(sd: Deployment, backends: Mapping[str, Backend]) -> Routes:
    """The routes of a deployment, given a backend for each of its predictors (by name)."""
    missing = [p.name for p in sd.predictors if p.name not in backends]
    if missing:
        raise KeyError(f"no backend for predictor(s) {missing}")
    targets = [Target(p.name, p.traffic, p.shadow) for p in sd.predictors]
    header = sticky_header(sd.annotations)
    return Routes(
        namespace=sd.namespace or DEFAULT_NAMESPACE,
        deployment_name=sd.name,
        table=RoutingTable(targets),
        backends={p.name: backends[p.name] for p in sd.predictors},
        sticky=header.encode() if header else None,
        digests={p.name: p.model_digest for p in sd.predictors if p.model_digest},
    )


def labels_for(sd: Deployment) -> dict[str, PredictorLabels]:
    """Each predictor's metric labels."""
    return {p.name: PredictorLabels.of(sd.namespace, sd.name, p) for p in sd.predictors}
