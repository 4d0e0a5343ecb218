"""The predictor's HTTP app: a bare ASGI callable with hand-written routing and orjson.

Chosen by measurement (benchmarks/serving.py): on this 2-core machine class FastAPI's routing, request
objects and response validation cost more than the model (~3,500 no-op req/s against ~14,000 for uvicorn
with a bare ASGI app), so the app parses and routes itself and leaves the work to the predictor core.
The protocol codecs translate; this module only moves bytes, maps errors to status codes and counts.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from serving.core.predictor import Predictor, RequestError
from serving.http import openapi
from serving.http.model_metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from serving.http.model_metrics import ServingMetrics
from serving.protocols import seldon, v2

log = logging.getLogger("sluice.serving")

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
JSON = b"application/json"
_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


@dataclass
class Response:
    status: int
    body: bytes
    content_type: bytes = JSON
    headers: list[tuple[bytes, bytes]] | None = None


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(status, orjson.dumps(payload, option=_DUMPS_OPTIONS))


Handler = Callable[["PredictorApp", bytes], Response]


class PredictorApp:
    """Serves one model version over Seldon v1 and Open Inference Protocol v2."""

    def __init__(
        self,
        predictor: Predictor,
        name: str | None = None,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        metrics: ServingMetrics | None = None,
    ):
        self.predictor = predictor
        self.name = name or predictor.name
        # Callers may address the model by the served name or by the bundle's own name.
        self.names = {self.name, predictor.name}
        self.version = predictor.short_digest
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics or ServingMetrics(model_name=self.name, model_digest=predictor.digest)
        self.classes = list(predictor.signature.classes)
        self._feature_set = frozenset(predictor.feature_names)
        self._seldon_encoder = seldon.PredictEncoder(self.classes, self.name, predictor.digest)
        self.platform = f"sluice-{predictor.backend}"
        self._openapi = orjson.dumps(openapi.document(self))
        self._metadata = orjson.dumps(
            v2.model_metadata(
                self.name,
                self.version,
                predictor.signature.onnx_input,
                predictor.n_features,
                len(self.classes),
                self.platform,
            )
        )
        self._routes: dict[tuple[str, str], tuple[str, Handler]] = {
            ("POST", "/api/v1.0/predictions"): ("predictions", PredictorApp.seldon_predict),
            ("POST", "/predict"): ("predictions", PredictorApp.seldon_predict),
            ("POST", "/api/v1.0/feedback"): ("feedback", PredictorApp.seldon_feedback),
            ("POST", "/send-feedback"): ("feedback", PredictorApp.seldon_feedback),
            ("GET", "/health/ping"): ("", PredictorApp.ping),
            ("GET", "/health/status"): ("", PredictorApp.health_status),
            ("GET", "/metadata"): ("", PredictorApp.model_metadata),
            ("GET", "/v2"): ("", PredictorApp.server_metadata),
            ("GET", "/v2/health/live"): ("", PredictorApp.live),
            ("GET", "/v2/health/ready"): ("", PredictorApp.live),
            ("GET", "/metrics"): ("", PredictorApp.prometheus),
            ("GET", "/prometheus"): ("", PredictorApp.prometheus),
            ("GET", "/openapi.json"): ("", PredictorApp.openapi_json),
            ("GET", "/docs"): ("", PredictorApp.docs),
        }
        self._paths = {path: method for method, path in self._routes}

    # ASGI ------------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        method: str = scope["method"]
        path: str = scope["path"]
        endpoint = ""
        try:
            route = self._routes.get((method, path))
            if route is not None:
                endpoint, handler = route
                body = await self._body(scope, receive) if method == "POST" else b""
                response = handler(self, body)
            elif path.startswith("/v2/models/"):
                endpoint, response = await self._v2_model(method, path, scope, receive)
            elif path in self._paths:
                raise HTTPError(405, f"{method} {path}: method not allowed (use {self._paths[path]})")
            else:
                raise HTTPError(404, f"{path}: no such endpoint (see /docs)")
        except HTTPError as e:
            response = self._error(path, e.status, e.message)
            response.headers = e.headers
        except RequestError as e:
            response = self._error(path, 400, str(e))
        except Exception as e:  # a bug, not bad input: answer, log, and keep serving
            log.exception("%s %s failed", method, path)
            response = self._error(path, 500, f"internal error: {type(e).__name__}: {e}")
        headers = [
            (b"content-type", response.content_type),
            (b"content-length", str(len(response.body)).encode()),
        ]
        if response.headers:
            headers.extend(response.headers)
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})
        if endpoint:
            self.metrics.observe(endpoint, response.status, time.perf_counter() - start)

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                raise self._too_large()  # before reading a byte of it
        message = await receive()
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False) and message["type"] == "http.request":
            if len(body) > self.max_body_bytes:
                raise self._too_large()
            return body  # the common case: the whole body in one message
        chunks = [body]
        size = len(body)
        while True:
            if message["type"] == "http.disconnect":
                raise HTTPError(400, "client disconnected before sending the whole body")
            if size > self.max_body_bytes:
                raise self._too_large()
            if not message.get("more_body", False):
                return b"".join(chunks)
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)

    def _too_large(self) -> HTTPError:
        return HTTPError(
            413,
            f"request body too large: the limit is {self.max_body_bytes} bytes",
            [(b"connection", b"close")],
        )

    def _error(self, path: str, status: int, message: str) -> Response:
        if path.startswith("/v2"):
            return json_response(v2.error_body(message), status)
        return json_response(seldon.error_body(status, message), status)

    # Seldon v1 -------------------------------------------------------------------------------------
    def seldon_predict(self, body: bytes) -> Response:
        request = seldon.decode_predict(_loads(body))
        X = self.predictor.validate(request.rows, request.names)
        prediction = self.predictor.predict(X)
        self.metrics.add_rows(len(X))
        return Response(200, self._seldon_encoder.encode(request, prediction))

    def seldon_feedback(self, body: bytes) -> Response:
        feedback = seldon.decode_feedback(_loads(body), self.classes, self._labels_of)
        self.metrics.record_feedback(feedback.reward)
        meta = {
            "tags": {
                "model_name": self.name,
                "model_digest": self.predictor.digest,
                "reward": feedback.reward,
            }
        }
        if feedback.correct is not None:
            meta["tags"]["correct"] = feedback.correct
        meta["requestPath"] = {self.name: self.predictor.digest}
        return json_response({"data": {"ndarray": []}, "meta": meta})

    def _labels_of(self, request: seldon.PredictRequest) -> list[Any]:
        """What this model predicts for a feedback's request (to score a truth sent without the response)."""
        labels: list[Any] = self.predictor.predict_rows(request.rows, request.names).labels.tolist()
        return labels

    def ping(self, body: bytes) -> Response:
        return Response(200, b"pong", b"text/plain")

    def health_status(self, body: bytes) -> Response:
        # As Seldon's wrapper does: a model that cannot answer a fixed row is not healthy.
        probe = self.predictor.predict(np.zeros((1, self.predictor.n_features)))
        return json_response(
            {
                "jsonData": {"status": "ok", "probe_label": int(probe.labels[0])},
                "meta": {"tags": {"model_name": self.name, "model_digest": self.predictor.digest}},
            }
        )

    def model_metadata(self, body: bytes) -> Response:
        return Response(200, self._metadata)

    # Open Inference Protocol v2 --------------------------------------------------------------------
    def server_metadata(self, body: bytes) -> Response:
        return json_response({"name": "sluice", "version": self.version, "extensions": []})

    def live(self, body: bytes) -> Response:
        return json_response({"live": True, "ready": True})

    async def _v2_model(self, method: str, path: str, scope: Scope, receive: Receive) -> tuple[str, Response]:
        # /v2/models/{name}[/versions/{version}][/ready | /infer]
        parts = path[len("/v2/models/") :].split("/")
        name, rest = parts[0], parts[1:]
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
            if name in self.names and version not in (self.version, self.predictor.digest, ""):
                raise HTTPError(
                    404, f"model {name!r} has no version {version!r} (this predictor serves {self.version})"
                )
        if name not in self.names:
            raise HTTPError(404, f"unknown model {name!r}: this predictor serves {self.name!r}")
        action = rest[0] if rest else ""
        if len(rest) > 1 or action not in ("", "ready", "infer"):
            raise HTTPError(404, f"{path}: no such endpoint (see /docs)")
        expected = "POST" if action == "infer" else "GET"
        if method != expected:
            raise HTTPError(405, f"{method} {path}: method not allowed (use {expected})")
        if action == "infer":
            return "infer", self.v2_infer(await self._body(scope, receive))
        if action == "ready":
            return "", json_response({"name": self.name, "ready": True})
        return "", Response(200, self._metadata)

    def v2_infer(self, body: bytes) -> Response:
        request = v2.decode_infer(_loads(body), self._feature_set)
        X = self.predictor.validate(request.rows)
        prediction = self.predictor.predict(X)
        self.metrics.add_rows(len(X))
        return json_response(v2.encode_infer(request, prediction, self.name, self.version))

    # operations ------------------------------------------------------------------------------------
    def prometheus(self, body: bytes) -> Response:
        return Response(200, self.metrics.exposition(), METRICS_CONTENT_TYPE.encode())

    def openapi_json(self, body: bytes) -> Response:
        return Response(200, self._openapi)

    def docs(self, body: bytes) -> Response:
        return Response(200, openapi.SWAGGER_HTML.encode(), b"text/html; charset=utf-8")


def _loads(body: bytes) -> Any:
    if not body:
        raise RequestError("malformed JSON: the request body is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        if b"NaN" in body or b"Infinity" in body or "infinity" in str(e):
            # Not JSON, but what Python's json.dumps writes for nan/inf: parse it so that the
            # validator can name the feature holding the non-finite value.
            try:
                return json.loads(body)
            except ValueError:
                pass
        raise RequestError(f"malformed JSON: {e}") from None
