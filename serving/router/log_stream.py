"""The prediction log's cluster sink: each record one entry of a Redis stream, the stream capped near `maxlen`.

Every router replica appends its batches to one stream (`XADD <stream> MAXLEN ~ <maxlen> * record <json>`, one
pipelined round trip per batch); `sluice monitor` and `sluice loop` read it back by entry id (monitor.sources).
Like the file sink, it never slows or fails serving: it runs on the log's writer thread, every socket operation
has a short timeout, and when Redis cannot be reached the batch is dropped and counted (`reason="sink_error"`).
After a failure the sink stops trying for `retry_after` seconds (each batch in that time is dropped at once)
so a Redis that hangs costs one timeout per pause, not one per batch; then the next batch tries again.

The cap is approximate (Redis trims whole macro nodes), so the stream holds at least `maxlen` entries and a
little more; what a reader has not read before it is trimmed is gone (the reader counts the gap).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

STREAM = "sluice:predictions"
FIELD = "record"  # the entry's one field: the record's JSON
MAXLEN = 1_000_000
SOCKET_TIMEOUT_S = 2.0
RETRY_AFTER_S = 5.0


def redact(text: str, url: str) -> str:
    """`text` without the password of `url` (the router and the stream worker are siblings: neither imports the
    other, so this is the router's own small copy of the rule serving.stream.broker applies)."""
    try:
        parts = urlsplit(url)
        secret = parts.password or (parts.username if "@" in parts.netloc else None)
    except ValueError:
        userinfo = url.partition("://")[2].partition("@")
        secret = (userinfo[0].partition(":")[2] or userinfo[0]) if userinfo[1] else None
    for value in sorted({secret, unquote(secret)} if secret else set(), key=len, reverse=True):
        text = text.replace(value, "***")
    return text


class SinkDown(RuntimeError):
    """Redis was not reached (or is paused after a failure); the batch is dropped (the message has no password)."""


def split_url(url: str) -> tuple[str, str]:
    """A `redis://host:port/db?stream=KEY` URL as (the client's URL, the stream key): `stream` is ours, not redis-py's."""
    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise ValueError(f"{redact(url, url)!r}: not a URL ({e})") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"{redact(url, url)!r}: expected redis://host:port/db (or rediss://, unix://)")
    query = parse_qsl(parts.query, keep_blank_values=True)
    streams = [v for k, v in query if k == "stream"]
    if len(streams) > 1 or (streams and not streams[0]):
        raise ValueError(f"{redact(url, url)!r}: give one non-empty stream=KEY")
    rest = urlencode([(k, v) for k, v in query if k != "stream"])
    return urlunsplit(parts._replace(query=rest)), streams[0] if streams else STREAM


def client_for(url: str, socket_timeout: float = SOCKET_TIMEOUT_S) -> Any:
    """A redis-py client with timeouts on every socket operation (no connection is made until it is used)."""
    import redis

    return redis.Redis.from_url(
        url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout, socket_keepalive=True
    )


class RedisStreamSink:
    """`LogSink` writing each record as one entry of a Redis stream."""

    def __init__(
        self,
        url: str,
        *,
        maxlen: int = MAXLEN,
        retry_after: float = RETRY_AFTER_S,
        socket_timeout: float = SOCKET_TIMEOUT_S,
        client: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if maxlen < 1:
            raise ValueError(f"maxlen: {maxlen} must be at least 1")
        self.url, self.stream = split_url(url)
        self._shown = redact(url, url)
        self.maxlen = maxlen
        self.retry_after = retry_after
        self.client = client if client is not None else client_for(self.url, socket_timeout)
        self.clock = clock
        self._paused_until = 0.0
        self.failures = 0

    def write(self, lines: Sequence[bytes]) -> None:
        import redis

        if self.clock() < self._paused_until:
            raise SinkDown(f"{self._shown}: paused after a failure, {len(lines)} record(s) dropped")
        pipe = self.client.pipeline(transaction=False)
        for line in lines:
            pipe.xadd(self.stream, {FIELD: line.rstrip(b"\n")}, maxlen=self.maxlen, approximate=True)
        try:
            pipe.execute()
        except (redis.RedisError, OSError) as e:
            self.failures += 1
            self._paused_until = self.clock() + self.retry_after
            raise SinkDown(f"{self._shown}: {redact(str(e), self.url)}") from None

    def close(self) -> None:
        self.client.close()
