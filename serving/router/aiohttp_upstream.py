"""The router's real connection to a predictor: aiohttp's pooled keep-alive client, one pool per predictor.

aiohttp parses answers with its C parser, handles interim (1xx) answers, and validates what it writes; the
router hands it the raw request target it has already validated (`yarl.URL(..., encoded=True)`, so nothing
is decoded or re-encoded on the way). A pooled connection that the predictor closed while idle fails with
`ServerDisconnectedError` before any answer: that one request is sent again once on a fresh connection.
Idle connections are dropped after 4 s, before a uvicorn predictor (5 s) or Seldon's executor (65 s) would.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp
from yarl import URL

from serving.router.upstream import Response, UpstreamError

KEEPALIVE_SECONDS = 4.0


class AiohttpUpstream:
    """Requests to the predictor at `host:port` (`authority`: the Host header, when it differs)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        authority: str | None = None,
        connect_timeout: float = 2.0,
        max_connections: int = 256,
    ):
        self.host = host
        self.port = port
        self._base = f"http://{host}:{port}"
        self._address = f"{host}:{port}"
        self._authority = authority
        self._connect_timeout = connect_timeout
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._urls: dict[str, URL] = {}  # parsed once per target (a deployment has a handful)

    @property
    def address(self) -> str:
        return self._address

    @property
    def authority(self) -> str | None:
        """The Host header sent, when it is not the address connected to (a Service name)."""
        return self._authority

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            keepalive_timeout=KEEPALIVE_SECONDS,
            ttl_dns_cache=10,
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),  # a proxy keeps no cookies of its own
            auto_decompress=False,  # bytes go back as they came
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            raise_for_status=False,
        )

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = self._timeouts[seconds] = aiohttp.ClientTimeout(
                total=seconds, connect=min(self._connect_timeout, seconds)
            )
        return timeout

    async def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        timeout: float,
    ) -> Response:
        session = self._session
        if session is None or session.closed:
            session = self._session = self._open()
        url = self._urls.get(target)
        if url is None:
            url = URL(self._base + target, encoded=True)
            if len(self._urls) < 4096:
                self._urls[target] = url
        outgoing = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]
        if self._authority is not None:
            outgoing.append(("Host", self._authority))
        for attempt in (1, 2):
            try:
                async with session.request(
                    method,
                    url,
                    data=body or None,
                    headers=outgoing,
                    allow_redirects=False,
                    timeout=self._timeout(timeout),
                ) as answer:
                    payload = await answer.read()
                    return Response(answer.status, [(k.lower(), v) for k, v in answer.raw_headers], payload)
            except aiohttp.ServerDisconnectedError as e:
                if attempt == 1:
                    continue  # a pooled connection the predictor had closed: once more, on a fresh one
                raise UpstreamError(f"{self._address} closed the connection ({e})", sent=True) from e
            except aiohttp.ConnectionTimeoutError as e:
                raise UpstreamError(f"cannot connect to {self._address}: timed out") from e
            except TimeoutError as e:
                raise UpstreamError(
                    f"{self._address} did not answer within {timeout:g} s", sent=True, timeout=True
                ) from e
            except aiohttp.ClientConnectorError as e:
                raise UpstreamError(f"cannot connect to {self._address}: {e.os_error}") from e
            except aiohttp.ClientError as e:
                raise UpstreamError(f"bad answer from {self._address}: {e}", sent=True) from e
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
