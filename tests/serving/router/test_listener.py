"""The router's HTTP edge (uvicorn with the limits of `Limits`), spoken to over raw sockets."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from serving.router.listener import Limits, Listener, bind

pytestmark = pytest.mark.timeout(60)
LIMITS = Limits(
    max_url_bytes=1024, max_headers=20, max_header_bytes=2048, read_timeout=1.0, max_connections=8
)


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the method, path, query and body it got; /stream sends two parts."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ab", "more_body": True})
        await send({"type": "http.response.body", "body": b"cd"})
        return
    out = b"%s %s ?%s %s" % (scope["method"].encode(), scope["raw_path"], scope["query_string"], body)
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(out)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": out})


@pytest.fixture()
def address() -> Iterator[tuple[str, int]]:
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    ready = threading.Event()
    state: dict[str, Any] = {}

    def run() -> None:
        async def main() -> None:
            listener = Listener(echo, sock, LIMITS)
            await listener.start()
            state["stop"] = asyncio.Event()
            state["loop"] = asyncio.get_running_loop()
            ready.set()
            await state["stop"].wait()
            await listener.stop()

        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield ("127.0.0.1", port)
    state["loop"].call_soon_threadsafe(state["stop"].set)
    thread.join(15)


def raw(address: tuple[str, int], data: bytes, expect: int = 1, timeout: float = 5.0) -> bytes:
    """Send `data`, read until `expect` complete answers arrived or the server closed."""
    with socket.create_connection(address, timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while _answers(out) < expect:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
        return out


def _answers(out: bytes) -> int:
    """How many complete Content-Length answers `out` holds."""
    n, rest = 0, out
    while b"\r\n\r\n" in rest:
        head, _, rest = rest.partition(b"\r\n\r\n")
        if head.startswith(b"HTTP/1.1 100"):
            continue
        length = 0
        for line in head.lower().split(b"\r\n"):
            if line.startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        if len(rest) < length:
            break
        rest = rest[length:]
        n += 1
    return n


def closed_by_server(s: socket.socket, within: float) -> tuple[bool, bytes]:
    """Whether the server closed `s` within `within` seconds, and what it wrote before."""
    s.settimeout(within)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return True, out
            out += chunk
    except TimeoutError:
        return False, out
    except ConnectionResetError:
        return True, out


def test_keep_alive_pipelining_chunked_and_percent_encoded_paths(address: tuple[str, int]) -> None:
    with httpx.Client(base_url=f"http://{address[0]}:{address[1]}") as c:
        for i in range(3):
            r = c.post(f"/a%20b?x={i}", content=b"hello")
            assert r.text == f"POST /a%20b ?x={i} hello"  # the raw target, as sent
        assert c.get("/stream").text == "abcd"
    one = b"POST /one HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\n1"
    two = b"POST /two HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\n2"
    out = raw(address, one + two, expect=2)
    assert out.index(b"POST /one") < out.index(b"POST /two")
    chunked = (
        b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    assert raw(address, chunked).endswith(b"POST /c ? abcde")


def test_100_continue_is_answered_by_the_server_once_the_body_is_wanted(address: tuple[str, int]) -> None:
    with socket.create_connection(address, timeout=5) as s:
        s.sendall(b"POST /e HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n")
        interim = s.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"hi")
        out = b""
        while not out.endswith(b"POST /e ? hi"):
            out += s.recv(65536)
        assert out.startswith(b"HTTP/1.1 200")


def test_malformed_requests_get_400_and_raw_cr_lf_never_reaches_the_app(address: tuple[str, int]) -> None:
    bad = raw(address, b"NOT HTTP AT ALL\r\n\r\n")
    assert bad.startswith(b"HTTP/1.1 400")
    split = raw(address, b"GET /a\r\nx HTTP/1.1\r\nhost: x\r\n\r\n")
    assert split.startswith(b"HTTP/1.1 400") and b"GET /a" not in split


def test_a_long_url_gets_414_and_the_pipelined_request_after_it_is_served(address: tuple[str, int]) -> None:
    long_url = b"/" + b"u" * 70_000  # more than 64 KiB
    first = b"GET " + long_url + b" HTTP/1.1\r\nhost: x\r\n\r\n"
    second = b"POST /after HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nok"
    out = raw(address, first + second, expect=2)
    assert out.startswith(b"HTTP/1.1 414") and b"request URL too long" in out
    assert out.endswith(b"POST /after ? ok")
    assert b"u" * 2000 not in out  # never buffered into an answer


def test_too_many_or_too_large_headers_get_431_and_the_connection_stays_usable(
    address: tuple[str, int],
) -> None:
    many = b"".join(b"x-h%d: v\r\n" % i for i in range(LIMITS.max_headers + 5))
    after = b"POST /after HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nz"
    out = raw(address, b"GET /m HTTP/1.1\r\nhost: x\r\n" + many + b"\r\n" + after, expect=2)
    assert out.startswith(b"HTTP/1.1 431") and b"too many header fields" in out
    assert out.endswith(b"POST /after ? z")
    big = b"x-big: " + b"v" * (LIMITS.max_header_bytes + 10) + b"\r\n"
    out = raw(address, b"GET /b HTTP/1.1\r\nhost: x\r\n" + big + b"\r\n")
    assert out.startswith(b"HTTP/1.1 431") and b"header fields too large" in out


def test_a_header_that_never_ends_is_cut_off_without_being_buffered(address: tuple[str, int]) -> None:
    with socket.create_connection(address, timeout=5) as s:
        s.sendall(b"GET /flood HTTP/1.1\r\nhost: x\r\nx-flood: ")
        sent = 0
        with pytest.raises(OSError):  # reset or broken pipe once the server closes
            while sent < 50 * LIMITS.max_header_bytes:
                s.sendall(b"v" * 4096)
                sent += 4096
                time.sleep(0.001)
        assert sent < 50 * LIMITS.max_header_bytes


def test_a_half_sent_request_is_closed_after_the_read_timeout(address: tuple[str, int]) -> None:
    with socket.create_connection(address) as head_only, socket.create_connection(address) as body_short:
        head_only.sendall(b"POST /slow HTTP/1.1\r\nhost: x\r\n")
        body_short.sendall(b"POST /slow HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")
        started = time.monotonic()
        for s in (head_only, body_short):
            closed, written = closed_by_server(s, within=LIMITS.read_timeout + 2.0)
            assert closed and written.startswith(b"HTTP/1.1 408"), written
        assert time.monotonic() - started < LIMITS.read_timeout + 2.0


def test_a_connection_that_sends_nothing_is_closed_after_the_read_timeout(address: tuple[str, int]) -> None:
    with socket.create_connection(address) as idle:
        closed, written = closed_by_server(idle, within=LIMITS.read_timeout + 2.0)
        assert closed and written == b""


def test_connections_beyond_the_cap_get_503_at_once(address: tuple[str, int]) -> None:
    held = [socket.create_connection(address) for _ in range(LIMITS.max_connections)]
    try:
        # Each held connection has begun a request, so they count (and do not time out at once).
        for s in held:
            s.sendall(b"GET /hold HTTP/1.1\r\nhost: x\r\n")
        deadline = time.monotonic() + LIMITS.read_timeout / 2  # until the server has accepted the held ones
        while True:
            with socket.create_connection(address) as extra:
                extra.sendall(b"GET /extra HTTP/1.1\r\nhost: x\r\n\r\n")
                _, written = closed_by_server(extra, within=2.0)
            if written.startswith(b"HTTP/1.1 503") or time.monotonic() > deadline:
                break
        assert written.startswith(b"HTTP/1.1 503") and b"too many connections" in written
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 5
    while True:  # slots free again once the held ones are gone
        out = raw(address, b"GET /again HTTP/1.1\r\nhost: x\r\n\r\n")
        if out.startswith(b"HTTP/1.1 200") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert out.startswith(b"HTTP/1.1 200")
