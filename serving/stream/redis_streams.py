"""Redis Streams behind the `Broker` protocol: XREADGROUP, XAUTOCLAIM, XACK, and idempotent XADD by input id.

Results are written by a Lua script that, per result, checks a sorted set `<output>:seen` (input id, scored
by when it was answered) and XADDs only when the input id is new; check and write are one atomic step, so a
message redelivered after a crash between write and XACK is answered once. Like Redis 8.6's own idempotent
XADD (IDMP with a duration), the dedup memory is a window: ids answered longer ago than `dedup_window_ms`
are forgotten by the same script, so the set holds one window of traffic, not the stream's whole history.
The window must outlast a redelivery (`claim_idle_ms` x `max_deliveries`); the CLI checks it. Output and
dead-letter streams are capped at about `maxlen` entries (`XADD MAXLEN ~`).

Every connection has socket timeouts (a broker that stops answering is an error, not a hang), and no
error message carries the URL's password (see `broker.redact`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from serving.stream.broker import Message, Outgoing, redact

DEDUP_WINDOW_MS = 3_600_000
MAXLEN = 1_000_000
SOCKET_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0

# KEYS[1] stream, KEYS[2] seen set; ARGV[1] window ms, ARGV[2] maxlen (0: none), then per record: input id,
# field count n, n name/value pairs.
_PUBLISH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local maxlen = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - window))
local written = 0
local i = 3
while i <= #ARGV do
  local input_id = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  if not redis.call('ZSCORE', KEYS[2], input_id) then
    local args = {KEYS[1]}
    if maxlen > 0 then
      args[#args + 1] = 'MAXLEN'
      args[#args + 1] = '~'
      args[#args + 1] = maxlen
    end
    args[#args + 1] = '*'
    for j = 0, 2 * n - 1 do args[#args + 1] = ARGV[i + 2 + j] end
    redis.call('XADD', unpack(args))
    redis.call('ZADD', KEYS[2], now, input_id)
    written = written + 1
  end
  i = i + 2 + 2 * n
end
redis.call('PEXPIRE', KEYS[2], window)
return written
"""


class BrokerError(RuntimeError):
    """The broker URL is wrong or the broker cannot be reached (the message never holds its password)."""


def seen_key(stream: str) -> str:
    """The sorted set of input ids answered on `stream` within the dedup window."""
    return f"{stream}:seen"


def connect(
    url: str, *, socket_timeout: float = SOCKET_TIMEOUT_S, connect_timeout: float = CONNECT_TIMEOUT_S
) -> Any:
    """A client with timeouts on every socket operation (`socket_timeout` must exceed any XREADGROUP block)."""
    import redis

    shown = redact(url, url)
    try:
        scheme = urlparse(url).scheme
    except ValueError:
        scheme = ""
    if scheme not in ("redis", "rediss", "unix"):
        raise BrokerError(f"--broker {shown!r}: expected redis://host:port or redis://host:port/db")
    try:
        client = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            socket_keepalive=True,
            health_check_interval=30,
        )
        client.ping()
    except (redis.RedisError, ValueError) as e:
        raise BrokerError(f"{shown}: cannot reach Redis ({redact(str(e), url)})") from None
    return client


class RedisStreamsBroker:
    def __init__(
        self,
        client: Any,
        input: str,
        output: str,
        group: str,
        consumer: str | None = None,
        dead_letter: str | None = None,
        claim_idle_ms: int = 30_000,
        dedup_window_ms: int = DEDUP_WINDOW_MS,
        maxlen: int = MAXLEN,
    ):
        if dedup_window_ms < 1:
            raise BrokerError(f"dedup window {dedup_window_ms} ms: must be positive")
        if maxlen < 0:
            raise BrokerError(f"maxlen {maxlen}: must be 0 (no cap) or positive")
        self.client = client
        self.input = input
        self.output = output
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.dead = dead_letter or f"{input}:dead"
        self.claim_idle_ms = claim_idle_ms
        self.dedup_window_ms = dedup_window_ms
        self.maxlen = maxlen
        self._publish = client.register_script(_PUBLISH)
        self._claim_cursor = "0-0"

    @classmethod
    def from_url(
        cls, url: str, *, socket_timeout: float = SOCKET_TIMEOUT_S, **kwargs: Any
    ) -> RedisStreamsBroker:
        return cls(connect(url, socket_timeout=socket_timeout), **kwargs)

    def ensure_group(self) -> None:
        import redis

        try:
            self.client.xgroup_create(self.input, self.group, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        # Visible in XINFO CONSUMERS from the start, not only after its first delivery.
        self.client.xgroup_createconsumer(self.input, self.group, self.consumer)

    def read(self, count: int, block_ms: int) -> list[Message]:
        reply = self.client.xreadgroup(
            self.group, self.consumer, {self.input: ">"}, count=count, block=block_ms or None
        )
        return [_message(entry_id, fields) for _, entries in reply or [] for entry_id, fields in entries]

    def reclaim(self, count: int) -> list[Message]:
        """XAUTOCLAIM from the cursor on; wraps around to the start once it reaches the end."""
        reply = self.client.xautoclaim(
            self.input,
            self.group,
            self.consumer,
            self.claim_idle_ms,
            start_id=self._claim_cursor,
            count=count,
        )
        cursor, entries = reply[0], reply[1]
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        messages = [_message(entry_id, fields) for entry_id, fields in entries if fields is not None]
        if not messages:
            return []
        pending = self.client.xpending_range(
            self.input,
            self.group,
            min=messages[0].id,
            max=messages[-1].id,
            count=len(messages) * 2,
            consumername=self.consumer,
        )
        counts = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        return [Message(m.id, m.fields, counts.get(m.id, 2)) for m in messages]

    def _write(self, stream: str, items: Sequence[Outgoing]) -> int:
        if not items:
            return 0
        args: list[str] = [str(self.dedup_window_ms), str(self.maxlen)]
        for item in items:
            args += [item.input_id, str(len(item.fields))]
            for key, value in item.fields.items():
                args += [key, value]
        return int(self._publish(keys=[stream, seen_key(stream)], args=args))

    def publish(self, results: Sequence[Outgoing]) -> int:
        return self._write(self.output, results)

    def dead_letter(self, letters: Sequence[Outgoing]) -> int:
        return self._write(self.dead, letters)

    def ack(self, ids: Sequence[str]) -> None:
        if ids:
            self.client.xack(self.input, self.group, *ids)

    def close(self) -> None:
        self.client.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _message(entry_id: Any, fields: dict[Any, Any]) -> Message:
    key = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return Message(
        key,
        {
            (k.decode() if isinstance(k, bytes) else str(k)): (v if isinstance(v, bytes) else str(v).encode())
            for k, v in fields.items()
        },
    )
