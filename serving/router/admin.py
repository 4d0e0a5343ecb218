"""The router's admin endpoint, on its own port (bound to loopback unless told otherwise).

    GET /metrics, /prometheus   Seldon executor metrics and the router's own (see executor_metrics)
    GET /routes                 the routing table as JSON, with each predictor's internal address
    GET /healthz                200 while the process runs (a liveness probe)
    GET /readyz                 200 once there are routes with a live predictor, else 503 (a readiness probe)

None of this is served on the traffic port: metrics and addresses are for operators and Prometheus.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from serving.router.executor_metrics import CONTENT_TYPE
from serving.router.proxy import Router

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


class Admin:
    """ASGI app over a `Router`'s state."""

    def __init__(self, router: Router):
        self.router = router

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        status, content_type, body = 404, b"application/json", orjson.dumps({"error": f"{path}: not found"})
        if method not in ("GET", "HEAD"):
            status, body = 405, orjson.dumps({"error": f"{method} {path}: method not allowed (use GET)"})
        elif path in ("/metrics", "/prometheus"):
            status, content_type, body = 200, CONTENT_TYPE.encode(), self.router.metrics.exposition()
        elif path == "/routes":
            status, body = 200, orjson.dumps(self.router.describe())
        elif path == "/healthz":
            status, body = 200, b'{"live": true}'
        elif path == "/readyz":
            routes = self.router.routes
            ready = routes is not None and any(routes.alive(t.name) for t in routes.table.live)
            status, body = (200, b'{"ready": true}') if ready else (503, b'{"ready": false}')
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        if status == 405:
            headers.append((b"allow", b"GET, HEAD"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
