"""An in-memory Kafka cluster behind confluent-kafka's Consumer and Producer methods, for tests only.

No broker can run here. The double keeps partitioned logs, a consumer group's committed offsets with their
metadata, and per-consumer positions; it hands out and takes confluent-kafka's own `Message`,
`TopicPartition` and `KafkaError` objects, and `test_the_double_speaks_confluent_kafkas_api` checks each
method's parameters against the library's documented signatures. One member per group at a time (what a
restart after a crash looks like); rebalancing between live members is not modelled.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_INVALID, KafkaError, TopicPartition
from confluent_kafka import Message as KafkaMessage


@dataclass
class Record:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None


@dataclass
class Cluster:
    partitions: int = 2
    logs: dict[tuple[str, int], list[Record]] = field(default_factory=dict)
    committed: dict[tuple[str, str, int], tuple[int, str | None]] = field(default_factory=dict)
    commits: int = 0
    fail_deliveries: int = 0  # the next N produced records get a delivery error

    def log(self, topic: str, partition: int) -> list[Record]:
        return self.logs.setdefault((topic, partition), [])

    def append(self, topic: str, record: Record, partition: int = -1) -> tuple[int, int]:
        if partition < 0:
            partition = zlib.crc32(record.key or b"") % self.partitions if record.key else 0
        log = self.log(topic, partition)
        log.append(record)
        return partition, len(log) - 1

    def records(self, topic: str) -> list[Record]:
        return [r for (t, _), log in sorted(self.logs.items()) if t == topic for r in log]


class Consumer:
    """The subset of `confluent_kafka.Consumer` the adapter uses, over a `Cluster`."""

    def __init__(self, cluster: Cluster, group: str):
        self.cluster = cluster
        self.group = group
        self.topics: list[str] = []
        self.positions: dict[tuple[str, int], int] = {}
        self._on_assign: Any = None
        self.closed = False

    def subscribe(
        self, topics: list[str], on_assign: Any = None, on_revoke: Any = None, on_lost: Any = None
    ) -> None:
        self.topics = list(topics)
        self._on_assign = on_assign

    def _assign(self) -> None:
        partitions = [TopicPartition(t, p) for t in self.topics for p in range(self.cluster.partitions)]
        for tp in partitions:
            offset, _ = self.cluster.committed.get((self.group, tp.topic, tp.partition), (0, None))
            self.positions[(tp.topic, tp.partition)] = offset  # auto.offset.reset=earliest
        if self._on_assign:
            self._on_assign(self, partitions)

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[KafkaMessage]:
        assert not self.closed
        if not self.positions:
            self._assign()
        out: list[KafkaMessage] = []
        for (topic, partition), position in sorted(self.positions.items()):
            log = self.cluster.log(topic, partition)
            while position < len(log) and len(out) < num_messages:
                r = log[position]
                out.append(
                    KafkaMessage(
                        topic=topic,
                        partition=partition,
                        offset=position,
                        key=r.key,
                        value=r.value,
                        headers=r.headers,
                    )
                )
                position += 1
            self.positions[(topic, partition)] = position
        return out

    def commit(
        self, message: Any = None, offsets: list[TopicPartition] | None = None, asynchronous: bool = True
    ) -> Any:
        assert message is None and offsets, "the adapter commits explicit offsets"
        self.cluster.commits += 1
        for tp in offsets:
            self.cluster.committed[(self.group, tp.topic, tp.partition)] = (tp.offset, tp.metadata)
        return None if asynchronous else [TopicPartition(tp.topic, tp.partition, tp.offset) for tp in offsets]

    def committed(
        self, partitions: list[TopicPartition], timeout: float | None = None
    ) -> list[TopicPartition]:
        out = []
        for tp in partitions:
            offset, metadata = self.cluster.committed.get(
                (self.group, tp.topic, tp.partition), (OFFSET_INVALID, None)
            )
            if metadata is None:  # librdkafka reports "no metadata" as None; the constructor takes only str
                out.append(TopicPartition(tp.topic, tp.partition, offset))
            else:
                out.append(TopicPartition(tp.topic, tp.partition, offset, metadata=metadata))
        return out

    def seek(self, partition: TopicPartition) -> None:
        self.positions[(partition.topic, partition.partition)] = partition.offset

    def close(self) -> None:
        self.closed = True


class Producer:
    """The subset of `confluent_kafka.Producer` the adapter uses: records land in the `Cluster` on flush."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.queued: list[tuple[str, Record, int, Any]] = []

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int = -1,
        on_delivery: Any = None,
        timestamp: int = 0,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self.queued.append((topic, Record(key, value, headers), partition, on_delivery))

    def poll(self, timeout: float | None = None) -> int:
        return self.flush(timeout)

    def flush(self, timeout: float | None = None) -> int:
        queued, self.queued = self.queued, []
        for topic, record, partition, on_delivery in queued:
            if self.cluster.fail_deliveries > 0:
                self.cluster.fail_deliveries -= 1
                error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large")
                report = KafkaMessage(topic=topic, key=record.key, value=record.value, error=error)
            else:
                error = None
                where, offset = self.cluster.append(topic, record, partition)
                report = KafkaMessage(
                    topic=topic, partition=where, offset=offset, key=record.key, value=record.value
                )
            if on_delivery:
                on_delivery(error, report)
        return 0
