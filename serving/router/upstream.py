"""The connection from the router to one predictor, behind a Protocol: `Upstream.request` sends one request.

Two implementations: `serving.router.http_upstream.HttpUpstream` (a pooled HTTP/1.1 client on httptools, what
the router runs) and `serving.router.in_memory.InMemoryUpstream` (an in-process ASGI app, no socket), so the
forwarding rules (retry, override, feedback attribution, mirroring) are tested without starting a process.

What crosses the seam is plain data: a method, the raw request target, the headers to forward, a body; back
comes a status, headers and a body, or an `UpstreamError` saying whether the predictor may have seen the
request and whether it timed out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

# Headers that describe one hop (RFC 9110 7.6.1), plus those the client sets itself (host, length, framing)
# and `expect`: the router answers `100 Continue` to its caller and never forwards the expectation.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"host",
        b"content-length",
        b"expect",
    }
)


class UpstreamError(Exception):
    """The predictor could not be reached, answered badly, or did not answer in time."""

    def __init__(self, message: str, *, sent: bool = False, timeout: bool = False, stale: bool = False):
        super().__init__(message)
        self.sent = sent  # whether the request may have reached the predictor
        self.timeout = timeout
        # the connection closed before any byte of the answer came: on a pooled connection the predictor
        # had most likely dropped it while idle, so the client may send the request once more
        self.stale = stale


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]  # names in lower case
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


class Upstream(Protocol):
    """One predictor's address and a way to send it requests."""

    @property
    def address(self) -> str:
        """Where the predictor is (host:port), for the admin endpoint and logs; never shown to callers."""
        ...

    async def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        timeout: float,
    ) -> Response:
        """Send one request (`target`: the raw path and query, already validated); raise UpstreamError."""
        ...

    async def close(self) -> None:
        """Drop pooled connections; later requests open new ones."""
        ...


def forwardable(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The end-to-end headers of a request: hop-by-hop ones and those named in `connection` dropped."""
    named: set[bytes] = set()
    for k, v in headers:
        if k == b"connection":
            named.update(token.strip().lower() for token in v.split(b","))
    return [(k, v) for k, v in headers if k not in HOP_BY_HOP and k not in named]
