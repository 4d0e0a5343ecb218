"""The predictor's HTTP app: a bare ASGI callable with hand-written routing and orjson.

Chosen by measurement (benchmarks/serving.py): on this 2-core machine class FastAPI's routing, request
objects and response validation cost more than the model (~3,500 no-op req/s against ~14,000 for uvicorn
with a bare ASGI app), so the app parses and routes itself and leaves the work to the predictor core.
The protocol codecs translate; this module only moves bytes, maps errors to status codes and counts.

What Seldon's own clients send is served as Seldon serves it: the microservice's form field `json=`
(`/predict`, `/send-feedback`), and the ingress paths `/seldon/<namespace>/<deployment>/...` and
`/seldon/<deployment>/...` (the deployment must be this predictor's when `SELDON_DEPLOYMENT_ID` names it).
A path answers the methods it declares (plus HEAD for GET and OPTIONS); any other gets 405 with `Allow`.
An unexpected failure is answered with a generic 500 that carries a reference; the details go to the log.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson

from serving.core.predictor import Predictor, RequestError
from serving.core.validation import check_answer, short_repr
from serving.http import openapi
from serving.http.model_metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from serving.http.model_metrics import ServingMetrics
from serving.protocols import seldon, v2

log = logging.getLogger("sluice.serving")

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
JSON = b"application/json"
FORM = b"application/x-www-form-urlencoded"
_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
# A JSON integer longer than this is read as a float, as orjson reads it: a client's huge integer (a shape,
# a reward) then costs nothing to compare or multiply.
_MAX_INT_DIGITS = 20

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


@dataclass(frozen=True)
class Route:
    endpoint: str  # the metrics label ("" for paths not counted)
    handler: Handler
    seldon: bool = False  # a Seldon wrapper route: takes the form field json= too


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
        self.versions = {self.version, predictor.digest}
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics or ServingMetrics(model_name=self.name, model_digest=predictor.digest)
        self.deployment = self.metrics.deployment_name or None
        self.classes = list(predictor.signature.classes)
        self.regression = not predictor.is_classifier
        # A regression's feedback is scored against the target's range (serving.core.feedback.score_values).
        self.target_bounds = predictor.signature.target_bounds if self.regression else None
        self.v2_outputs = v2.REGRESSION_OUTPUTS if self.regression else v2.OUTPUTS
        self._feature_set = frozenset(predictor.feature_names)
        self._seldon_encoder = seldon.PredictEncoder(
            self.classes, self.name, predictor.digest, regression=self.regression
        )
        self.platform = f"sluice-{predictor.backend}"
        self._openapi = orjson.dumps(openapi.document(self))
        signature = predictor.signature
        self._metadata = orjson.dumps(
            v2.model_metadata(
                self.name,
                self.version,
                signature.onnx_input,
                predictor.n_features,
                len(self.classes),
                self.platform,
                features=[(f.name, f.type) for f in signature.features] if predictor.features.text else None,
                text_labels=any(isinstance(c, str) for c in self.classes),
                regression=self.regression,
            )
        )
        predict = Route("predictions", PredictorApp.seldon_predict, seldon=True)
        feedback = Route("feedback", PredictorApp.seldon_feedback, seldon=True)
        self._routes: dict[tuple[str, str], Route] = {
            ("POST", "/api/v1.0/predictions"): predict,
            ("POST", "/api/v0.1/predictions"): predict,
            ("POST", "/predict"): predict,
            ("POST", "/api/v1.0/feedback"): feedback,
            ("POST", "/api/v0.1/feedback"): feedback,
            ("POST", "/send-feedback"): feedback,
            ("GET", "/health/ping"): Route("", PredictorApp.ping),
            ("GET", "/health/status"): Route("", PredictorApp.health_status),
            ("GET", "/metadata"): Route("", PredictorApp.model_metadata),
            ("GET", "/v2"): Route("", PredictorApp.server_metadata),
            ("GET", "/v2/health/live"): Route("", PredictorApp.live),
            ("GET", "/v2/health/ready"): Route("", PredictorApp.live),
            ("GET", "/metrics"): Route("", PredictorApp.prometheus),
            ("GET", "/prometheus"): Route("", PredictorApp.prometheus),
            ("GET", "/openapi.json"): Route("", PredictorApp.openapi_json),
            **{("GET", path): Route("", _docs_asset(path)) for path in openapi.DOCS_ASSETS},
        }
        self._by_path: dict[str, dict[str, Route]] = {}
        for (method, path), route in self._routes.items():
            self._by_path.setdefault(path, {})[method] = route
        self._top_segments = {path.split("/")[1] for path in self._by_path} | {"v2"}
        self._v2_actions = {
            "": {"GET": Route("", PredictorApp.model_metadata)},
            "ready": {"GET": Route("", PredictorApp.model_ready)},
            "infer": {"POST": Route("infer", PredictorApp.v2_infer)},
        }

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
            if route is None:
                route = self._resolve(method, path)
            endpoint = route.endpoint
            if method == "POST":
                body = await self._body(scope, receive, route.seldon)
            else:
                body = b""
            response = route.handler(self, body)
        except HTTPError as e:
            response = self._error(path, e.status, e.message)
            response.headers = e.headers
        except RequestError as e:
            response = self._error(path, 400, str(e))
        except RecursionError:  # only a client's nesting goes this deep
            response = self._error(path, 400, "malformed request: nested too deeply")
        except Exception:  # a bug, not bad input: a generic answer; the details go to the log only
            reference = secrets.token_hex(4)
            log.exception("%s %s failed (reference %s)", method, short_repr(path, 200), reference)
            response = self._error(path, 500, f"internal error (reference {reference}; details in the log)")
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

    def _resolve(self, method: str, path: str) -> Route:
        """Every request off the fast path: Seldon's ingress prefix, v2 model paths, HEAD, OPTIONS, 405, 404."""
        if path.startswith("/seldon/"):
            path = self._strip_ingress(path)
        if path.startswith("/v2/models/"):
            routes = self._v2_model(path)
        else:
            routes = self._by_path.get(path, {})
            if not routes:
                raise HTTPError(404, f"{short_repr(path)}: no such endpoint (see /docs)")
        route = routes.get(method)
        if route is not None:
            return route
        if method == "HEAD" and "GET" in routes:  # uvicorn sends the GET answer's headers, not its body
            return routes["GET"]
        allow = ", ".join([*routes, *(["HEAD"] if "GET" in routes else []), "OPTIONS"]).encode()
        if method == "OPTIONS":
            return Route("", lambda app, body: Response(204, b"", b"text/plain", [(b"allow", allow)]))
        raise HTTPError(
            405,
            f"{method} {short_repr(path)}: method not allowed (use {allow.decode()})",
            [(b"allow", allow)],
        )

    def _strip_ingress(self, path: str) -> str:
        # /seldon/<namespace>/<deployment>/<rest> or /seldon/<deployment>/<rest>, as Seldon's ingress routes
        parts = path.split("/", 5)  # ["", "seldon", a, b, ...]
        if len(parts) >= 4 and parts[3] in self._top_segments:
            deployment, rest = parts[2], "/" + "/".join(parts[3:])
        elif len(parts) >= 5:
            deployment, rest = parts[3], "/" + "/".join(parts[4:])
        else:
            raise HTTPError(
                404, f"{short_repr(path)}: expected /seldon/<namespace>/<deployment>/api/v1.0/..."
            )
        if self.deployment is not None and deployment != self.deployment:
            raise HTTPError(
                404, f"no deployment {short_repr(deployment)} here: this predictor serves {self.deployment!r}"
            )
        return rest

    def _v2_model(self, path: str) -> dict[str, Route]:
        """/v2/models/{name}[/versions/{version}][/ready | /infer] -> its routes by method (404 otherwise)."""
        parts = path[len("/v2/models/") :].split("/")
        name, rest = parts[0], parts[1:]
        if name not in self.names:
            raise HTTPError(404, f"unknown model {short_repr(name)}: this predictor serves {self.name!r}")
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
            if version not in self.versions:
                raise HTTPError(
                    404,
                    f"model {name!r} has no version {short_repr(version)} (this predictor serves {self.version})",
                )
        routes = self._v2_actions.get(rest[0] if rest else "")
        if routes is None or len(rest) > 1:
            raise HTTPError(404, f"{short_repr(path)}: no such endpoint (see /docs)")
        return routes

    async def _body(self, scope: Scope, receive: Receive, seldon_route: bool = False) -> bytes:
        form = False
        for key, value in scope["headers"]:
            if key == b"content-length":
                if value.isdigit() and int(value) > self.max_body_bytes:
                    raise self._too_large()  # before reading a byte of it
            elif key == b"content-type" and seldon_route and not value.startswith(JSON):
                form = self._form_type(value)
        message = await receive()
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False) and message["type"] == "http.request":
            if len(body) > self.max_body_bytes:
                raise self._too_large()
            return _form_json(body) if form else body  # the common case: the whole body in one message
        chunks = [body]
        size = len(body)
        while True:
            if message["type"] == "http.disconnect":
                raise HTTPError(400, "client disconnected before sending the whole body")
            if size > self.max_body_bytes:
                raise self._too_large()
            if not message.get("more_body", False):
                whole = b"".join(chunks)
                return _form_json(whole) if form else whole
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)

    @staticmethod
    def _form_type(content_type: bytes) -> bool:
        media = content_type.split(b";", 1)[0].strip().lower()
        if media == FORM:
            return True
        if media == b"multipart/form-data":
            raise HTTPError(415, "multipart/form-data is not supported: send JSON, or the form field json=")
        return False

    def _too_large(self) -> HTTPError:
        return HTTPError(
            413,
            f"request body too large: the limit is {self.max_body_bytes} bytes",
            [(b"connection", b"close")],
        )

    def _error(self, path: str, status: int, message: str) -> Response:
        if path.startswith("/v2") or "/v2/" in path:
            return json_response(v2.error_body(message), status)
        return json_response(seldon.error_body(status, message), status)

    # Seldon v1 -------------------------------------------------------------------------------------
    def seldon_predict(self, body: bytes) -> Response:
        request = seldon.decode_predict(_loads(body))
        X = self.predictor.validate(request.rows, request.names)
        prediction = self.predictor.predict(X)
        check_answer(X, prediction.probabilities)
        self.metrics.add_rows(len(X))
        return Response(200, self._seldon_encoder.encode(request, prediction))

    def seldon_feedback(self, body: bytes) -> Response:
        feedback = seldon.decode_feedback(_loads(body), self.classes, self._labels_of, self.target_bounds)
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
        if feedback.error is not None:
            meta["tags"]["mean_abs_error"] = feedback.error
        meta["requestPath"] = {self.name: self.predictor.digest}
        return json_response({"data": {"ndarray": []}, "meta": meta})

    def _labels_of(self, request: seldon.PredictRequest) -> list[Any]:
        """What this model predicts for a feedback's request (checks it; scores a truth sent without response)."""
        labels: list[Any] = self.predictor.predict_rows(request.rows, request.names).labels.tolist()
        return labels

    def ping(self, body: bytes) -> Response:
        return Response(200, b"pong", b"text/plain")

    def health_status(self, body: bytes) -> Response:
        # As Seldon's wrapper does: a model that cannot answer a fixed row is not healthy.
        label = self.predictor.probe().labels[0]
        return json_response(
            {
                "jsonData": {
                    "status": "ok",
                    "probe_label": label.item() if hasattr(label, "item") else label,
                },
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

    def model_ready(self, body: bytes) -> Response:
        return json_response({"name": self.name, "ready": True})

    def v2_infer(self, body: bytes) -> Response:
        request = v2.decode_infer(
            _loads(body), self._feature_set, self.v2_outputs, typed=not self.predictor.features.plain
        )
        X = self.predictor.validate(request.rows)
        prediction = self.predictor.predict(X)
        check_answer(X, prediction.probabilities)
        self.metrics.add_rows(len(X))
        return json_response(v2.encode_infer(request, prediction, self.name, self.version))

    # operations ------------------------------------------------------------------------------------
    def prometheus(self, body: bytes) -> Response:
        return Response(200, self.metrics.exposition(), METRICS_CONTENT_TYPE.encode())

    def openapi_json(self, body: bytes) -> Response:
        return Response(200, self._openapi)


def _docs_asset(path: str) -> Handler:
    """Swagger UI, served from the installed package (no CDN): read once, on the first request."""

    def handler(app: PredictorApp, body: bytes) -> Response:
        content, content_type = openapi.docs_asset(path)
        return Response(200, content, content_type)

    return handler


def _loads(body: bytes) -> Any:
    if not body:
        raise RequestError("malformed JSON: the request body is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        if b"NaN" in body or b"Infinity" in body or "infinity" in str(e):
            # Not JSON, but what Python's json.dumps writes for nan/inf: parse it so that the validator can
            # name the feature holding the non-finite value. Bounded like orjson: integers of more than 20
            # digits read as floats, nesting ends in RecursionError (a 400).
            try:
                return json.loads(body, parse_int=_bounded_int)
            except (ValueError, RecursionError):
                pass
        raise RequestError(f"malformed JSON: {e}") from None


def _bounded_int(text: str) -> int | float:
    return int(text) if len(text) <= _MAX_INT_DIGITS else float(text)


def _form_json(body: bytes) -> bytes:
    """The form field `json=` of a Seldon microservice request (what seldon-core's client sends)."""
    try:
        fields = parse_qs(body.decode("ascii"), keep_blank_values=True, max_num_fields=8, strict_parsing=True)
    except (UnicodeDecodeError, ValueError) as e:
        raise RequestError(f"malformed form body: {e}") from None
    values = fields.get("json", [])
    if len(values) != 1:
        raise RequestError("a form body needs exactly one field json= holding the JSON message")
    return values[0].encode()
