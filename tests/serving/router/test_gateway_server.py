"""The gateway's HTTP/1.1 server, spoken to over raw sockets: keep-alive, pipelining, chunked, 100-continue."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from serving.local.supervisor import bind
from serving.router.server import MAX_BODY, GatewayServer

pytestmark = pytest.mark.timeout(60)


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the method, path, query and body it got; /boom raises; /stream sends two parts."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    message = await receive()
    if scope["path"] == "/boom":
        raise RuntimeError("boom")
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ab", "more_body": True})
        await send({"type": "http.response.body", "body": b"cd"})
        return
    body = b"%s %s ?%s %s" % (
        scope["method"].encode(),
        scope["path"].encode(),
        scope["query_string"],
        message["body"],
    )
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture()
def url() -> Iterator[str]:
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    ready = threading.Event()
    stop: dict[str, Any] = {}

    def run() -> None:
        async def main() -> None:
            server = GatewayServer(echo)  # type: ignore[arg-type]
            await server.start(sock)
            stop["event"] = asyncio.Event()
            stop["loop"] = asyncio.get_running_loop()
            ready.set()
            await stop["event"].wait()
            await server.shutdown()

        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield f"127.0.0.1:{port}"
    stop["loop"].call_soon_threadsafe(stop["event"].set)
    thread.join(10)


def raw(address: str, data: bytes, expect: int = 1, close: bool = False) -> bytes:
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(data)
        if close:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while out.count(b"HTTP/1.") < expect or not _complete(out):
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out


def _complete(out: bytes) -> bool:
    head, sep, body = out.rpartition(b"\r\n\r\n")
    return bool(sep) and (
        b"content-length" not in head.lower()
        or len(body) >= int(head.lower().split(b"content-length: ")[-1].split(b"\r\n")[0])
    )


def test_keep_alive_requests_with_query_and_percent_path(url: str) -> None:
    with httpx.Client(base_url=f"http://{url}") as c:
        for i in range(3):
            r = c.post(f"/a%20b?x={i}", content=b"hello")
            assert r.status_code == 200
            assert r.text == f"POST /a b ?x={i} hello"
        assert c.get("/stream").text == "abcd"  # no content-length: chunked


def test_pipelined_requests_are_answered_in_order(url: str) -> None:
    one = b"POST /one HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\n1"
    two = b"POST /two HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\n2"
    out = raw(url, one + two, expect=2)
    assert out.index(b"POST /one") < out.index(b"POST /two")


def test_a_long_pipeline_is_throttled_yet_fully_answered(url: str) -> None:
    requests = b"".join(
        b"POST /n%d HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nx" % i for i in range(150)
    )
    out = raw(url, requests, expect=150)
    assert out.count(b"HTTP/1.1 200") == 150
    assert out.index(b"POST /n0 ") < out.index(b"POST /n75 ") < out.index(b"POST /n149 ")


def test_chunked_body_and_100_continue(url: str) -> None:
    chunked = (
        b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    assert raw(url, chunked).endswith(b"POST /c ? abcde")
    expect = b"POST /e HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\nhi"
    out = raw(url, expect, expect=2)
    assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\n") and out.endswith(b"POST /e ? hi")


def test_http10_closes_and_malformed_requests_get_400(url: str) -> None:
    out = raw(url, b"GET /old HTTP/1.0\r\n\r\n", close=True)
    assert out.startswith(b"HTTP/1.1 200") and b"connection: close" in out
    bad = raw(url, b"NOT HTTP AT ALL\r\n\r\n", close=True)
    assert bad.startswith(b"HTTP/1.1 400") and b"malformed HTTP request" in bad


def test_body_limit_and_app_errors(url: str) -> None:
    too_big = f"POST /big HTTP/1.1\r\nhost: x\r\ncontent-length: {MAX_BODY + 1}\r\n\r\n".encode()
    out = raw(url, too_big, close=True)
    assert out.startswith(b"HTTP/1.1 413") and b"body too large" in out
    with httpx.Client(base_url=f"http://{url}") as c:
        r = c.post("/boom", content=b"x")
        assert r.status_code == 500 and "internal error" in r.text
        assert c.post("/after", content=b"y").text == "POST /after ? y"  # the connection still works
