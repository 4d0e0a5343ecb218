"""A lean HTTP/1.1 server for the gateway's ASGI app: one socket write per response.

Why not uvicorn here: on this 2-core box a loopback write costs more than the gateway's own Python work per
request, and uvicorn writes a response's head and body separately. This server parses with httptools (as
uvicorn does), hands the app a complete request body, buffers `http.response.start` and writes it together
with the body. It covers what the gateway's clients send: keep-alive, pipelined requests (answered in
order), chunked request bodies, `Expect: 100-continue`, HTTP/1.0, a body-size limit, idle timeouts.
Any ASGI app that reads one body and answers with one (or a few) body messages runs on it; the gateway
also runs unchanged under uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any, cast

import httptools

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]

MAX_BODY = 8 << 20
IDLE_TIMEOUT = 75.0
MAX_PIPELINED = 64


def _status_line(code: int) -> bytes:
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {code} {phrase}\r\n".encode()


STATUS_LINES = {code: _status_line(code) for code in range(100, 600)}


class _Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "url", "version")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.method = b""
        self.version = "1.1"
        self.keep_alive = True


class _HttpConnection(asyncio.Protocol):
    def __init__(self, server: GatewayServer):
        self.server = server
        self.app = server.app
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.current: _Request | None = None
        self.size = 0
        self.too_large = False
        self.paused = False
        self.queue: deque[_Request] = deque()
        self.busy = False
        self.closed = False
        self.idle_timer: asyncio.TimerHandle | None = None
        self.server_addr: tuple[str, int] | None = None
        self.client_addr: tuple[str, int] | None = None

    # asyncio.Protocol ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self.client_addr = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        self.server_addr = (str(local[0]), int(local[1])) if isinstance(local, tuple) else None
        self.server.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.idle_timer is not None:
            self.idle_timer.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, b"upgrades are not supported")
        except httptools.HttpParserError as e:
            # httptools wraps what a callback raises; the size check says so through `too_large`.
            if self.too_large:
                self._fail(413, f"body too large: more than {MAX_BODY} bytes".encode())
            else:
                self._fail(400, f"malformed HTTP request: {e}".encode())

    # httptools callbacks --------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.current = _Request()
        self.size = 0
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def on_url(self, url: bytes) -> None:
        assert self.current is not None
        self.current.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        self.current.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        request = self.current
        assert request is not None and self.transport is not None
        request.method = self.parser.get_method()
        request.version = self.parser.get_http_version()
        for name, value in request.headers:
            if name == b"content-length" and value.isdigit() and int(value) > MAX_BODY:
                self.too_large = True
                raise _TooLarge
            if name == b"expect" and value.lower() == b"100-continue":
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        assert self.current is not None
        self.size += len(body)
        if self.size > MAX_BODY:
            self.too_large = True
            raise _TooLarge
        self.current.body.append(body)

    def on_message_complete(self) -> None:
        request = self.current
        assert request is not None
        request.keep_alive = self.parser.should_keep_alive()
        self.current = None
        self.queue.append(request)
        if len(self.queue) > MAX_PIPELINED and self.transport is not None:
            self.transport.pause_reading()  # a client pipelining without reading answers waits
            self.paused = True
        if not self.busy:
            self.busy = True
            task = asyncio.get_running_loop().create_task(self._serve_queue())
            self.server.tasks.add(task)
            task.add_done_callback(self.server.tasks.discard)

    # serving ------------------------------------------------------------------------------------------
    async def _serve_queue(self) -> None:
        try:
            while self.queue and not self.closed:
                request = self.queue.popleft()
                if self.paused and len(self.queue) <= MAX_PIPELINED // 2 and self.transport is not None:
                    self.transport.resume_reading()
                    self.paused = False
                await self._run(request)
                if not request.keep_alive:
                    self._close()
                    return
        finally:
            self.busy = False
            if not self.closed and not self.queue:
                self._arm_idle()

    async def _run(self, request: _Request) -> None:
        url = httptools.parse_url(request.url)
        raw_path = url.path or b"/"
        body = b"".join(request.body)
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.version,
            "method": request.method.decode("ascii"),
            "scheme": "http",
            "path": _unquote(raw_path),
            "raw_path": raw_path,
            "query_string": url.query or b"",
            "root_path": "",
            "headers": request.headers,
            "client": self.client_addr,
            "server": self.server_addr,
        }
        sent_body = False

        async def receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}

        state: dict[str, Any] = {"head": None, "chunked": False, "done": False}

        async def send(message: Message) -> None:
            if self.closed or state["done"]:
                return
            kind = message["type"]
            if kind == "http.response.start":
                headers = message.get("headers", [])
                parts = [STATUS_LINES.get(message["status"]) or _status_line(message["status"])]
                has_length = False
                for k, v in headers:
                    if k.lower() == b"content-length":
                        has_length = True
                    parts.append(k + b": " + v + b"\r\n")
                if not has_length:
                    state["chunked"] = True
                    parts.append(b"transfer-encoding: chunked\r\n")
                if not request.keep_alive:
                    parts.append(b"connection: close\r\n")
                parts.append(b"\r\n")
                state["head"] = b"".join(parts)
            elif kind == "http.response.body":
                data = message.get("body", b"")
                more = message.get("more_body", False)
                if state["chunked"]:
                    data = (b"%x\r\n%s\r\n" % (len(data), data) if data else b"") + (
                        b"" if more else b"0\r\n\r\n"
                    )
                if request.method == b"HEAD":
                    data = b""
                head, state["head"] = state["head"], None
                assert self.transport is not None
                self.transport.write(head + data if head else data)  # one write for a whole response
                if not more:
                    state["done"] = True

        try:
            await self.app(scope, receive, send)
        except Exception:  # the app failed: the caller still gets an answer, and the connection stays sane
            if state["head"] is None and not state["done"] and not self.closed:
                self._write_error(500, b"internal error in the gateway")
            elif not state["done"]:
                self._close()
            return
        if not state["done"] and not self.closed:
            self._close()  # an app that did not finish its answer leaves the stream unusable

    # helpers ------------------------------------------------------------------------------------------
    def _write_error(self, status: int, message: bytes) -> None:
        assert self.transport is not None
        body = b'{"error": "' + message.replace(b'"', b"'") + b'"}'
        self.transport.write(
            STATUS_LINES[status]
            + b"content-type: application/json\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )

    def _fail(self, status: int, message: bytes) -> None:
        if not self.closed and self.transport is not None:
            self._write_error(status, message)
        self._close()

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def _arm_idle(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self.idle_timer = asyncio.get_running_loop().call_later(self.server.idle_timeout, self._idle)

    def _idle(self) -> None:
        if not self.busy and not self.queue and self.current is None:
            self._close()


class _TooLarge(Exception):
    pass


def _unquote(raw: bytes) -> str:
    if b"%" not in raw:
        return raw.decode("latin-1")
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(raw).decode("latin-1")


class GatewayServer:
    """Serve an ASGI app on a bound socket until `shutdown()`."""

    def __init__(self, app: ASGIApp, *, idle_timeout: float = IDLE_TIMEOUT):
        self.app = app
        self.idle_timeout = idle_timeout
        self.connections: set[_HttpConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._lifespan: asyncio.Task[None] | None = None
        self._lifespan_queue: asyncio.Queue[Message] = asyncio.Queue()

    async def start(self, sock: socket.socket) -> None:
        await self._startup()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _HttpConnection(self), sock=sock, backlog=1024)

    async def shutdown(self, grace: float = 10.0) -> None:
        """Stop accepting, let requests in progress finish (up to `grace` s), close connections."""
        if self._server is not None:
            self._server.close()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=grace)
        for conn in list(self.connections):
            conn._close()
        await self._shutdown_lifespan()

    # ASGI lifespan, so the app can start and stop its background work (the shadow mirror) -------------
    async def _startup(self) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def receive() -> Message:
            return await self._lifespan_queue.get()

        async def send(message: Message) -> None:
            if message["type"].startswith("lifespan.startup") and not done.done():
                done.set_result(None)

        async def run() -> None:
            with contextlib.suppress(Exception):
                await self.app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
            if not done.done():
                done.set_result(None)

        self._lifespan = asyncio.create_task(run())
        await self._lifespan_queue.put({"type": "lifespan.startup"})
        await done

    async def _shutdown_lifespan(self) -> None:
        if self._lifespan is None:
            return
        await self._lifespan_queue.put({"type": "lifespan.shutdown"})
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(self._lifespan, 5.0)
        self._lifespan = None
