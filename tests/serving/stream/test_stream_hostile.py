"""Hostile records on a real Redis: each goes to the dead-letter stream with its reason, its batch goes on,
and a record that kills its worker outright can only use up its own deliveries."""

from __future__ import annotations

import json
import time

import pytest
from stream_faults import HOSTILE_REASONS, POISON_RADIUS, KillingPredictor, WorkerKilled, hostile_payloads

from serving.stream.broker import Message
from serving.stream.codec import MalformedMessage, decode_input
from serving.stream.redis_streams import RedisStreamsBroker
from serving.stream.worker import StreamWorker

pytestmark = pytest.mark.timeout(60)


def _broker(client, consumer: str = "c1", claim_idle_ms: int = 30_000) -> RedisStreamsBroker:  # type: ignore[no-untyped-def]
    broker = RedisStreamsBroker(client, "in", "out", "g", consumer=consumer, claim_idle_ms=claim_idle_ms)
    broker.ensure_group()
    return broker


def _dead(client) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {f[b"input_id"].decode(): f[b"reason"].decode() for _, f in client.xrange("in:dead")}


@pytest.mark.parametrize("kind", list(HOSTILE_REASONS))
def test_the_codec_refuses_hostile_data_with_a_reason(records, kind: str) -> None:
    payload = hostile_payloads(records[0])[kind]
    with pytest.raises(MalformedMessage, match=HOSTILE_REASONS[kind]):
        decode_input(Message("1-0", {"data": payload}))


def test_hostile_records_are_dead_lettered_and_their_batch_goes_on(redis_client, predictor, records) -> None:  # type: ignore[no-untyped-def]
    good, bad = [], {}
    for i, (kind, payload) in enumerate(hostile_payloads(records[0]).items()):
        good.append(redis_client.xadd("in", {"data": json.dumps(records[i])}).decode())
        bad[redis_client.xadd("in", {"data": payload}).decode()] = kind
    worker = StreamWorker(predictor, _broker(redis_client), batch=64)
    stats = worker.run(max_idle_s=0.2, block_ms=50)
    assert stats.batches == 1  # all in one batch, and nothing crashed
    out = [{k.decode(): v.decode() for k, v in f.items()} for _, f in redis_client.xrange("out")]
    assert [o["input_id"] for o in out] == good
    expected = predictor.predict(predictor.validate(records[: len(good)]))
    assert [json.loads(o["prediction"]) for o in out] == expected.labels.tolist()
    dead = _dead(redis_client)
    assert dead.keys() == bad.keys()
    for message_id, kind in bad.items():
        assert HOSTILE_REASONS[kind] in dead[message_id], (kind, dead[message_id][:200])
    assert redis_client.xpending("in", "g")["pending"] == 0


def test_a_record_that_kills_its_worker_takes_only_itself_down(redis_client, predictor, records) -> None:  # type: ignore[no-untyped-def]
    ids = []
    for i in range(12):
        record = {**records[i], "mean_radius": POISON_RADIUS} if i == 4 else records[i]
        ids.append(redis_client.xadd("in", {"data": json.dumps(record)}).decode())
    killer = KillingPredictor(predictor)
    deaths = 0
    for restart in range(12):  # each round is a new worker process after the last one died
        worker = StreamWorker(killer, _broker(redis_client, f"w{restart}", claim_idle_ms=1), max_deliveries=3)  # type: ignore[arg-type]
        try:
            worker.run(max_idle_s=0.2, block_ms=20, claim_every_s=0.01)
            break
        except WorkerKilled:
            deaths += 1
            time.sleep(0.005)  # longer than the claim idle time
    assert deaths == 3  # the poison's three deliveries (in its batch, then twice alone), no more
    answered = [f[b"input_id"].decode() for _, f in redis_client.xrange("out")]
    assert sorted(answered) == sorted(ids[:4] + ids[5:])  # every other record of its batch was answered
    dead = _dead(redis_client)
    assert list(dead) == [ids[4]] and "delivered 4 times" in dead[ids[4]]
    assert redis_client.xpending("in", "g")["pending"] == 0
