"""What a streaming worker needs of a broker: consume as a group, reclaim a dead member's work, publish
idempotently by input id, dead-letter, acknowledge. Redis Streams and Kafka implement it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

# Query parameters of a broker URL whose values are credentials (redis-py reads `password` from the query).
_SECRET_PARAMS = ("password", "pass", "token", "secret", "key", "credential")


@dataclass(frozen=True)
class Message:
    """One input record: its broker id (a Redis stream id, or `topic/partition/offset` on Kafka) and fields."""

    id: str
    fields: dict[str, bytes]
    deliveries: int = 1  # how many times the broker has handed it out (more than 1: a redelivery)


@dataclass(frozen=True)
class Outgoing:
    """A record to publish, keyed by the id of the input it answers (the key of idempotence)."""

    input_id: str
    fields: dict[str, str] = field(default_factory=dict)


class Broker(Protocol):
    def ensure_group(self) -> None:
        """Create the consumer group (and the input stream) if missing; no-op otherwise."""

    def read(self, count: int, block_ms: int) -> list[Message]:
        """Up to `count` new messages for this consumer, waiting at most `block_ms`."""

    def reclaim(self, count: int) -> list[Message]:
        """Messages delivered to another consumer but unacknowledged for longer than the claim idle time."""

    def publish(self, results: Sequence[Outgoing]) -> int:
        """Write results, skipping any input id already answered; returns how many were new."""

    def dead_letter(self, letters: Sequence[Outgoing]) -> int:
        """Write malformed inputs with their reason, idempotently like `publish`."""

    def ack(self, ids: Sequence[str]) -> None:
        """Mark messages done; called only after their result or dead letter is written."""

    def close(self) -> None: ...


def url_secrets(url: str) -> list[str]:
    """The credentials written into a broker URL: the password (or a lone user name, which Redis and many
    proxies take as a token) and secret-looking query parameters, raw and percent-decoded."""
    try:
        parts = urlsplit(url)
        password, username = parts.password, parts.username
    except ValueError:  # not even a URL (a bad port): scrub what looks like userinfo
        userinfo = url.partition("://")[2].partition("@")
        return [userinfo[0].partition(":")[2] or userinfo[0]] if userinfo[1] else []
    found: list[str] = []
    if password:
        found.append(password)
    elif username and "@" in parts.netloc:
        found.append(username)
    for name, value in parse_qsl(parts.query, keep_blank_values=False):
        if value and any(word in name.lower() for word in _SECRET_PARAMS):
            found.append(value)
    return sorted({*found, *(unquote(f) for f in found)} - {""}, key=len, reverse=True)


def redact(text: str, url: str) -> str:
    """`text` with every credential of `url` replaced by `***` (error messages, logs)."""
    for secret in url_secrets(url):
        text = text.replace(secret, "***")
    return text
