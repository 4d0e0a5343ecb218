"""The Kafka adapter as far as this machine allows: encoding, offsets, URLs, and configs librdkafka accepts.

No Kafka broker can run here, so consuming and producing against one is not tested (see serving/stream/kafka.py).
"""

from __future__ import annotations

import json

import pytest

from serving.stream.broker import Message, Outgoing
from serving.stream.codec import decode_input, encode_result
from serving.stream.kafka import (
    KafkaBroker,
    KafkaConfigError,
    bootstrap_servers,
    commit_positions,
    consumer_config,
    decode_record,
    encode_record,
    producer_config,
)


def test_record_round_trip_matches_the_redis_fields() -> None:
    record = {"mean_radius": 12.5, "mean_texture": 20.1}
    message = decode_record("in", 3, 41, json.dumps({"data": record}).encode())
    assert message.id == "in/3/41"
    assert decode_input(message) == record  # the same codec reads Redis and Kafka messages
    result = encode_result(message, 1, [0.2, 0.8], "sha256:abc", "w1")
    key, value = encode_record(result)
    assert key == b"in/3/41"
    assert json.loads(value) == {
        "input_id": "in/3/41",
        "prediction": "1",
        "probabilities": "[0.2, 0.8]",
        "model_digest": "sha256:abc",
        "consumer": "w1",
    }


def test_a_non_object_value_becomes_a_data_field_for_the_dead_letter_path() -> None:
    message = decode_record("in", 0, 5, b"{not json")
    assert message.fields == {"data": b"{not json"}
    with pytest.raises(ValueError, match="not valid JSON"):
        decode_input(message)
    assert decode_record("in", 0, 6, None).fields == {}


def test_commit_positions_are_next_offset_per_partition() -> None:
    ids = ["in/0/5", "in/1/9", "in/0/7", "in/0/6", "other.topic/1/2", "in/1/3"]
    assert commit_positions(ids) == [("in", 0, 8), ("in", 1, 10), ("other.topic", 1, 3)]
    assert commit_positions([]) == []


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("kafka://k1:9092", "k1:9092"),
        ("kafka://k1:9092,k2:9093", "k1:9092,k2:9093"),
        ("redis://k1:9092", None),
        ("kafka://k1", None),
        ("kafka://", None),
    ],
)
def test_bootstrap_servers(url: str, ok: str | None) -> None:
    if ok:
        assert bootstrap_servers(url) == ok
    else:
        with pytest.raises(KafkaConfigError, match="kafka://"):
            bootstrap_servers(url)


def test_configs_are_at_least_once_and_accepted_by_librdkafka() -> None:
    consumer = consumer_config("127.0.0.1:1", "g", "w1")
    producer = producer_config("127.0.0.1:1", "w1")
    assert consumer["enable.auto.commit"] is False
    assert producer["enable.idempotence"] is True and producer["acks"] == "all"
    # Building the clients makes librdkafka check every key and value (no connection is needed for that).
    broker = KafkaBroker.connect("kafka://127.0.0.1:1", "in", "out", "g", consumer="w1")
    assert broker.dead == "in.dead"
    assert broker.reclaim(10) == []
    broker.close()
    from confluent_kafka import KafkaException

    with pytest.raises(KafkaException):
        KafkaBroker.connect(
            "kafka://127.0.0.1:1", "in", "out", "g", extra_config={"enable.auto.commitx": True}
        )


def test_outgoing_keys_are_input_ids() -> None:
    key, _ = encode_record(Outgoing("in/0/1", {"reason": "bad"}))
    assert key == b"in/0/1"
    assert Message("a", {}).fields == {}
