"""The Kafka adapter against an in-memory double of confluent-kafka's Consumer and Producer: hostile records
reach the dead-letter topic with their reason and original bytes, deliveries are counted across restarts in
the committed offsets' metadata, and a failed delivery is never acknowledged."""

from __future__ import annotations

import inspect
import json
import re
from typing import Any

import confluent_kafka
import pytest
from kafka_double import Cluster, Consumer, Producer, Record
from stream_faults import HOSTILE_REASONS, POISON_RADIUS, KillingPredictor, WorkerKilled, hostile_payloads

from serving.stream.kafka import HEADER_REASON, KafkaBroker, KafkaBrokerError, Mark
from serving.stream.worker import StreamWorker

pytestmark = pytest.mark.timeout(60)


def _documented(cls: Any, method: str) -> list[str]:
    """Parameter names of a confluent-kafka method from its `.. py:function::` line (a C extension has no
    inspectable signature)."""
    doc = getattr(cls, method).__doc__ or ""
    line = next(line for line in doc.splitlines() if f"py:function:: {method}(" in line)
    inside = line.split("(", 1)[1].rsplit(")", 1)[0]
    return [re.sub(r"[\[\]\s]|=.*", "", part) for part in inside.split(",") if part.strip(" []")]


@pytest.mark.parametrize(
    ("real", "double", "method"),
    [
        (confluent_kafka.Consumer, Consumer, "subscribe"),
        (confluent_kafka.Consumer, Consumer, "consume"),
        (confluent_kafka.Consumer, Consumer, "commit"),
        (confluent_kafka.Consumer, Consumer, "committed"),
        (confluent_kafka.Consumer, Consumer, "seek"),
        (confluent_kafka.Producer, Producer, "produce"),
        (confluent_kafka.Producer, Producer, "flush"),
        (confluent_kafka.Producer, Producer, "poll"),
    ],
)
def test_the_double_speaks_confluent_kafkas_api(real: Any, double: Any, method: str) -> None:
    names = list(inspect.signature(getattr(double, method)).parameters)[1:]
    assert names == _documented(real, method)


def _worker(cluster: Cluster, predictor: Any, name: str, **kwargs: Any) -> StreamWorker:
    broker = KafkaBroker(Consumer(cluster, "g"), Producer(cluster), "in", "out", name=name)
    return StreamWorker(predictor, broker, **kwargs)


def _send(cluster: Cluster, values: list[bytes]) -> list[str]:
    ids = []
    for value in values:
        partition, offset = cluster.append("in", Record(None, value), partition=0)
        ids.append(f"in/{partition}/{offset}")
    return ids


def test_hostile_records_reach_the_dead_letter_topic_with_reason_and_original_bytes(
    predictor, records
) -> None:  # type: ignore[no-untyped-def]
    cluster = Cluster()
    values, kinds = [], {}
    for i, (kind, payload) in enumerate(hostile_payloads(records[0]).items()):
        values.append(json.dumps({"data": records[i]}).encode())
        kinds[len(values)] = kind
        values.append(b'{"data": ' + payload + b"}" if kind != "not-utf8" else payload)
    ids = _send(cluster, values)
    stats = _worker(cluster, predictor, "w1", batch=64).run(max_idle_s=0.05, block_ms=1)
    assert stats.batches == 1
    results = {r.key.decode() for r in cluster.records("out") if r.key}
    assert results == {ids[i] for i in range(len(ids)) if i not in kinds}
    dead = cluster.records("in.dead")
    assert [r.value for r in dead] == [values[i] for i in sorted(kinds)]  # the bytes as they came
    for record, i in zip(dead, sorted(kinds), strict=True):
        reason = dict(record.headers or [])[HEADER_REASON].decode()
        assert HOSTILE_REASONS[kinds[i]] in reason or kinds[i] == "not-utf8", (kinds[i], reason[:200])
    assert cluster.committed[("g", "in", 0)][0] == len(values)


def test_deliveries_are_counted_across_restarts_and_a_poison_record_is_dead_lettered(
    predictor, records
) -> None:  # type: ignore[no-untyped-def]
    cluster = Cluster()
    values = [
        json.dumps({"data": {**records[i], "mean_radius": POISON_RADIUS} if i == 5 else records[i]}).encode()
        for i in range(10)
    ]
    ids = _send(cluster, values)
    killer = KillingPredictor(predictor)
    deaths = 0
    for restart in range(10):  # each round is a new process: a new consumer in the same group
        worker = _worker(cluster, killer, f"w{restart}", batch=64, max_deliveries=3)
        try:
            worker.run(max_idle_s=0.05, block_ms=1)
            break
        except WorkerKilled:
            deaths += 1
    # Three deliveries (in the whole batch, then twice alone), the fourth is dead-lettered: as on Redis.
    assert deaths == 3
    answered = {r.key.decode() for r in cluster.records("out") if r.key}
    assert answered == set(ids) - {ids[5]}
    [dead] = cluster.records("in.dead")
    assert dead.value == values[5]
    assert "delivered 4 times" in dict(dead.headers or [])[HEADER_REASON].decode()
    offset, metadata = cluster.committed[("g", "in", 0)]
    assert offset == len(values) and Mark.parse(offset, metadata) == Mark(len(values), 0, 9)


def test_a_failed_delivery_is_never_acknowledged(predictor, records) -> None:  # type: ignore[no-untyped-def]
    cluster = Cluster()
    _send(cluster, [json.dumps({"data": r}).encode() for r in records[:4]])
    cluster.fail_deliveries = 1
    worker = _worker(cluster, predictor, "w1", batch=64)
    with pytest.raises(KafkaBrokerError, match="not delivered .*Message size too large"):
        worker.run(max_idle_s=0.05, block_ms=1)
    offset, metadata = cluster.committed[("g", "in", 0)]
    assert offset == 0 and Mark.parse(offset, metadata) == Mark(0, 1, 3)  # handed out, not acknowledged
    _worker(cluster, predictor, "w2", batch=64).run(max_idle_s=0.05, block_ms=1)
    assert cluster.committed[("g", "in", 0)][0] == 4
    assert {r.key for r in cluster.records("out")} == {f"in/0/{i}".encode() for i in range(4)}


def test_someone_elses_offset_metadata_is_not_a_count() -> None:
    assert Mark.parse(7, "written by another tool") is None
    assert Mark.parse(-1001, None) is None
    assert Mark.parse(7, Mark(7, 2, 9).metadata()) == Mark(7, 2, 9)
