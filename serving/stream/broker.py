"""What a streaming worker needs of a broker: consume as a group, reclaim a dead member's work, publish
idempotently by input id, dead-letter, acknowledge. Redis Streams and Kafka implement it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


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
