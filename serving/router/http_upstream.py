"""The router's real connection to a predictor: a small pooled HTTP/1.1 client on asyncio and httptools.

A request is one `transport.write` of a prebuilt head and body on a kept-alive connection, and one httptools
(llhttp) parse of the answer; httptools is the parser uvicorn already runs at the router's front. It costs a
fraction of a general client's CPU (benchmarks/gateway.py measures both), and the router's hop is mostly
client CPU. What it guarantees, each covered by a hostile-predictor test in tests/serving/router/:

    the request target          sent as given (the router validated it), refused if it holds a byte that
                                is not visible ASCII; header names must be tokens and values may not hold
                                CR, LF or NUL, so nothing the router writes can split a request
    interim answers (1xx)       skipped, never taken as the final answer (a 101 is refused)
    framing                     Content-Length, chunked, or (without either) the body ends when the
                                predictor closes; anything llhttp refuses is an error, and the connection
                                is closed
    answer size                 a head over 64 KiB or 200 headers, or a body over `max_body` bytes, is
                                refused as it arrives (never buffered whole)
    time                        `connect_timeout` to connect, then the caller's `timeout` for the answer
    a stale pooled connection   closed by the predictor while idle, before any byte of the answer came:
                                the request is sent once more on a fresh connection
    the pool                    at most `max_connections` per predictor (more callers wait, within their
                                timeout); idle ones closed after KEEPALIVE_SECONDS, before a uvicorn
                                predictor (5 s) or Seldon's executor (65 s) would; a connection goes back
                                only after a complete answer that keeps it alive, with no byte after it
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Sequence
from typing import cast

import httptools

from serving.router.upstream import Response, UpstreamError

KEEPALIVE_SECONDS = 4.0
MAX_BODY = 8 << 20
MAX_HEAD_BYTES = 64 << 10
MAX_HEADERS = 200
MAX_INTERIM = 8  # 1xx answers skipped before the final one

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(r"/[\x21-\x7e]*")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_HOST = re.compile(rb"[A-Za-z0-9.\-_:\[\]]+")


class _Connection(asyncio.Protocol):
    """One kept-alive connection to a predictor; one request at a time."""

    __slots__ = (
        "_body",
        "_body_size",
        "_done",
        "_head_size",
        "_headers",
        "_in_head",
        "_interim",
        "_keep_alive",
        "_no_body",
        "_raw_head",
        "_upstream",
        "broken",
        "closed",
        "idle_since",
        "parser",
        "received",
        "transport",
        "waiter",
    )

    def __init__(self, upstream: HttpUpstream):
        self._upstream = upstream
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.broken = False  # bytes came that belong to no request: never reuse
        self.received = False  # a byte of the current answer came
        self.idle_since = 0.0
        self._no_body = False
        self._reset()

    def _reset(self) -> None:
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._head_size = 0
        self._interim = 0
        self._done = False
        self._keep_alive = False
        self._in_head = True  # the final answer's head is not complete yet
        self._raw_head = 0

    # asyncio.Protocol ----------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:
            self.broken = True  # an answer nobody asked for: this connection is out of step
            self.close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(self._error("answered with a protocol switch"))
        except httptools.HttpParserError as e:
            ours = e.__context__
            self._fail(
                ours if isinstance(ours, UpstreamError) else self._error(f"sent a malformed answer ({e})")
            )
        else:
            if self._in_head:
                # httptools buffers a header until it is whole: bound what the head may grow to
                self._raw_head += len(data)
                if self._raw_head > MAX_HEAD_BYTES:
                    self._fail(self._error(f"sent an answer head over {MAX_HEAD_BYTES} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._upstream._forget(self)
        if self.waiter is None:
            return
        if self.received and not self._in_head and self._close_delimited():
            self._finish()  # no length and not chunked: the body ended with the connection
            return
        reason = f" ({exc})" if exc else ""
        if self.received:
            self._fail(self._error(f"closed the connection in the middle of its answer{reason}"))
        else:
            self._fail(self._error(f"closed the connection without answering{reason}", stale=True))

    # httptools callbacks -------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._done:
            self.broken = True  # a second answer right behind the first: not ours
            raise self._error("sent more than one answer to one request")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value)
        if self._head_size > MAX_HEAD_BYTES or len(self._headers) >= MAX_HEADERS:
            raise self._error(f"sent an answer head over {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} headers")
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            return  # interim: llhttp ends this message here, the final answer follows
        self._in_head = False
        length = self._header(b"content-length")
        if length is not None and length.isdigit() and int(length) > self._upstream.max_body:
            raise self._error(
                f"announced a {int(length)}-byte answer (the limit is {self._upstream.max_body})"
            )
        if self._no_body:
            self._finish()

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._upstream.max_body:
            raise self._error(f"sent an answer over {self._upstream.max_body} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._done:
            return  # a HEAD answer, finished at its head
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self._interim += 1
            if self._interim > MAX_INTERIM:
                raise self._error(f"sent more than {MAX_INTERIM} interim answers")
            self._headers = []
            self._head_size = 0
            self._raw_head = 0
            return
        self._finish()

    # ours ------------------------------------------------------------------------------------------------
    def _header(self, name: bytes) -> bytes | None:
        for k, v in self._headers:
            if k == name:
                return v
        return None

    def _close_delimited(self) -> bool:
        status = self.parser.get_status_code()
        return (
            status >= 200
            and self._header(b"content-length") is None
            and self._header(b"transfer-encoding") is None
        )

    def _finish(self) -> None:
        self._done = True
        self._keep_alive = self.parser.should_keep_alive()  # llhttp knows it only until the message ends
        waiter, self.waiter = self.waiter, None
        response = Response(self.parser.get_status_code(), self._headers, b"".join(self._body))
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _error(self, what: str, *, stale: bool = False) -> UpstreamError:
        return UpstreamError(f"{self._upstream.address} {what}", sent=True, stale=stale)

    def _fail(self, error: UpstreamError) -> None:
        self.broken = True
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.close()

    def start(self, waiter: asyncio.Future[Response], data: bytes, no_body: bool) -> None:
        self.waiter = waiter
        self.received = False
        self._no_body = no_body
        self._reset()
        assert self.transport is not None
        self.transport.write(data)

    def reusable(self) -> bool:
        return self._done and not self.closed and not self.broken and not self._no_body and self._keep_alive

    def expire(self, timeout: float) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(
                UpstreamError(
                    f"{self._upstream.address} did not answer within {timeout:g} s", sent=True, timeout=True
                )
            )
        self.broken = True
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()


class HttpUpstream:
    """Requests to the predictor at `host:port` (`authority`: the Host header, when it differs)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        authority: str | None = None,
        connect_timeout: float = 2.0,
        max_connections: int = 256,
        max_body: int = MAX_BODY,
    ):
        self.host = host
        self.port = port
        self._address = f"{host}:{port}"
        self._authority = authority
        host_value = (authority or self._address).encode("ascii")
        if not _HOST.fullmatch(host_value):
            raise ValueError(f"authority {authority!r}: not a host[:port]")
        self._host_line = b"host: " + host_value + b"\r\n"
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.max_body = max_body
        self._idle: deque[_Connection] = deque()  # the most recently used on the right
        self._open: set[_Connection] = set()
        self._slots: asyncio.Semaphore | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._closing = False

    @property
    def address(self) -> str:
        return self._address

    @property
    def authority(self) -> str | None:
        """The Host header sent, when it is not the address connected to (a Service name)."""
        return self._authority

    async def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        timeout: float,
    ) -> Response:
        data = self._encode(method, target, headers, body)
        no_body = method == "HEAD"
        slots = self._slots
        if slots is None:
            slots = self._slots = asyncio.Semaphore(self.max_connections)
        if slots.locked():
            try:
                await asyncio.wait_for(slots.acquire(), timeout)
            except TimeoutError:
                raise UpstreamError(
                    f"{self._address}: no free connection within {timeout:g} s "
                    f"(at most {self.max_connections} open)",
                    timeout=True,
                ) from None
        else:
            await slots.acquire()
        try:
            conn, reused = self._pooled(), True
            if conn is None:
                conn, reused = await self._connect(), False
            try:
                return await self._exchange(conn, data, no_body, timeout)
            except UpstreamError as e:
                if not (reused and e.stale):
                    raise
            # A pooled connection the predictor had closed while idle, before any byte of the answer: once
            # more, on a fresh connection.
            return await self._exchange(await self._connect(), data, no_body, timeout)
        finally:
            slots.release()

    def _encode(self, method: str, target: str, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> bytes:
        if not _TOKEN.fullmatch(method.encode("latin-1")):
            raise UpstreamError(f"method {method[:40]!r}: not an HTTP token")
        if not _TARGET.fullmatch(target):
            raise UpstreamError(f"request target {target[:200]!r}: only visible ASCII after a '/' is allowed")
        parts = [method.encode("ascii"), b" ", target.encode("ascii"), b" HTTP/1.1\r\n", self._host_line]
        for k, v in headers:
            if not _TOKEN.fullmatch(k) or _BAD_VALUE.search(v):
                raise UpstreamError(
                    f"header {k[:100]!r}: a name must be a token and a value may not hold CR, LF or NUL"
                )
            parts += (k, b": ", v, b"\r\n")
        if body or method not in ("GET", "HEAD"):
            parts.append(b"content-length: %d\r\n" % len(body))
        parts += (b"\r\n", body)
        return b"".join(parts)

    def _pooled(self) -> _Connection | None:
        idle = self._idle
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < KEEPALIVE_SECONDS:
                return conn
            self._drop(conn)
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except TimeoutError as e:
            raise UpstreamError(f"cannot connect to {self._address}: timed out") from e
        except OSError as e:
            raise UpstreamError(f"cannot connect to {self._address}: {e}") from e
        self._open.add(conn)
        return conn

    async def _exchange(self, conn: _Connection, data: bytes, no_body: bool, timeout: float) -> Response:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Response] = loop.create_future()
        try:
            conn.start(waiter, data, no_body)
        except (OSError, RuntimeError) as e:
            self._drop(conn)
            raise conn._error(f"could not be written to ({e})", stale=True) from e
        timer = loop.call_later(timeout, conn.expire, timeout)  # a bare timer: this is the hot path
        try:
            response = await waiter
        except BaseException:
            self._drop(conn)
            raise
        finally:
            timer.cancel()
        if conn.reusable() and not self._closing:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
            if self._sweeper is None:
                self._sweeper = loop.call_later(KEEPALIVE_SECONDS, self._sweep)
        else:
            self._drop(conn)
        return response

    def _sweep(self) -> None:
        """Close the connections idle for KEEPALIVE_SECONDS (the oldest are on the left)."""
        self._sweeper = None
        idle = self._idle
        limit = time.monotonic() - KEEPALIVE_SECONDS
        while idle and (idle[0].closed or idle[0].idle_since <= limit):
            self._drop(idle.popleft())
        if idle and not self._closing:
            wait = max(idle[0].idle_since - limit, 0.05)
            self._sweeper = asyncio.get_running_loop().call_later(wait, self._sweep)

    def _drop(self, conn: _Connection) -> None:
        conn.close()
        self._open.discard(conn)

    def _forget(self, conn: _Connection) -> None:
        self._open.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)

    @property
    def open_connections(self) -> int:
        """Connections open now (in use and idle)."""
        return len(self._open)

    async def close(self) -> None:
        """Close every connection; requests in flight fail now, later ones open new connections."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()
