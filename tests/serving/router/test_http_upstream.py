"""The router's pooled HTTP/1.1 client against hostile predictors: tiny raw asyncio servers on loopback that
answer with broken framing, interim answers, oversized bodies and heads, a slow drip, a close mid-body, or two
answers to one request. Each test names the property the client must keep."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from serving.router import http_upstream
from serving.router.http_upstream import HttpUpstream
from serving.router.upstream import UpstreamError

Handler = Callable[["Peer", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Peer:
    """A raw TCP server on loopback: counts connections, records request heads, runs `handler` per connection."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Peer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        """One request head (and its Content-Length body); returns the head."""
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                await reader.readexactly(int(line.split(b":")[1]))
        return head


def answer(body: bytes, *extra: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), b"".join(extra), body)


async def serve_each(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A well-behaved keep-alive server: answers each request with the number it has on this server."""
    while True:
        await peer.read_request(reader)
        writer.write(answer(b"answer %d" % len(peer.heads)))
        await writer.drain()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 20))


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_a_connection_is_kept_alive_and_reused() -> None:
    async def scenario() -> None:
        async with Peer(serve_each) as peer:
            up = HttpUpstream("127.0.0.1", peer.port)
            bodies = [(await up.request("POST", "/p", [], b"{}", 5)).body for _ in range(5)]
            assert bodies == [b"answer %d" % i for i in range(1, 6)]
            assert peer.connections == 1 and up.open_connections == 1
            await up.close()

    run(scenario)


def test_the_request_target_goes_out_exactly_as_given() -> None:
    target = "/api/v1.0/predictions?q=%0D%0AHost:%20evil&x=%2F..%2F&y=a+b"

    async def scenario() -> None:
        async with Peer(serve_each) as peer:
            up = HttpUpstream("127.0.0.1", peer.port, authority="model.staging.svc:8000")
            await up.request("POST", target, [(b"x-a", b"1")], b"{}", 5)
            request_line, *lines = peer.heads[0].split(b"\r\n")
            assert request_line == b"POST " + target.encode() + b" HTTP/1.1"
            assert b"host: model.staging.svc:8000" in lines and b"x-a: 1" in lines
            await up.close()

    run(scenario)


@pytest.mark.parametrize("target", ["/a\r\nGET /b", "/a b", "/a\x00", "a", "/caf\u00e9", "/a\nx"], ids=repr)
def test_a_target_that_could_split_the_request_is_refused_before_sending(target: str) -> None:
    async def scenario() -> None:
        async with Peer(serve_each) as peer:
            up = HttpUpstream("127.0.0.1", peer.port)
            with pytest.raises(UpstreamError) as e:
                await up.request("GET", target, [], b"", 5)
            assert not e.value.sent and peer.connections == 0
            await up.close()

    run(scenario)


@pytest.mark.parametrize(
    "header",
    [
        (b"x-a", b"1\r\nset-cookie: s=1"),
        (b"x-a", b"1\nx: y"),
        (b"x-a", b"1\x00"),
        (b"x a", b"1"),
        (b"x:a", b"1"),
    ],
    ids=repr,
)
def test_a_header_that_could_split_the_request_is_refused_before_sending(header: tuple[bytes, bytes]) -> None:
    async def scenario() -> None:
        async with Peer(serve_each) as peer:
            up = HttpUpstream("127.0.0.1", peer.port)
            with pytest.raises(UpstreamError) as e:
                await up.request("POST", "/p", [header], b"{}", 5)
            assert not e.value.sent and peer.connections == 0
            await up.close()

    run(scenario)


def test_interim_answers_are_skipped_and_never_taken_as_final() -> None:
    async def interim(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await peer.read_request(reader)
            n = len(peer.heads)
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.02)  # the final answer in a later packet
            writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + answer(b"final %d" % n))
            await writer.drain()

    async def scenario() -> None:
        async with Peer(interim) as peer:
            up = HttpUpstream("127.0.0.1", peer.port)
            first = await up.request("POST", "/p", [], b"{}", 5)
            second = await up.request("POST", "/p", [], b"{}", 5)
            assert (first.status, first.body, first.header(b"link")) == (200, b"final 1", None)
            assert (second.status, second.body) == (200, b"final 2")
            await up.close()

    run(scenario)


def test_a_protocol_switch_is_refused() -> None:
    async def switch(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await peer.read_request(reader)
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\nraw")
        await writer.drain()
        await reader.read()

    async def scenario() -> None:
        async with Peer(switch) as peer:
            up = HttpUpstream("127.0.0.1", peer.port)
            with pytest.raises(UpstreamError, match="protocol switch"):
                await up.request("GET", "/p", [], b"", 5)
            assert up.open_connections == 0
            await up.close()

    run(scenario)


@pytest.mark.parametrize(
    ("wire", "body"),
    [
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", b"abcde"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nabcde", b"abcde"),
        (b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nto the end", b"to the end"),
    ],
    ids=["chunked", "content-length", "until-close"],
)
def test_answers_framed_each_way_are_read_whole(wire: bytes, body: bytes) -> None:
    async def framed(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await peer.read_request(reader)
        for i in range(0, len(wire), 7):  # in small packets
            writer.write(wire[i : i + 7])
            await writer.drain()
            await asyncio.sleep(0.001)
        if b"connection: close" in wire:
            writer.close()
        else:
            await reader.read()

    async def scenario() -> None:
        async with Peer(framed) as peer:
            up = HttpUpstream("127.0.0.1", peer.port)
            response = await up.request("GET", "/p", [], b"", 5)
            assert (response.status, response.body) == (200, body)
            await up.close()

    run(scenario)


@pytest.mark.parametrize(
    "wire",
    [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 7\r\n\r\nabcde",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        b"\x16\x03\x01 not http at all\r\n\r\n",
    ],
    ids=["bad-chunk-size", "two-lengths", "length-and-chunked", "bad-status", "bad-header", "not-http"],
)
def test_broken_framing_is_an_error_and_the_connection_is_dropped(wire: bytes) -> None:
    async def broken(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await peer.read_request(reader)
        writer.write(wire)
        await writer.drain()
        await reader.read()

    async def scenario() -> None:
        async with Peer(broken) as peer:
            up = HttpUpstream("127.0.0.1", peer.port)
            with pytest.raises(UpstreamError) as e:
                await up.request("GET", "/p", [], b"", 5)
            assert e.value.sent and not e.value.timeout
            assert up.open_connections == 0 and len(peer.heads) == 1  # never retried
            await up.close()

    run(scenario)


@pytest.mark.parametrize("framing", ["announced", "chunked", "until-close"])
def test_an_answer_over_the_body_limit_is_refused_as_it_arrives(framing: str) -> None:
    limit = 64 << 10
    sent: list[int] = []

    async def huge(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await peer.read_request(reader)
        if framing == "announced":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (100 << 20))
        elif framing == "chunked":
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")
        chunk = b"x" * 4096
        for _ in range(100 << 20 >> 12):  # up to 100 MiB, unless the client hangs up first
            writer.write(b"1000\r\n" + chunk + b"\r\n" if framing == "chunked" else chunk)
            sent.append(len(chunk))
            await writer.drain()

    async def scenario() -> None:
        async with Peer(huge) as peer:
            up = HttpUpstream("127.0.0.1", peer.port, max_body=limit)
            with pytest.raises(UpstreamError, match="over|announced") as e:
                await up.request("GET", "/p", [], b"", 10)
            assert e.value.sent and up.open_connections == 0
            await asyncio.sleep(0.05)
            assert sum(sent) < 32 << 20  # the predictor was cut off, far from its 100 MiB
            await up.close()

    run(scenario)


def test_an_endless_answer_head_is_refused() -> None:
    async def endless(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await peer.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nx-long: ")
        for _ in range(4096):  # 16 MiB of one header value, unless the client hangs up
            writer.write(b"a" * 4096)
            await writer.drain()

    async def scenario() -> None:
        async with Peer(endless) as peer:
            up = HttpUpstream("127.0.0.1", peer.port)
            with pytest.raises(UpstreamError, match="head over"):
                await up.request("GET", "/p", [], b"", 10)
            await up.close()

    run(scenario)


def test_a_slow_drip_times_out_and_the_connection_is_never_reused() -> None:
    async def drip(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await peer.read_request(reader)
            n = len(peer.heads)
            if n == 1:
                for byte in answer(b"late answer"):  # one byte every 50 ms: whole only after ~2 s
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.05)
            else:
                writer.write(answer(b"answer %d" % n))
                await writer.drain()

    async def scenario() -> None:
        async with Peer(drip) as peer:
            up = HttpUpstream("127.0.0.1", peer.port)
            started = time.monotonic()
            with pytest.raises(UpstreamError) as e:
                await up.request("GET", "/p", [], b"", 0.3)
            assert e.value.timeout and e.value.sent and time.monotonic() - started < 1.5
            second = await up.request("GET", "/p", [], b"", 5)
            assert second.body == b"answer 2" and peer.connections == 2
            await up.close()

    run(scenario)


def test_a_close_mid_body_is_an_error_and_is_not_retried() -> None:
    async def cut(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await peer.read_request(reader)
        writer.write(answer(b"whole"))
        await peer.read_request(reader)  # the second request, on the now pooled connection
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten..")
        await writer.drain()

    async def scenario() -> None:
        async with Peer(cut) as peer:
            up = HttpUpstream("127.0.0.1", peer.port)
            assert (await up.request("POST", "/p", [], b"{}", 5)).body == b"whole"
            with pytest.raises(UpstreamError, match="middle of its answer") as e:
                await up.request("POST", "/p", [], b"{}", 5)
            assert e.value.sent and not e.value.stale and len(peer.heads) == 2  # never sent twice
            await up.close()

    run(scenario)


def test_a_pooled_connection_closed_while_idle_is_retried_once_on_a_fresh_one() -> None:
    async def closes_first(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first_connection = peer.connections == 1
        await peer.read_request(reader)
        writer.write(answer(b"answer %d" % len(peer.heads)))
        await writer.drain()
        if first_connection:
            await reader.readuntil(b"\r\n\r\n")  # the next request arrives: hang up without a byte back
            return
        await serve_each(peer, reader, writer)

    async def scenario() -> None:
        async with Peer(closes_first) as peer:
            up = HttpUpstream("127.0.0.1", peer.port)
            assert (await up.request("GET", "/p", [], b"", 5)).body == b"answer 1"
            second = await up.request("GET", "/p", [], b"", 5)
            assert second.body == b"answer 2" and peer.connections == 2
            await up.close()

    run(scenario)


def test_a_fresh_connection_closed_without_an_answer_is_not_retried() -> None:
    async def hangs_up(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await peer.read_request(reader)

    async def scenario() -> None:
        async with Peer(hangs_up) as peer:
            up = HttpUpstream("127.0.0.1", peer.port)
            with pytest.raises(UpstreamError, match="without answering") as e:
                await up.request("POST", "/p", [], b"{}", 5)
            assert e.value.sent and peer.connections == 1 and len(peer.heads) == 1
            await up.close()

    run(scenario)


def test_an_unrefused_port_is_an_error_that_says_nothing_was_sent() -> None:
    async def scenario() -> None:
        async with Peer(serve_each) as peer:
            port = peer.port
        up = HttpUpstream("127.0.0.1", port)
        with pytest.raises(UpstreamError, match="cannot connect") as e:
            await up.request("GET", "/p", [], b"", 5)
        assert not e.value.sent

    run(scenario)


def test_a_connect_that_hangs_ends_at_the_connect_timeout_not_the_callers() -> None:
    """A predictor whose accept queue is full (a listener with backlog 0 and one connection nobody accepted):
    Linux drops the next SYNs, so a connect to it hangs, as to a host that went away, without leaving
    loopback. The request fails after `connect_timeout`, well before the caller's timeout, saying nothing
    was sent."""

    async def scenario() -> None:
        with socket.socket() as listener, socket.socket() as queued:
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            port = listener.getsockname()[1]
            queued.connect(("127.0.0.1", port))  # fills the queue: never accepted
            up = HttpUpstream("127.0.0.1", port, connect_timeout=0.3)
            started = time.monotonic()
            with pytest.raises(UpstreamError, match="cannot connect.*timed out") as e:
                await up.request("POST", "/p", [], b"{}", 15)
            assert 0.3 <= time.monotonic() - started < 3
            assert not e.value.sent and up.open_connections == 0
            await up.close()

    run(scenario)


@pytest.mark.parametrize("later", [False, True], ids=["same-packet", "while-idle"])
def test_a_second_answer_to_one_request_never_reaches_the_next_caller(later: bool) -> None:
    async def smuggles(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if peer.connections > 1:
            return await serve_each(peer, reader, writer)
        await peer.read_request(reader)
        writer.write(answer(b"answer 1"))
        if later:
            await writer.drain()
            await asyncio.sleep(0.05)  # the client holds the connection idle in its pool by now
        writer.write(answer(b"smuggled"))
        await writer.drain()
        await serve_each(peer, reader, writer)

    async def scenario() -> None:
        async with Peer(smuggles) as peer:
            up = HttpUpstream("127.0.0.1", peer.port)
            await up.request("GET", "/p", [], b"", 5)
            await asyncio.sleep(0.1)
            second = await up.request("GET", "/p", [], b"", 5)
            assert second.body == b"answer 2"
            assert peer.connections == 2  # the connection out of step was dropped, not reused
            await up.close()

    run(scenario)


def test_a_late_answer_after_a_timeout_never_reaches_the_next_caller() -> None:
    async def late(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await peer.read_request(reader)
            n = len(peer.heads)
            if n == 1:
                await asyncio.sleep(0.4)
            writer.write(answer(b"answer %d" % n))
            await writer.drain()

    async def scenario() -> None:
        async with Peer(late) as peer:
            up = HttpUpstream("127.0.0.1", peer.port)
            with pytest.raises(UpstreamError):
                await up.request("GET", "/p", [], b"", 0.2)
            await asyncio.sleep(0.4)  # the late answer has been written by now
            assert (await up.request("GET", "/p", [], b"", 5)).body == b"answer 2"
            await up.close()

    run(scenario)


def test_idle_connections_are_closed_after_the_keepalive_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_upstream, "KEEPALIVE_SECONDS", 0.2)

    async def scenario() -> None:
        async with Peer(serve_each) as peer:
            up = HttpUpstream("127.0.0.1", peer.port)
            await asyncio.gather(*(up.request("GET", "/p", [], b"", 5) for _ in range(3)))
            assert peer.open == 3
            await wait_until(lambda: peer.open == 0 and up.open_connections == 0)
            await up.request("GET", "/p", [], b"", 5)  # a new connection then
            assert peer.connections == 4
            await up.close()

    run(scenario)


def test_connections_per_predictor_are_capped_and_callers_wait() -> None:
    release = asyncio.Event()

    async def held(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await peer.read_request(reader)
            await release.wait()
            writer.write(answer(b"ok"))
            await writer.drain()

    async def scenario() -> None:
        async with Peer(held) as peer:
            up = HttpUpstream("127.0.0.1", peer.port, max_connections=2)
            calls = [asyncio.create_task(up.request("GET", "/p", [], b"", 5)) for _ in range(6)]
            await wait_until(lambda: len(peer.heads) == 2)
            with pytest.raises(UpstreamError, match="no free connection") as e:
                await up.request("GET", "/p", [], b"", 0.1)
            assert e.value.timeout and not e.value.sent
            release.set()
            assert [r.body for r in await asyncio.gather(*calls)] == [b"ok"] * 6
            assert peer.connections == 2 and peer.most_open == 2
            await up.close()

    run(scenario)


def test_a_head_answer_has_no_body_and_its_connection_is_not_reused() -> None:
    async def heads(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await peer.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n")
            await writer.drain()

    async def scenario() -> None:
        async with Peer(heads) as peer:
            up = HttpUpstream("127.0.0.1", peer.port)
            response = await up.request("HEAD", "/p", [], b"", 2)
            assert (response.status, response.body, response.header(b"content-length")) == (200, b"", b"9")
            assert up.open_connections == 0
            await up.close()

    run(scenario)
