"""Kafka behind the `Broker` protocol (confluent-kafka), for clusters: the path of Seldon's `serverType: kafka`.

Mapping: the consumer group is Kafka's `group.id`; a message id is `topic/partition/offset`; `ack` commits
offset+1 per partition synchronously, after the results were produced and their delivery confirmed
(auto-commit is off), so delivery is at-least-once. Results are produced with the input id as the message
key to an output topic that should be log-compacted (`cleanup.policy=compact`): a redelivered input's result
replaces the earlier one under the same key, and the idempotent producer (`enable.idempotence`) removes
duplicates from producer retries. `reclaim` returns nothing: when a member dies, Kafka's rebalance hands its
partitions to the others, who resume from the last committed offset. Message values are JSON objects of the
same fields as the Redis Streams records (see `codec.py`).

Deliveries are counted, so a record that kills its worker cannot stall its partition forever. A classic
consumer group has no delivery count (share groups, KIP-932, have one but need Kafka 4.1+), so the count
lives where the group's progress lives: in the metadata of the committed offset. Before a batch is handed
out, each partition's current offset is committed again with `{"deliveries": n, "through": last}`; the ack
commits the next offset. A worker that finds the committed offset already marked knows the record there was
handed out before and never acknowledged: it hands it out alone (seeking back past it, as Spring Kafka's
error handler does) with the count raised, and the worker dead-letters it once the count passes the limit.
Records the crashed batch held after it (`through`) are also taken one at a time, so each gets its own
count. Dead letters go to `<input>.dead` with the original key and value bytes and the reason in headers
(`sluice.reason`, ...), as Kafka Connect and Spring's dead-letter publishers do.

Tested here against an in-memory double of the consumer and producer that uses confluent-kafka's own
`Message` and `TopicPartition` objects and whose method signatures are checked against the library's; no
Kafka broker runs on this machine, so nothing here has consumed from a real one.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from serving.stream.broker import Message, Outgoing, redact

DEAD_SUFFIX = ".dead"
HEADER_REASON = "sluice.reason"
HEADER_INPUT = "sluice.input_id"
HEADER_CONSUMER = "sluice.consumer"
COMMIT_TIMEOUT_S = 10.0
FLUSH_TIMEOUT_S = 30.0


class KafkaConfigError(ValueError):
    """A Kafka broker URL or setting that cannot work."""


class KafkaBrokerError(RuntimeError):
    """Kafka refused a commit or a delivery; nothing of the batch was acknowledged."""


def bootstrap_servers(url: str) -> str:
    """`kafka://host1:9092,host2:9092` -> `host1:9092,host2:9092`."""
    shown = redact(url, url)
    parsed = urlparse(url)
    if parsed.scheme != "kafka" or not parsed.netloc:
        raise KafkaConfigError(
            f"--broker {shown!r}: expected kafka://host:port or kafka://host1:port1,host2:port2"
        )
    if "@" in parsed.netloc:
        raise KafkaConfigError(
            f"--broker {shown!r}: credentials do not go in the URL; set SASL options in the client configuration"
        )
    for server in parsed.netloc.split(","):
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit():
            raise KafkaConfigError(f"--broker {shown!r}: {server!r} is not host:port")
    return parsed.netloc


def consumer_config(
    servers: str, group: str, consumer: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "bootstrap.servers": servers,
        "group.id": group,
        "client.id": consumer,
        "enable.auto.commit": False,  # commit only after the results are written
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        **(extra or {}),
    }


def producer_config(servers: str, consumer: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "bootstrap.servers": servers,
        "client.id": consumer,
        "enable.idempotence": True,  # implies acks=all: a result is durable before we commit its input
        "acks": "all",
        "linger.ms": 5,
        **(extra or {}),
    }


def decode_record(topic: str, partition: int, offset: int, value: bytes | None) -> Message:
    """A Kafka record -> a `Message`; a value that is not a JSON object becomes a single raw `data` field.

    Never raises: a value too deep or too odd to parse is passed on raw, for the codec to refuse."""
    fields: dict[str, bytes] = {}
    if value is not None:
        try:
            body = json.loads(value)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deeply, a 5000-digit int
            body = None
        if isinstance(body, dict):
            for key, item in body.items():
                fields[str(key)] = (item if isinstance(item, str) else json.dumps(item)).encode()
        else:
            fields["data"] = value
    return Message(f"{topic}/{partition}/{offset}", fields)


def encode_record(item: Outgoing) -> tuple[bytes, bytes]:
    """An outgoing result -> (key, value): keyed by input id, so compaction keeps one result per input."""
    return item.input_id.encode(), json.dumps(item.fields, sort_keys=True).encode()


def commit_positions(ids: Sequence[str]) -> list[tuple[str, int, int]]:
    """Message ids -> the offsets to commit: the highest offset + 1 per (topic, partition)."""
    highest: dict[tuple[str, int], int] = {}
    for message_id in ids:
        topic, partition, offset = message_id.rsplit("/", 2)
        key = (topic, int(partition))
        highest[key] = max(highest.get(key, -1), int(offset))
    return [(topic, partition, offset + 1) for (topic, partition), offset in sorted(highest.items())]


@dataclass(frozen=True)
class Mark:
    """What the committed offset's metadata says: the record at `offset` was handed out `deliveries` times
    without being acknowledged, and a crashed batch reached as far as `through`."""

    offset: int
    deliveries: int
    through: int

    def metadata(self) -> str:
        return json.dumps({"deliveries": self.deliveries, "through": self.through}, separators=(",", ":"))

    @classmethod
    def parse(cls, offset: int, metadata: str | None) -> Mark | None:
        if offset < 0 or not metadata:
            return None
        try:
            body = json.loads(metadata)
            return cls(offset, int(body["deliveries"]), int(body["through"]))
        except (ValueError, TypeError, KeyError):
            return None  # someone else's metadata: no count to go on


def _check_commit(committed: Any) -> None:
    for tp in committed or []:
        if getattr(tp, "error", None):
            raise KafkaBrokerError(f"kafka: commit of {tp.topic}/{tp.partition} failed: {tp.error}")


class KafkaBroker:
    """The `Broker` protocol over a confluent-kafka Consumer and Producer (or objects with their methods)."""

    def __init__(
        self,
        consumer: Any,
        producer: Any,
        input: str,
        output: str,
        *,
        name: str | None = None,
        dead_letter: str | None = None,
    ):
        self._consumer = consumer
        self._producer = producer
        self.input = input
        self.output = output
        self.dead = dead_letter or f"{input}{DEAD_SUFFIX}"
        self.consumer = name or f"{socket.gethostname()}-{os.getpid()}"
        self._marks: dict[tuple[str, int], Mark | None] = {}
        self._originals: dict[str, tuple[bytes | None, bytes | None]] = {}  # id -> (key, value) until acked

    @classmethod
    def connect(
        cls,
        url: str,
        input: str,
        output: str,
        group: str,
        consumer: str | None = None,
        dead_letter: str | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> KafkaBroker:
        """Real clients for `kafka://host:port,...` (librdkafka checks the configuration as they are built)."""
        from confluent_kafka import Consumer, Producer

        servers = bootstrap_servers(url)
        name = consumer or f"{socket.gethostname()}-{os.getpid()}"
        return cls(
            Consumer(consumer_config(servers, group, name, extra_config)),
            Producer(producer_config(servers, name, extra_config)),
            input,
            output,
            name=name,
            dead_letter=dead_letter,
        )

    def ensure_group(self) -> None:
        self._consumer.subscribe([self.input], on_assign=self._assigned, on_revoke=self._revoked)

    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            self._marks.pop((tp.topic, tp.partition), None)  # read afresh: another member may have moved it

    def _revoked(self, consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            self._marks.pop((tp.topic, tp.partition), None)

    def _mark(self, topic: str, partition: int) -> Mark | None:
        key = (topic, partition)
        if key not in self._marks:
            from confluent_kafka import TopicPartition

            [tp] = self._consumer.committed([TopicPartition(topic, partition)], timeout=COMMIT_TIMEOUT_S)
            self._marks[key] = Mark.parse(tp.offset, tp.metadata)
        return self._marks[key]

    def read(self, count: int, block_ms: int) -> list[Message]:
        from confluent_kafka import TopicPartition

        by_partition: dict[tuple[str, int], list[Any]] = {}
        for record in self._consumer.consume(num_messages=count, timeout=block_ms / 1000):
            if record.error():
                raise KafkaBrokerError(f"kafka: {record.error()}")
            topic, partition, offset = record.topic(), record.partition(), record.offset()
            if topic is None or partition is None or offset is None:
                continue  # not a data record (librdkafka events carry no position)
            by_partition.setdefault((topic, partition), []).append(record)
        messages: list[Message] = []
        marks: list[Any] = []
        for (topic, partition), records in sorted(by_partition.items()):
            first = records[0].offset()
            mark = self._mark(topic, partition)
            redelivered = mark is not None and mark.offset == first and mark.deliveries > 0
            if mark is not None and (redelivered or first <= mark.through):
                # Handed out before and never acknowledged: alone, so it can only spend its own deliveries.
                deliveries = mark.deliveries + 1 if redelivered else 2
                if len(records) > 1:
                    self._consumer.seek(TopicPartition(topic, partition, first + 1))
                records = records[:1]
                new = Mark(first, deliveries, max(mark.through, first))
            else:
                deliveries = 1
                new = Mark(first, 1, records[-1].offset())
            self._marks[(topic, partition)] = new
            marks.append(TopicPartition(topic, partition, first, metadata=new.metadata()))
            for i, record in enumerate(records):
                message = decode_record(topic, partition, record.offset(), record.value())
                message = Message(message.id, message.fields, deliveries if i == 0 else 1)
                self._originals[message.id] = (record.key(), record.value())
                messages.append(message)
        if marks:  # durable before anything is processed: a crash from here on is counted
            _check_commit(self._consumer.commit(offsets=marks, asynchronous=False))
        return messages

    def reclaim(self, count: int) -> list[Message]:
        return []  # the group's rebalance moves a dead member's partitions; see the module docstring

    def _produce(
        self, topic: str, records: Sequence[tuple[bytes | None, bytes | None, list[Any] | None]]
    ) -> int:
        failures: list[str] = []

        def delivered(error: Any, message: Any) -> None:
            if error is not None:
                failures.append(f"{message.topic()}: {error}")

        for key, value, headers in records:
            self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=delivered)
        remaining = self._producer.flush(FLUSH_TIMEOUT_S)
        if remaining:
            raise KafkaBrokerError(
                f"kafka: {remaining} records to {topic} not delivered within {FLUSH_TIMEOUT_S:g} s"
            )
        if failures:
            raise KafkaBrokerError(f"kafka: {len(failures)} records not delivered ({failures[0]})")
        return len(records)

    def publish(self, results: Sequence[Outgoing]) -> int:
        return self._produce(self.output, [(*encode_record(item), None) for item in results])

    def dead_letter(self, letters: Sequence[Outgoing]) -> int:
        """The original record (key and value bytes as they came) with the reason in headers."""
        records = []
        for item in letters:
            key, value = self._originals.get(item.input_id) or encode_record(item)
            headers = [
                (HEADER_REASON, item.fields.get("reason", "").encode()),
                (HEADER_INPUT, item.input_id.encode()),
                (HEADER_CONSUMER, item.fields.get("consumer", self.consumer).encode()),
            ]
            records.append((key, value, headers))
        return self._produce(self.dead, records)

    def ack(self, ids: Sequence[str]) -> None:
        from confluent_kafka import TopicPartition

        positions = []
        for topic, partition, offset in commit_positions(ids):
            mark = self._marks.get((topic, partition))
            done = Mark(offset, 0, mark.through if mark else offset - 1)
            self._marks[(topic, partition)] = done
            positions.append(TopicPartition(topic, partition, offset, metadata=done.metadata()))
        if positions:
            _check_commit(self._consumer.commit(offsets=positions, asynchronous=False))
        for message_id in ids:
            self._originals.pop(message_id, None)

    def close(self) -> None:
        self._consumer.close()
        self._producer.flush(FLUSH_TIMEOUT_S)
