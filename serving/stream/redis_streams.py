"""Redis Streams behind the `Broker` protocol: XREADGROUP, XAUTOCLAIM, XACK, and idempotent XADD by input id.

Results are written by a Lua script that, per result, checks a hash `<output>:by-input` (input id -> output
entry id) and XADDs only when the input id is new; check and write are one atomic step, so a message
redelivered after a crash between write and XACK is answered once. Trim that hash together with the output
stream (it holds one field per answered input).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from serving.stream.broker import Message, Outgoing

# KEYS[1] output stream, KEYS[2] index hash; ARGV: per result, input id, field count n, then n name/value pairs.
_PUBLISH = """
local written = 0
local i = 1
while i <= #ARGV do
  local input_id = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  if redis.call('HEXISTS', KEYS[2], input_id) == 0 then
    local args = {KEYS[1], '*'}
    for j = 0, 2 * n - 1 do args[#args + 1] = ARGV[i + 2 + j] end
    local entry = redis.call('XADD', unpack(args))
    redis.call('HSET', KEYS[2], input_id, entry)
    written = written + 1
  end
  i = i + 2 + 2 * n
end
return written
"""


class BrokerError(RuntimeError):
    """The broker URL is wrong or the broker cannot be reached."""


def index_key(stream: str) -> str:
    return f"{stream}:by-input"


def connect(url: str) -> Any:
    import redis

    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss", "unix"):
        raise BrokerError(f"--broker {url!r}: expected redis://host:port or redis://host:port/db")
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise BrokerError(f"{url}: cannot reach Redis ({e})") from e
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
    ):
        self.client = client
        self.input = input
        self.output = output
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.dead = dead_letter or f"{input}:dead"
        self.claim_idle_ms = claim_idle_ms
        self._publish = client.register_script(_PUBLISH)
        self._claim_cursor = "0-0"

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisStreamsBroker:
        return cls(connect(url), **kwargs)

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
        args: list[str] = []
        for item in items:
            args += [item.input_id, str(len(item.fields))]
            for key, value in item.fields.items():
                args += [key, value]
        return int(self._publish(keys=[stream, index_key(stream)], args=args))

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
