"""The router's traffic endpoint: an ASGI app that translates HTTP to the forwarding policy and back.

Per request it validates what it will pass on or write back (the request target, the puid), picks a
predictor (`forwarding.choose`: override header, Seldon v2 pin, sticky key, or a weighted draw), forwards
through that predictor's `Upstream`, retries once elsewhere when allowed, writes the answer, and only then
mirrors a copy of a prediction to the shadow (feedback is about the live answer, and is never mirrored) and
records Seldon's executor metrics.

Paths are Seldon's and the Open Inference Protocol's, also behind an ingress prefix as SeldonClient's
`gateway="istio"` sends them (`/seldon/<namespace>/<deployment>/...`, or `/seldon/<deployment>/...`).

Headers (requests):
    x-sluice-predictor: NAME    send to this live predictor, whatever its weight; no retry, no mirror; 404 if
                                unknown, 400 if NAME is the shadow, 503 if it is not ready
    x-seldon-route: :NAME:      Seldon v2's pin: prefer NAME while it is a live predictor (retried and
                                mirrored like any request); otherwise routed as if absent
    <sticky header>: KEY        the same KEY gets the same predictor while the weights allow (the header is
                                the rollout's `sticky_key`, default x-sluice-user; see `routing`)
    seldon-puid: ID             Seldon v1's request id (letters, digits, `._:-`; 400 otherwise)
Headers (answers):
    x-sluice-predictor: NAME    the predictor that answered
    x-seldon-route: :NAME:      the same, in Seldon v2's form (send it back to stay on NAME, or with feedback)
    x-sluice-retried-from: NAME present when the first predictor failed and NAME's request was retried
    seldon-puid: ID             on Seldon v1 predictions (the caller's id, or one naming the predictor)
Seldon v1 prediction answers also carry `meta.puid` and `meta.tags.sluice_predictor`. Feedback goes to the
predictor the answer named (see `attribution`). Admin endpoints (metrics, routes) are served by
`serving.router.admin` on another port, never here. A 5xx the router writes itself says which predictor
failed and how, never an address or an exception's text.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from deployment import metric_names as n
from deployment import wire
from serving.router import puid as puids
from serving.router.attribution import FeedbackError, read_claim
from serving.router.executor_metrics import RouterMetrics
from serving.router.forwarding import Call, Choice, Forwarder, Outcome, RouterError, choose, feedback_choice
from serving.router.mirroring import MAX_BYTES, Mirror, MirrorCopy, MirrorSink
from serving.router.prediction_log import Copy, PredictionLog
from serving.router.routes import Routes
from serving.router.upstream import HOP_BY_HOP, forwardable

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("sluice.router")

OVERRIDE = wire.PREDICTOR_HEADER.encode()
ROUTE = wire.SELDON_ROUTE_HEADER.encode()
PUID = wire.PUID_HEADER.encode()
RETRIED = wire.RETRIED_HEADER.encode()
MAX_BODY = 8 << 20
INGRESS = "/seldon/"
PREDICT_PATHS = frozenset({"/api/v1.0/predictions", "/api/v0.1/predictions", "/predict"})
FEEDBACK_PATHS = frozenset({"/api/v1.0/feedback", "/api/v0.1/feedback", "/send-feedback"})
_VISIBLE = re.compile(rb"^[!-~]*$")  # the raw target: visible ASCII only (no space, no control byte)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # in the decoded path: CR, LF and the other control characters
_ANSWER_DROP = HOP_BY_HOP | {b"date", b"server", OVERRIDE, ROUTE, RETRIED, PUID}
_GENERIC_500 = "internal error in the router"


# What else a predictor serves to callers (Seldon's executor and the Open Inference Protocol): forwarded, not
# counted. Anything outside these (the predictor's /metrics among them) is not the public API: 404 here.
OTHER_PATHS = frozenset(
    {
        "/health/ping",
        "/health/status",
        "/metadata",
        "/api/v1.0/metadata",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
    }
)
OTHER_PREFIXES = ("/v2/models/", "/api/v1.0/metadata/", "/api/v1.0/status/")


def classify(method: str, path: str) -> str:
    """The kind of a request: predict, feedback, other (forwarded, not counted) or unknown (a 404 here)."""
    if method == "POST":
        if path in PREDICT_PATHS:
            return "predict"
        if path in FEEDBACK_PATHS:
            return "feedback"
        if path.startswith("/v2/models/") and path.endswith("/infer"):
            return "predict"
    if (
        path in OTHER_PATHS
        or path.startswith(OTHER_PREFIXES)
        or path in PREDICT_PATHS
        or path in FEEDBACK_PATHS
    ):
        return "other"  # a wrong method on a known path included: the predictor says 405
    return "unknown"


@dataclass
class _Request:
    """What the router reads from one request before it forwards it."""

    kind: str
    v1: bool
    call: Call
    override: str | None = None
    pin: str | None = None
    key: str | None = None
    puid: str | None = None
    reward: float = 0.0  # a feedback's reward, once read


class _ClientGone(Exception):
    pass


class Router:
    """The ASGI app. `swap(routes)` changes the routing atomically."""

    def __init__(
        self,
        metrics: RouterMetrics | None = None,
        *,
        timeout: float = 30.0,
        max_body: int = MAX_BODY,
        mirror_bytes: int = MAX_BYTES,
        mirror_process: bool = False,
        rng: Callable[[], float] = random.random,
        prediction_log: PredictionLog | None = None,
    ):
        self.metrics = metrics or RouterMetrics()
        self.prediction_log = prediction_log  # answers recorded off the request path (see prediction_log)
        if prediction_log is not None:
            self.metrics.registry.register(prediction_log)
        self.forwarder = Forwarder(self.metrics, timeout=timeout)
        self.mirror: MirrorSink
        if mirror_process:  # copies leave the router's loop at the cost of one write (see mirror_worker)
            from serving.router.mirror_worker import MirrorWorker

            self.mirror = MirrorWorker(self.metrics, max_bytes=mirror_bytes)
        else:
            self.mirror = Mirror(self.metrics, max_bytes=mirror_bytes)
        self.max_body = max_body
        self.rng = rng
        self.routes: Routes | None = None
        self.puids = puids.PuidMaker()

    def swap(self, routes: Routes | None) -> None:
        self.routes = routes

    # ASGI --------------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await self.mirror.start()
                    if self.prediction_log is not None:
                        self.prediction_log.start()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.mirror.stop()
                    if self.prediction_log is not None:
                        await asyncio.to_thread(self.prediction_log.stop)
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        routes = self.routes
        path: str = scope["path"]
        try:
            request = await self._read(scope, receive, routes)
            if routes is None:
                raise RouterError(503, "no predictors yet: the router is still starting")
            outcome = await self._route(routes, request)
        except _ClientGone:
            return
        except RouterError as e:
            await self._refuse(send, path, e, scope, time.perf_counter() - started)
            return
        except Exception:
            log.exception("%s %s failed in the router", scope.get("method"), path)
            await _reply(send, 500, _error_body(path, 500, _GENERIC_500))
            return
        await self._answer(send, routes, request, outcome)

    # reading -----------------------------------------------------------------------------------------
    async def _read(self, scope: Scope, receive: Receive, routes: Routes | None) -> _Request:
        method: str = scope["method"]
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope.get("query_string") or b""
        path: str = scope["path"]
        if not _VISIBLE.match(raw) or not _VISIBLE.match(query) or not raw.startswith(b"/"):
            raise RouterError(400, "request target: only visible ASCII characters are allowed")
        if _CONTROL.search(path):
            raise RouterError(400, "request path: control characters (such as CR or LF) are not allowed")
        if path.startswith(INGRESS):
            path, raw = _strip_ingress(path, raw, routes)
        kind = classify(method, path)
        if kind == "unknown":
            raise RouterError(404, f"{path[:200]}: no such endpoint")
        v1 = not path.startswith("/v2/")
        override = pin = key = puid = None
        sticky = routes.sticky if routes is not None else None
        headers = scope["headers"]
        for k, v in headers:
            if k == OVERRIDE:
                override = v.decode("latin-1")
            elif k == ROUTE:
                pin = v.decode("latin-1")
            elif k == PUID:
                puid = _puid(v.decode("latin-1"), f"header {wire.PUID_HEADER}")
            elif k == sticky:
                key = v.decode("latin-1")
            elif k == b"content-length" and v.isdigit() and int(v) > self.max_body:
                raise RouterError(413, f"body too large: {int(v)} bytes (the limit is {self.max_body})")
        body = await self._body(receive)
        if kind == "predict" and v1 and b"puid" in body:
            puid = _body_puid(body) or puid
        target = raw.decode("ascii") + ("?" + query.decode("ascii") if query else "")
        forwarded = [(k, v) for k, v in forwardable(headers) if k != OVERRIDE and k != ROUTE]
        service = {"predict": n.SERVICE_PREDICTIONS, "feedback": n.SERVICE_FEEDBACK}.get(kind, "")
        call = Call(method, target, service, forwarded, body)
        return _Request(kind, v1, call, override, pin, key, puid)

    async def _body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self.max_body:
                    raise RouterError(413, f"body too large: more than {self.max_body} bytes")
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    # routing -----------------------------------------------------------------------------------------
    async def _route(self, routes: Routes, request: _Request) -> Outcome:
        if request.kind == "feedback" and request.v1:
            try:
                claim = read_claim(request.call.body, request.pin, request.puid)
            except FeedbackError as e:
                raise RouterError(e.status, str(e)) from None
            request.reward = claim.reward
            choice: Choice = feedback_choice(routes, claim)
        else:
            choice = choose(
                routes, override=request.override, pin=request.pin, key=request.key, draw=self.rng
            )
        return await self.forwarder.forward(routes, choice, request.call)

    # answering ---------------------------------------------------------------------------------------
    async def _answer(self, send: Send, routes: Routes, request: _Request, outcome: Outcome) -> None:
        backend, response, call = outcome.backend, outcome.response, request.call
        name = backend.name.encode()
        headers = [(k, v) for k, v in response.headers if k not in _ANSWER_DROP]
        headers.append((OVERRIDE, name))
        headers.append((ROUTE, b":" + name + b":"))
        if outcome.retried_from is not None:
            headers.append((RETRIED, outcome.retried_from.encode()))
        body = response.body
        puid = request.puid
        if request.kind == "predict" and request.v1 and response.status == 200:
            body, puid = self._annotate_v1(request, backend.name, body)
            if puid is not None:
                headers.append((PUID, puid.encode()))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        # The live answer is written: what follows costs the caller nothing.
        if request.kind != "predict" and request.kind != "feedback":
            return
        status = response.status
        self.metrics.observe_server(
            backend.labels, call.service, call.method, status, time.perf_counter() - call.started
        )
        if request.kind == "feedback" and 200 <= status < 300:
            self.metrics.count_feedback(backend.labels, scored_reward(response.body, request.reward))
        if self.prediction_log is not None and 200 <= status < 300:
            labels = backend.labels
            self.prediction_log.offer(
                Copy(
                    "prediction" if request.kind == "predict" else "feedback",
                    time.time(),
                    labels.namespace,
                    labels.deployment_name,
                    backend.name,
                    routes.digests.get(backend.name),
                    puid,
                    request.v1,
                    call.body,
                    body if request.kind == "predict" else b"",
                )
            )
        if (
            request.kind == "predict"
            and request.override is None
            and 200 <= status < 300
            and routes.table.shadow is not None
        ):
            # After the answer's bytes leave (the server flushes them at the end of this turn of the loop).
            asyncio.get_running_loop().call_soon(self._offer_mirror, routes, request, status, body)

    def _annotate_v1(self, request: _Request, name: str, body: bytes) -> tuple[bytes, str | None]:
        """Put the answering predictor and the puid in `meta` -> (body, puid to echo)."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body, None
        if not isinstance(doc, dict):
            return body, None
        meta = doc.get("meta")
        if not isinstance(meta, dict):
            meta = doc["meta"] = {}
        echoed = meta.get("puid")
        if isinstance(echoed, str) and echoed and puids.PATTERN.match(echoed):
            puid: str | None = echoed
        elif echoed:
            puid = None  # the predictor wrote an id we would not echo: leave the body, skip the header
        else:
            puid = meta["puid"] = request.puid or self.puids.make(name)
        tags = meta.get("tags")
        if not isinstance(tags, dict):
            tags = meta["tags"] = {}
        tags[wire.PREDICTOR_TAG] = name
        return orjson.dumps(doc), puid

    def _offer_mirror(self, routes: Routes, request: _Request, status: int, live: bytes) -> None:
        shadow = routes.table.shadow
        if shadow is None or not routes.table.mirrors(self.rng() * 100.0):
            return
        backend = routes.backends.get(shadow.name)
        if backend is None or not backend.alive:
            return
        call = request.call
        self.mirror.offer(
            MirrorCopy.of(
                backend,
                call.method,
                call.target,
                call.service,
                call.headers,
                call.body,
                status,
                live,
                len(live),
            )
        )

    async def _refuse(self, send: Send, path: str, e: RouterError, scope: Scope, seconds: float) -> None:
        if e.status >= 500:
            log.warning("%s %s: %s (%s)", scope.get("method"), path, e.message, e.detail or "-")
        extra = [(b"connection", b"close")] if e.status == 413 else []
        await _reply(send, e.status, _error_body(path, e.status, e.message), extra)
        backend = e.backend
        service = {"predict": n.SERVICE_PREDICTIONS, "feedback": n.SERVICE_FEEDBACK}.get(
            classify(scope["method"], path), ""
        )
        if backend is not None and service:
            self.metrics.observe_server(backend.labels, service, scope["method"], e.status, seconds)

    def describe(self) -> dict[str, Any]:
        routes = self.routes
        if routes is None:
            return {"deployment_name": None, "predictors": []}
        return {
            "namespace": routes.namespace,
            "deployment_name": routes.deployment_name,
            "mirror_percent": routes.table.mirror_percent,
            "sticky_header": routes.sticky.decode() if routes.sticky else None,
            "predictors": [
                {
                    "name": t.name,
                    "traffic": t.traffic,
                    "shadow": t.shadow,
                    "address": routes.backends[t.name].upstream.address,
                    "alive": routes.alive(t.name),
                    "in_flight": routes.backends[t.name].in_flight,
                }
                for t in routes.table.targets
            ],
        }


def scored_reward(answer: bytes, sent: float) -> float:
    """The reward the predictor counted (its answer's `meta.tags.reward`: it scores a truth against what it
    predicted), else the one the caller sent; either way within the accuracy metric's range."""
    try:
        doc = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return sent
    meta = doc.get("meta") if isinstance(doc, dict) else None
    tags = meta.get("tags") if isinstance(meta, dict) else None
    value = tags.get("reward") if isinstance(tags, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        return sent
    return float(value)


def _strip_ingress(path: str, raw: bytes, routes: Routes | None) -> tuple[str, bytes]:
    """`/seldon/<namespace>/<deployment>/rest` or `/seldon/<deployment>/rest` -> `/rest`, for this deployment."""
    parts = path.split("/", 5)  # "", "seldon", a, b, rest...
    raw_parts = raw.split(b"/", 5)
    if routes is not None:
        if len(parts) > 4 and parts[2] == routes.namespace and parts[3] == routes.deployment_name:
            return "/" + "/".join(parts[4:]), b"/" + b"/".join(raw_parts[4:])
        if len(parts) > 3 and parts[2] == routes.deployment_name:
            return "/" + "/".join(parts[3:]), b"/" + b"/".join(raw_parts[3:])
        here = f"{routes.namespace}/{routes.deployment_name}"
    else:
        here = "none yet"
    asked = "/".join(parts[2:4])
    raise RouterError(404, f"{INGRESS}{asked[:100]}: no such deployment here (this router serves {here})")


def _puid(value: str, where: str) -> str:
    try:
        return puids.check(value, where)
    except puids.PuidError as e:
        raise RouterError(400, str(e)) from None


def _body_puid(body: bytes) -> str | None:
    """A caller's `meta.puid` in a Seldon v1 request, checked (None when absent or the body is not JSON)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None  # the predictor will say what is wrong with the body
    meta = doc.get("meta") if isinstance(doc, dict) else None
    value = meta.get("puid") if isinstance(meta, dict) else None
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RouterError(400, f"field meta.puid: expected a string, got {type(value).__name__}")
    return _puid(value, "field meta.puid")


async def _reply(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})


def _error_body(path: str, status: int, message: str) -> bytes:
    if path.startswith("/v2/") or "/v2/" in path[:120]:
        return orjson.dumps({"error": message})
    reason = "BAD_REQUEST" if status < 500 else "GATEWAY_ERROR"
    return orjson.dumps({"status": {"code": status, "info": message, "reason": reason, "status": "FAILURE"}})
