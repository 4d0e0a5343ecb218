"""Kafka behind the `Broker` protocol (confluent-kafka), for clusters: the path of Seldon's `serverType: kafka`.

Mapping: the consumer group is Kafka's `group.id`; a message id is `topic/partition/offset`; `ack` commits
offset+1 per partition synchronously, after the results were produced and flushed (auto-commit is off), so
delivery is at-least-once. Results are produced with the input id as the message key to an output topic
that should be log-compacted (`cleanup.policy=compact`): a redelivered input's result replaces the earlier
one under the same key, and the idempotent producer (`enable.idempotence`) removes duplicates from
producer retries. `reclaim` returns nothing: when a member dies, Kafka's rebalance hands its partitions to
the others, who resume from the last committed offset. Message values are JSON objects of the same fields
as the Redis Streams records (see `codec.py`).

Tested here for encoding, offsets and configuration only (librdkafka accepts the configuration when the
client objects are built); no Kafka broker runs on this machine, so nothing here has consumed from one.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from serving.stream.broker import Message, Outgoing


class KafkaConfigError(ValueError):
    """A Kafka broker URL or setting that cannot work."""


def bootstrap_servers(url: str) -> str:
    """`kafka://host1:9092,host2:9092` -> `host1:9092,host2:9092`."""
    parsed = urlparse(url)
    if parsed.scheme != "kafka" or not parsed.netloc:
        raise KafkaConfigError(
            f"--broker {url!r}: expected kafka://host:port or kafka://host1:port1,host2:port2"
        )
    for server in parsed.netloc.split(","):
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit():
            raise KafkaConfigError(f"--broker {url!r}: {server!r} is not host:port")
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
    """A Kafka record -> a `Message`; a value that is not a JSON object becomes a single raw `data` field."""
    fields: dict[str, bytes] = {}
    if value is not None:
        try:
            body = json.loads(value)
        except (json.JSONDecodeError, UnicodeDecodeError):
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


class KafkaBroker:
    def __init__(
        self,
        url: str,
        input: str,
        output: str,
        group: str,
        consumer: str | None = None,
        dead_letter: str | None = None,
        extra_config: dict[str, Any] | None = None,
    ):
        from confluent_kafka import Consumer, Producer

        servers = bootstrap_servers(url)
        self.input = input
        self.output = output
        self.dead = dead_letter or f"{input}.dead"
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self._consumer = Consumer(consumer_config(servers, group, self.consumer, extra_config))
        self._producer = Producer(producer_config(servers, self.consumer, extra_config))

    def ensure_group(self) -> None:
        self._consumer.subscribe([self.input])

    def read(self, count: int, block_ms: int) -> list[Message]:
        messages = []
        for record in self._consumer.consume(num_messages=count, timeout=block_ms / 1000):
            if record.error():
                raise RuntimeError(f"kafka: {record.error()}")
            topic, partition, offset = record.topic(), record.partition(), record.offset()
            if topic is None or partition is None or offset is None:
                continue  # not a data record (librdkafka events carry no position)
            messages.append(decode_record(topic, partition, offset, record.value()))
        return messages

    def reclaim(self, count: int) -> list[Message]:
        return []  # the group's rebalance moves a dead member's partitions; see the module docstring

    def _produce(self, topic: str, items: Sequence[Outgoing]) -> int:
        for item in items:
            key, value = encode_record(item)
            self._producer.produce(topic, key=key, value=value)
        remaining = self._producer.flush(30)
        if remaining:
            raise RuntimeError(f"kafka: {remaining} records to {topic} not delivered within 30 s")
        return len(items)

    def publish(self, results: Sequence[Outgoing]) -> int:
        return self._produce(self.output, results)

    def dead_letter(self, letters: Sequence[Outgoing]) -> int:
        return self._produce(self.dead, letters)

    def ack(self, ids: Sequence[str]) -> None:
        from confluent_kafka import TopicPartition

        positions = [TopicPartition(t, p, o) for t, p, o in commit_positions(ids)]
        if positions:
            self._consumer.commit(offsets=positions, asynchronous=False)

    def close(self) -> None:
        self._consumer.close()
