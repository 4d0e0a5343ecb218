"""An `Upstream` that calls an ASGI app in the same process: the router's rules, tested without a socket.

The app sees the request as a server would hand it over (method, raw path, query, headers, whole body) and
answers with ordinary ASGI messages. An app that raises `UpstreamError` plays a predictor that cannot be
reached (or, with `sent=True`, one that dropped the connection); an app slower than the timeout plays a
predictor that hangs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import unquote

from serving.router.upstream import Response, UpstreamError

Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]


class InMemoryUpstream:
    def __init__(self, app: ASGIApp, address: str = "memory"):
        self.app = app
        self._address = address
        self.requests: list[tuple[str, str, list[tuple[bytes, bytes]], bytes]] = []  # what it was sent

    @property
    def address(self) -> str:
        return self._address

    async def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        timeout: float,
    ) -> Response:
        self.requests.append((method, target, list(headers), body))
        path, _, query = target.partition("?")
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": unquote(path),
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "headers": list(headers),
            "client": ("127.0.0.1", 0),
            "server": ("memory", 0),
        }
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        status = 0
        answer_headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []

        async def send(message: Message) -> None:
            nonlocal status, answer_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                answer_headers = [(k.lower(), v) for k, v in message.get("headers", [])]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await asyncio.wait_for(self.app(scope, receive, send), timeout)
        except TimeoutError as e:
            raise UpstreamError(
                f"{self._address} did not answer within {timeout:g} s", sent=True, timeout=True
            ) from e
        if status == 0:
            raise UpstreamError(f"{self._address} closed the connection without answering", sent=True)
        return Response(status, answer_headers, b"".join(chunks))

    async def close(self) -> None:
        return None
