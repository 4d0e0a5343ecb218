"""The gateway: a raw ASGI app that fronts one predictor process per predictor, on one port, for both protocols.

Per request it picks a predictor (override header, sticky key, or weighted draw; see `routing`), forwards
the request over a keep-alive pool, retries once on another live non-shadow predictor when the first one
cannot be reached or answers 5xx, tells the caller who answered, mirrors a copy to the shadow without
waiting for it, and records Seldon's executor metrics (see `metrics`).

Headers (requests):
    x-sluice-predictor: NAME    send to this predictor, whatever its weight; no retry, no mirror; 404 if unknown
    x-seldon-route: :NAME:      Seldon v2's pin: prefer NAME while it is a live, non-shadow predictor (retried
                                and mirrored like any request); otherwise routed as if absent
    x-sluice-user: KEY          sticky key: the same KEY gets the same predictor while the weights allow
    seldon-puid: ID             request id for Seldon v1 (generated when absent), echoed in `meta.puid`
Headers (responses):
    x-sluice-predictor: NAME    the predictor that answered
    x-seldon-route: :NAME:      the same, in Seldon v2's form (send it back to stay on NAME)
    x-sluice-retried-from: NAME present when the first predictor failed and NAME's request was retried
    seldon-puid: ID             on Seldon v1 predictions
Seldon v1 prediction answers also carry `meta.puid` and `meta.tags.sluice_predictor`. Feedback
(`POST /api/v1.0/feedback`) goes to the predictor named by `response.meta.tags.sluice_predictor` in its
body, else to the one that served `response.meta.puid` (or the `seldon-puid` header), else like a request.
Gateway endpoints: `GET /metrics` (also `/prometheus`), `GET /gateway/routes` (the routing table as JSON).
Only predictions and feedback are mirrored and counted in the metrics; other paths (health, metadata) are
routed the same way and forwarded. `sluice up` serves this app with `serving.router.server`; any ASGI
server (uvicorn) runs it too.
"""

from __future__ import annotations

import itertools
import os
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from deployment import wire
from serving.core.feedback import check_reward
from serving.core.validation import RequestError
from serving.router.executor_metrics import CONTENT_TYPE, GatewayMetrics, PredictorLabels
from serving.router.routing import RoutingTable, UnknownPredictor, key_point
from serving.router.shadow import Mirror, MirrorCopy
from serving.router.upstream import HOP_BY_HOP, Response, Upstream, UpstreamError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

OVERRIDE_HEADER = wire.PREDICTOR_HEADER.encode()
SELDON_ROUTE_HEADER = wire.SELDON_ROUTE_HEADER.encode()
STICKY_HEADER = wire.STICKY_HEADER.encode()
PUID_HEADER = wire.PUID_HEADER.encode()
RETRIED_HEADER = wire.RETRIED_HEADER.encode()
TAG = wire.PREDICTOR_TAG
V1_PREDICT = "/api/v1.0/predictions"
V1_FEEDBACK = "/api/v1.0/feedback"
MAX_BODY = 8 << 20
PUID_MEMORY = 100_000
_DROP_RESPONSE_HEADERS = HOP_BY_HOP | {b"date", b"server", OVERRIDE_HEADER, SELDON_ROUTE_HEADER}


@dataclass
class Backend:
    """A routable predictor: its metric labels and the pool to its process."""

    name: str
    labels: PredictorLabels
    upstream: Upstream


@dataclass(frozen=True)
class Routes:
    """Everything a request needs to be routed; replaced as a whole, so a change is atomic."""

    deployment_name: str
    table: RoutingTable
    backends: dict[str, Backend]

    def alive(self, name: str) -> bool:
        b = self.backends.get(name)
        return b is not None and b.upstream.alive


@dataclass
class _Call:
    """What the gateway knows about one request while it handles it."""

    method: str
    path: str
    service: str
    kind: str  # "predict", "feedback" or "other"
    headers: list[tuple[bytes, bytes]]
    body: bytes
    override: str | None = None
    sticky: str | None = None
    puid: str | None = None
    started: float = 0.0
    pin: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class GatewayError(Exception):
    """A request the gateway answers itself (4xx for the caller's mistakes, 5xx when no predictor could)."""

    def __init__(self, status: int, message: str, backend: Backend | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.backend = backend


def service_of(method: str, path: str) -> tuple[str, str]:
    """(metric `service` label, request kind) for a path; templates keep label cardinality bounded."""
    if method == "POST":
        if path in (V1_PREDICT, "/api/v0.1/predictions", "/predict"):
            return path, "predict"
        if path == V1_FEEDBACK or path in ("/api/v0.1/feedback", "/send-feedback"):
            return path, "feedback"
        if path.startswith("/v2/models/") and path.endswith("/infer"):
            if "/versions/" in path:
                return "/v2/models/{model_name}/versions/{model_version}/infer", "predict"
            return "/v2/models/{model_name}/infer", "predict"
    return "other", "other"


class Gateway:
    """The ASGI application. `swap(routes)` changes the routing table atomically."""

    def __init__(
        self,
        metrics: GatewayMetrics | None = None,
        *,
        timeout: float = 30.0,
        mirror_queue: int = 256,
        rng: Callable[[], float] = random.random,
    ):
        self.metrics = metrics or GatewayMetrics()
        self.routes: Routes | None = None
        self.timeout = timeout
        self.rng = rng
        self.mirror = Mirror(self.metrics, maxsize=mirror_queue)
        self._puids: OrderedDict[str, str] = OrderedDict()
        # Unique per gateway run and cheap per request (os.urandom is a syscall).
        self._puid_prefix = os.urandom(6).hex() + "-"
        self._puid_seq = itertools.count(1)

    def swap(self, routes: Routes | None) -> None:
        self.routes = routes

    # ASGI --------------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.mirror.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.mirror.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        if method == "GET" and path in ("/metrics", "/prometheus"):
            await _reply(send, 200, self.metrics.exposition(), CONTENT_TYPE.encode())
            return
        if method == "GET" and path == "/gateway/routes":
            await _reply(send, 200, orjson.dumps(self.describe()), b"application/json")
            return
        service, kind = service_of(method, path)
        started = time.perf_counter()
        try:
            call = await self._read(scope, receive, method, path, service, kind)
            routes = self.routes
            if routes is None:
                raise GatewayError(503, "no predictors yet: the runtime is still starting them")
            backend, response, retried_from = await self._route(routes, call)
        except GatewayError as e:
            await _reply(send, e.status, _error_body(path, e.status, e.message), b"application/json")
            if e.backend is not None and kind != "other":
                self.metrics.observe_server(
                    e.backend.labels, service, method, e.status, time.perf_counter() - started
                )
            return
        body = response.body
        headers = [(k, v) for k, v in response.headers if k not in _DROP_RESPONSE_HEADERS]
        headers.append((OVERRIDE_HEADER, backend.name.encode()))
        headers.append((SELDON_ROUTE_HEADER, b":" + backend.name.encode() + b":"))
        if retried_from is not None:
            headers.append((RETRIED_HEADER, retried_from.encode()))
        if kind == "predict" and service != "other" and not path.startswith("/v2/"):
            body = self._annotate_v1(call, backend.name, response)
            if call.puid is not None:
                headers.append((PUID_HEADER, call.puid.encode()))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        if kind != "other":
            self.metrics.observe_server(
                backend.labels, service, method, response.status, time.perf_counter() - started
            )
            if kind == "feedback" and 200 <= response.status < 300:
                self.metrics.count_feedback(backend.labels, call.extra.get("reward", 0.0))
            if call.override is None:
                self._offer_mirror(routes, call, response)

    # request handling ---------------------------------------------------------------------------------
    async def _read(
        self, scope: Scope, receive: Receive, method: str, path: str, service: str, kind: str
    ) -> _Call:
        forward: list[tuple[bytes, bytes]] = []
        override = sticky = puid = pin = None
        for k, v in scope["headers"]:
            if k == OVERRIDE_HEADER:
                override = v.decode("latin-1")
                continue
            if k == SELDON_ROUTE_HEADER:
                pin = v.decode("latin-1")
                continue
            if k == STICKY_HEADER:
                sticky = v.decode("latin-1")
            elif k == PUID_HEADER:
                puid = v.decode("latin-1")
            elif k == b"content-length" and int(v or b"0") > MAX_BODY:
                raise GatewayError(413, f"body too large: {int(v)} bytes (the limit is {MAX_BODY})")
            forward.append((k, v))
        chunks = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > MAX_BODY:
                    raise GatewayError(413, f"body too large: more than {MAX_BODY} bytes")
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        path_qs = path
        if scope.get("query_string"):
            path_qs += "?" + scope["query_string"].decode("latin-1")
        call = _Call(
            method,
            path_qs,
            service,
            kind,
            forward,
            b"".join(chunks),
            override,
            sticky,
            puid,
            time.perf_counter(),
            pin,
        )
        if kind == "predict" and not path.startswith("/v2/") and call.puid is None:
            call.puid = f"{self._puid_prefix}{next(self._puid_seq):x}"
        return call

    async def _route(self, routes: Routes, call: _Call) -> tuple[Backend, Response, str | None]:
        table = routes.table
        retry = True
        if call.override is not None:
            try:
                name: str | None = table.resolve_override(call.override)
            except UnknownPredictor as e:
                raise GatewayError(404, str(e)) from None
            retry = False
        elif call.kind == "feedback":
            name = self._feedback_target(routes, call)
            retry = name is None
            if name is None:
                name = self._pick(routes, call)
        else:
            name = self._pick(routes, call)
        if name is None:
            raise GatewayError(503, "no live predictor to answer (all are starting, restarting or stopped)")
        backend = routes.backends[name]
        try:
            response = await self._forward(backend, call)
            if response.status < 500 or not retry:
                return backend, response, None
            failure = f"{name} answered {response.status}"
        except UpstreamError as e:
            if not retry:
                raise GatewayError(504 if e.timeout else 502, f"predictor {name}: {e}", backend) from None
            if e.timeout:  # the predictor may still be working on it: do not double the load
                raise GatewayError(504, f"predictor {name}: {e}", backend) from None
            response = None
            failure = str(e)
        other = table.fallback(name, routes.alive)
        if other is None:
            if response is not None:
                return backend, response, None
            raise GatewayError(
                502, f"predictor {name} failed ({failure}) and no other predictor is live", backend
            )
        self.metrics.count_retry(backend.labels, other)
        if call.kind != "other":
            # Count the failure against the predictor that failed, as its own Seldon executor would have:
            # otherwise the retry would hide a failing candidate from the rollout engine's error gate.
            failed_code = response.status if response is not None else 502
            self.metrics.observe_server(
                backend.labels, call.service, call.method, failed_code, time.perf_counter() - call.started
            )
        second = routes.backends[other]
        try:
            return second, await self._forward(second, call), name
        except UpstreamError as e:
            raise GatewayError(
                504 if e.timeout else 502,
                f"predictor {name} failed ({failure}), and so did {other}: {e}",
                second,
            ) from None

    def _pick(self, routes: Routes, call: _Call) -> str | None:
        if call.pin is not None:
            try:
                pinned = routes.table.resolve_override(call.pin)
            except UnknownPredictor:
                pinned = None
            if pinned is not None and not routes.table.by_name[pinned].shadow and routes.alive(pinned):
                return pinned
        point = key_point(call.sticky) if call.sticky else self.rng() * 100.0
        return routes.table.pick(point, routes.alive)

    async def _forward(self, backend: Backend, call: _Call) -> Response:
        started = time.perf_counter()
        try:
            response = await backend.upstream.request(
                call.method, call.path, call.headers, call.body, self.timeout
            )
        except UpstreamError as e:
            if call.kind != "other":
                self.metrics.observe_client(
                    backend.labels, call.service, call.method, 504 if e.timeout else 502,
                    time.perf_counter() - started,
                )  # fmt: skip
            raise
        if call.kind != "other":
            self.metrics.observe_client(
                backend.labels, call.service, call.method, response.status, time.perf_counter() - started
            )
        return response

    # Seldon v1 specifics -------------------------------------------------------------------------------
    def _annotate_v1(self, call: _Call, name: str, response: Response) -> bytes:
        """Put the answering predictor and the puid in `meta`; remember which predictor served the puid."""
        if response.status != 200:
            return response.body
        try:
            doc = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            return response.body
        if not isinstance(doc, dict):
            return response.body
        meta = doc.get("meta")
        if not isinstance(meta, dict):
            meta = doc["meta"] = {}
        if meta.get("puid"):
            call.puid = str(meta["puid"])
        else:
            meta["puid"] = call.puid
        tags = meta.get("tags")
        if not isinstance(tags, dict):
            tags = meta["tags"] = {}
        tags[TAG] = name
        if call.puid is not None:
            self._remember(call.puid, name)
        call.extra["live"] = doc
        return orjson.dumps(doc)

    def _remember(self, puid: str, name: str) -> None:
        self._puids[puid] = name
        if len(self._puids) > PUID_MEMORY:
            self._puids.popitem(last=False)

    def _feedback_target(self, routes: Routes, call: _Call) -> str | None:
        """The predictor that served the request a feedback is about (None: route like a request)."""
        try:
            doc = orjson.loads(call.body)
        except orjson.JSONDecodeError as e:
            raise GatewayError(400, f"feedback body is not valid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise GatewayError(
                400, "feedback body must be a JSON object with request, response, reward, truth"
            )
        try:  # the predictor core's rule: a reward within the range of the accuracy the gates read
            call.extra["reward"] = check_reward(doc.get("reward")) or 0.0
        except RequestError as e:
            raise GatewayError(400, str(e)) from None
        response = doc.get("response")
        meta = response.get("meta") if isinstance(response, dict) else None
        named = None
        puid = call.puid
        if isinstance(meta, dict):
            tags = meta.get("tags")
            if isinstance(tags, dict) and isinstance(tags.get(TAG), str):
                named = tags[TAG]
            if isinstance(meta.get("puid"), str):
                puid = meta["puid"]
        if named is None and puid is not None:
            named = self._puids.get(puid)
        if named is None:
            return None
        if named not in routes.backends:
            raise GatewayError(
                410, f"feedback for predictor {named!r}, which no longer serves this deployment"
            )
        return named

    # shadow ---------------------------------------------------------------------------------------------
    def _offer_mirror(self, routes: Routes, call: _Call, response: Response) -> None:
        shadow = routes.table.shadow
        if shadow is None or not routes.table.mirrors(self.rng() * 100.0):
            return
        backend = routes.backends.get(shadow.name)
        if backend is None or not backend.upstream.alive:
            return
        live_body: Any = None
        if call.kind == "predict":
            live_body = call.extra.get("live", response.body)
        self.mirror.offer(
            MirrorCopy(
                backend.upstream,
                backend.labels,
                call.method,
                call.path,
                call.service,
                call.headers,
                call.body,
                response.status,
                live_body,
            )
        )

    def describe(self) -> dict[str, Any]:
        routes = self.routes
        if routes is None:
            return {"deployment_name": None, "predictors": []}
        return {
            "deployment_name": routes.deployment_name,
            "mirror_percent": routes.table.mirror_percent,
            "predictors": [
                {
                    "name": t.name,
                    "traffic": t.traffic,
                    "shadow": t.shadow,
                    "address": routes.backends[t.name].upstream.address,
                    "alive": routes.alive(t.name),
                    "in_flight": routes.backends[t.name].upstream.in_flight,
                }
                for t in routes.table.targets
            ],
        }


async def _reply(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _error_body(path: str, status: int, message: str) -> bytes:
    if path.startswith("/v2/"):
        return orjson.dumps({"error": message})
    reason = "BAD_REQUEST" if status < 500 else "GATEWAY_ERROR"
    return orjson.dumps({"status": {"code": status, "info": message, "reason": reason, "status": "FAILURE"}})
