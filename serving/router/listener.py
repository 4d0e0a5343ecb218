"""Serve an ASGI app with uvicorn (httptools, uvloop when running), with the limits a public edge needs.

uvicorn parses requests with httptools, answers `Expect: 100-continue` itself when the app reads the body,
queues pipelined requests and validates the header values an app writes. What it leaves to the deployment,
this module adds through a subclass of its httptools protocol (`Limits`):

    request URL longer than `max_url_bytes`                  414, the connection kept (the body is skipped)
    more than `max_headers` headers, or more than
    `max_header_bytes` of names and values                    431, the connection kept
    a request head still growing past twice those limits      431 and the connection closed (it is never
                                                              buffered whole)
    a request begun but not complete after `read_timeout` s   408 and the connection closed
    a new connection that sends nothing for `read_timeout` s  closed
    more than `max_connections` open connections             503 and the new connection closed at once
    an idle keep-alive connection after `keepalive_timeout`  closed

`Listener` runs one uvicorn server on a socket it is given, inside the caller's event loop, without taking
over its signal handling.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


@dataclass(frozen=True)
class Limits:
    """What one client may ask of the server (see the module docstring)."""

    max_url_bytes: int = 8192
    max_headers: int = 100
    max_header_bytes: int = 16384
    read_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    max_connections: int = 1024


def _plain(status: int, message: str, close: bool) -> bytes:
    body = ('{"error": "' + message + '"}').encode()
    head = STATUS_LINE[status] + b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
    return head + (b"connection: close\r\n" if close else b"") + b"\r\n" + body


class _Refusal:
    """A tiny ASGI app answering one status: what a request over a limit gets instead of the router."""

    def __init__(self, status: int, message: str, close: bool):
        self.status, self.message, self.close = status, message, close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = ('{"error": "' + self.message + '"}').encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if self.close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of `Limits` (set per server by `with_limits`)."""

    limits: ClassVar[Limits] = Limits()

    @classmethod
    def with_limits(cls, limits: Limits) -> type[LimitedHttpProtocol]:
        return type("LimitedHttpProtocol", (cls,), {"limits": limits})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refused = False
        self._in_head = False
        self._message_seq = 0
        self._head_bytes = 0
        self._url_bytes = 0
        self._header_count = 0
        self._header_bytes = 0
        self._reject: tuple[int, str] | None = None
        self._read_timer: asyncio.TimerHandle | None = None
        self._has_body = False
        self._expects_continue = False

    # connection ---------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self._refused = True
            self.transport = transport
            transport.write(_plain(503, "too many connections: try again later", close=True))
            transport.close()
            return
        super().connection_made(transport)
        self._arm_read_timer()  # the first request must begin (and end) within the read timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_timer()
        if self._refused:
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused or self.parser is None:
            return
        seq = self._message_seq
        super().data_received(data)
        if self._in_head and self.transport is not None and not self.transport.is_closing():
            # httptools buffers a header until it is complete: bound what a head may grow to.
            self._head_bytes = self._head_bytes + len(data) if seq == self._message_seq else 0
            if self._head_bytes - self._url_bytes > 2 * self.limits.max_header_bytes:
                self._close_with(431, "request header fields too large")

    # parser callbacks ---------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._message_seq += 1
        self._in_head = True
        self._head_bytes = self._url_bytes = self._header_count = self._header_bytes = 0
        self._reject = None
        self._has_body = self._expects_continue = False
        self._arm_read_timer()

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > self.limits.max_url_bytes:
            self._reject = (414, f"request URL too long: the limit is {self.limits.max_url_bytes} bytes")
            return
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value)
        lowered = name.lower()
        if lowered in (b"content-length", b"transfer-encoding") and value.strip() not in (b"", b"0"):
            self._has_body = True
        if lowered == b"expect":
            self._expects_continue = True
        if self._reject is not None:
            return
        if self._header_count > self.limits.max_headers:
            self._reject = (431, f"too many header fields: the limit is {self.limits.max_headers}")
            return
        if self._header_bytes > self.limits.max_header_bytes:
            self._reject = (
                431,
                f"header fields too large: the limit is {self.limits.max_header_bytes} bytes",
            )
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._reject is None:
            super().on_headers_complete()
            if self.cycle is not None and self.transport is not None:
                self.cycle.transport = _Coalescing(self.transport, self.loop)  # type: ignore[assignment]
            return
        status, message = self._reject
        # A caller waiting for `100 Continue` before it sends its body would leave the stream out of step.
        close = self._has_body and self._expects_continue
        self.url = b"/"
        app, self.app = self.app, _Refusal(status, message, close)
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_message_complete(self) -> None:
        self._cancel_read_timer()
        super().on_message_complete()

    # timers -------------------------------------------------------------------------------------------
    def _arm_read_timer(self) -> None:
        self._cancel_read_timer()
        self._read_timer = self.loop.call_later(self.limits.read_timeout, self._read_timed_out)

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport is None or self.transport.is_closing():
            return
        if self.pipeline or (self.flow is not None and self.flow.read_paused):
            self._arm_read_timer()  # we stopped reading (pipelined requests queue up): not the caller's fault
            return
        if self.cycle is not None and not self.cycle.response_complete and not self._in_head:
            if self.cycle.response_started:
                self.transport.close()
                return
            self.cycle.disconnected = True  # the app's receive() says so; it writes nothing more
            self.cycle.message_event.set()
        if self._message_seq == 0 and not self._in_head:
            self.transport.close()  # a connection that never began a request: nothing to answer
            return
        self._close_with(408, f"request not complete within {self.limits.read_timeout:g} s")

    def _close_with(self, status: int, message: str) -> None:
        self._cancel_read_timer()
        self.transport.write(_plain(status, message, close=True))
        self.transport.close()


class _Coalescing:
    """A transport for one response: the writes made in one turn of the event loop go out as one.

    uvicorn writes a response's head and its body separately; on loopback each write is a system call and a
    wake-up of the reader, so a small answer costs two of each. The router sends head and body in the same
    turn, so they leave in one write.
    """

    __slots__ = ("_buffer", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._buffer: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._buffer:
            self._loop.call_soon(self._flush)
        self._buffer.append(data)

    def _flush(self) -> None:
        if self._buffer and not self._transport.is_closing():
            self._transport.write(b"".join(self._buffer))
        self._buffer.clear()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to whoever runs the event loop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Listener:
    """One ASGI app served by uvicorn on a bound, listening socket, inside the running event loop."""

    def __init__(
        self,
        app: Any,
        sock: socket.socket,
        limits: Limits | None = None,
        *,
        lifespan: Literal["on", "off"] = "on",
    ):
        limits = limits or Limits()
        self.sock = sock
        self.limits = limits
        config = uvicorn.Config(
            app,
            http=LimitedHttpProtocol.with_limits(limits),
            lifespan=lifespan,
            access_log=False,
            log_config=None,  # the host process configures logging, not the server
            log_level="warning",
            server_header=False,
            date_header=False,
            proxy_headers=False,
            timeout_keep_alive=int(limits.keepalive_timeout),
            timeout_graceful_shutdown=10,
            backlog=2048,
        )
        self.server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("the server stopped before it started")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop accepting, let requests in progress finish (up to 10 s), close connections."""
        if self._task is None:
            return
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None


ADMIN_LIMITS = Limits(max_connections=64)


async def serve_until(
    stop: asyncio.Event,
    traffic_app: Any,
    admin_app: Any,
    sock: socket.socket,
    admin_sock: socket.socket,
    limits: Limits,
    background: list[Coroutine[Any, Any, None]],
    on_started: Callable[[], None] | None = None,
) -> None:
    """Serve the router's traffic and admin endpoints and run `background` until `stop` is set; then cancel
    the background work and stop both listeners (requests in progress finish)."""
    traffic = Listener(traffic_app, sock, limits)
    admin = Listener(admin_app, admin_sock, ADMIN_LIMITS, lifespan="off")
    await traffic.start()
    await admin.start()
    tasks = [asyncio.create_task(coro) for coro in background]
    if on_started is not None:
        on_started()
    try:
        await stop.wait()
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await traffic.stop()
        await admin.stop()


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (bound before anything else starts, so a busy port fails at once)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when proto says TCP.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    sock.listen(2048)
    sock.setblocking(False)
    return sock
