"""The forwarding policy: which predictor a request goes to first, and what happens when it fails.

`choose` turns what a request carries (an override, a Seldon v2 pin, a sticky key, or nothing) into a
`Choice`; `feedback_choice` does the same for a feedback from what it names. `Forwarder.forward` sends the
request through the chosen backend's `Upstream` and, when that predictor cannot be reached or answers 5xx,
retries once on another live predictor (never on the shadow, never after a timeout, which would double the
load on a predictor that may still be working, and never a request that named its predictor).

Errors the caller sees say what happened in terms of predictors, never internal addresses; the detail (with
addresses) goes to the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from serving.router.attribution import FeedbackClaim
from serving.router.executor_metrics import RouterMetrics
from serving.router.routes import Backend, Routes
from serving.router.routing import ShadowRefused, UnknownPredictor, key_point
from serving.router.upstream import Response, UpstreamError

log = logging.getLogger("sluice.router")


class RouterError(Exception):
    """A request the router answers itself: 4xx for the caller's mistakes, 5xx when no predictor could."""

    def __init__(self, status: int, message: str, backend: Backend | None = None, detail: str = ""):
        super().__init__(message)
        self.status = status
        self.message = message  # shown to the caller
        self.backend = backend  # the predictor it counts against, if any
        self.detail = detail  # for the log only


@dataclass(frozen=True)
class Choice:
    """Where a request goes first, and whether a failure there may be retried on another predictor."""

    name: str
    retry: bool


@dataclass
class Call:
    """One request as the router forwards it."""

    method: str
    target: str  # the raw path and query, validated
    service: str  # the metric `service` label; "" for requests that are forwarded but not counted
    headers: list[tuple[bytes, bytes]]
    body: bytes
    started: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class Outcome:
    backend: Backend
    response: Response
    retried_from: str | None = None


def choose(
    routes: Routes,
    *,
    override: str | None = None,
    pin: str | None = None,
    key: str | None = None,
    draw: Callable[[], float],
) -> Choice:
    """The first predictor for a request; RouterError when it names one it may not have."""
    table = routes.table
    if override is not None:
        try:
            name = table.resolve_live(override)
        except UnknownPredictor as e:
            raise RouterError(404, str(e)) from None
        except ShadowRefused as e:
            raise RouterError(400, str(e)) from None
        if not routes.alive(name):
            raise RouterError(503, f"predictor {name!r} is not ready (starting, restarting or stopped)")
        return Choice(name, retry=False)
    if pin is not None:
        try:
            pinned: str | None = table.resolve(pin)
        except UnknownPredictor:
            pinned = None  # a stale pin is a preference, not a command: routed as if absent
        if pinned is not None and not table.by_name[pinned].shadow and routes.alive(pinned):
            return Choice(pinned, retry=True)
    point = key_point(key) if key is not None else draw() * 100.0
    name_or_none = table.pick(point, routes.alive)
    if name_or_none is None:
        raise RouterError(503, "no live predictor to answer (all are starting, restarting or stopped)")
    return Choice(name_or_none, retry=True)


def feedback_choice(routes: Routes, claim: FeedbackClaim) -> Choice:
    """The predictor a feedback goes to: the one it names, or the only live one."""
    table = routes.table
    if claim.predictor is None:
        live = [t.name for t in table.live]
        if len(live) == 1:
            if not routes.alive(live[0]):
                raise RouterError(
                    503, f"predictor {live[0]!r} is not ready (starting, restarting or stopped)"
                )
            return Choice(live[0], retry=False)
        raise RouterError(
            400,
            "feedback names no predictor: send back the answer's meta (tags.sluice_predictor or puid) "
            "or its x-seldon-route header, so that it reaches the predictor that answered",
        )
    try:
        name = table.resolve(claim.predictor)
    except UnknownPredictor:
        raise RouterError(
            410, f"feedback for predictor {claim.predictor!r}, which no longer serves this deployment"
        ) from None
    if table.by_name[name].shadow:
        raise RouterError(400, f"{claim.source}: predictor {name!r} is the shadow, whose answers nobody gets")
    if not routes.alive(name):
        raise RouterError(503, f"predictor {name!r} is not ready (starting, restarting or stopped)")
    return Choice(name, retry=False)


class Forwarder:
    """Sends a request to its chosen predictor, retries once elsewhere, records the client-side metrics."""

    def __init__(self, metrics: RouterMetrics, *, timeout: float = 30.0):
        self.metrics = metrics
        self.timeout = timeout

    async def forward(self, routes: Routes, choice: Choice, call: Call) -> Outcome:
        backend = routes.backends[choice.name]
        try:
            response = await self._send(backend, call)
            if response.status < 500 or not choice.retry:
                return Outcome(backend, response)
            failure = f"answered {response.status}"
        except UpstreamError as e:
            if not choice.retry or e.timeout:
                raise self._failed(backend, e) from None
            response = None
            failure = str(e)
        other = routes.table.fallback(backend.name, routes.alive)
        if other is None:
            if response is not None:
                return Outcome(backend, response)
            raise RouterError(
                502,
                f"predictor {backend.name!r} could not be reached and no other predictor is live",
                backend,
                failure,
            )
        self.metrics.count_retry(backend.labels, other)
        if call.service:
            # Count the failure against the predictor that failed, as its own Seldon executor would have:
            # otherwise the retry would hide a failing candidate from the rollout engine's error gate.
            code = response.status if response is not None else 502
            self.metrics.observe_server(
                backend.labels, call.service, call.method, code, time.perf_counter() - call.started
            )
        second = routes.backends[other]
        log.info("retrying on %s: %s %s", other, backend.name, failure)
        try:
            return Outcome(second, await self._send(second, call), backend.name)
        except UpstreamError as e:
            raise self._failed(second, e, first=backend.name) from None

    def _failed(self, backend: Backend, e: UpstreamError, first: str | None = None) -> RouterError:
        also = f" (after {first!r} failed)" if first else ""
        if e.timeout:
            return RouterError(
                504,
                f"predictor {backend.name!r} did not answer within {self.timeout:g} s{also}",
                backend,
                str(e),
            )
        return RouterError(502, f"predictor {backend.name!r} could not be reached{also}", backend, str(e))

    async def _send(self, backend: Backend, call: Call) -> Response:
        started = time.perf_counter()
        backend.in_flight += 1
        try:
            response = await backend.upstream.request(
                call.method, call.target, call.headers, call.body, self.timeout
            )
        except UpstreamError as e:
            if not e.sent:
                backend.refused()
            if call.service:
                code = 504 if e.timeout else 502
                self.metrics.observe_client(
                    backend.labels, call.service, call.method, code, time.perf_counter() - started
                )
            raise
        finally:
            backend.in_flight -= 1
        if call.service:
            self.metrics.observe_client(
                backend.labels, call.service, call.method, response.status, time.perf_counter() - started
            )
        return response
