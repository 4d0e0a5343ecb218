"""The streaming worker on a real Redis: results keyed by input id, dead letters, ack after write, no duplicates."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from serving.stream.redis_streams import RedisStreamsBroker, seen_key
from serving.stream.worker import StreamWorker

pytestmark = pytest.mark.timeout(60)


def _broker(client, consumer: str = "c1", claim_idle_ms: int = 30_000) -> RedisStreamsBroker:  # type: ignore[no-untyped-def]
    broker = RedisStreamsBroker(client, "in", "out", "g", consumer=consumer, claim_idle_ms=claim_idle_ms)
    broker.ensure_group()
    return broker


def _send(client, records) -> list[str]:  # type: ignore[no-untyped-def]
    return [client.xadd("in", {"data": json.dumps(r)}).decode() for r in records]


def _outputs(client) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in client.xrange("out")]


def test_every_input_gets_one_result_from_the_core(redis_client, predictor, records) -> None:  # type: ignore[no-untyped-def]
    worker = StreamWorker(predictor, _broker(redis_client), batch=16)
    ids = _send(redis_client, records[:50])
    stats = worker.run(max_idle_s=0.2, block_ms=50)
    out = _outputs(redis_client)
    assert [o["input_id"] for o in out] == ids
    expected = predictor.predict(predictor.validate(records[:50]))
    assert [json.loads(o["prediction"]) for o in out] == expected.labels.tolist()
    assert np.allclose([json.loads(o["probabilities"]) for o in out], expected.probabilities)
    assert {o["model_digest"] for o in out} == {predictor.digest}
    assert (stats.messages, stats.results, stats.batches) == (50, 50, 4)
    assert redis_client.xpending("in", "g")["pending"] == 0


def test_malformed_messages_go_to_dead_letter_with_reason(redis_client, predictor, records) -> None:  # type: ignore[no-untyped-def]
    worker = StreamWorker(predictor, _broker(redis_client), batch=10)
    good = _send(redis_client, records[:3])
    missing = dict(records[0])
    del missing["mean_area"]
    bad = {
        redis_client.xadd("in", {"payload": "x"}).decode(): "no 'data' field",
        redis_client.xadd("in", {"data": "{oops"}).decode(): "not valid JSON",
        redis_client.xadd("in", {"data": json.dumps(missing)}).decode(): "missing feature 'mean_area'",
        redis_client.xadd(
            "in", {"data": json.dumps({**records[1], "mean_radius": "wide"})}
        ).decode(): "non-numeric",
        redis_client.xadd("in", {"data": "42"}).decode(): "expected a JSON object or list",
    }
    good += _send(redis_client, [list(records[2].values())])  # a list in signature order is fine
    worker.run(max_idle_s=0.2, block_ms=50)
    assert [o["input_id"] for o in _outputs(redis_client)] == good
    dead = {f[b"input_id"].decode(): f[b"reason"].decode() for _, f in redis_client.xrange("in:dead")}
    assert dead.keys() == bad.keys()
    for message_id, reason in bad.items():
        assert reason in dead[message_id]
    assert redis_client.xpending("in", "g")["pending"] == 0


def test_redelivery_after_a_crash_before_ack_does_not_duplicate(redis_client, predictor, records) -> None:  # type: ignore[no-untyped-def]
    ids = _send(redis_client, records[:20])
    crashed = _broker(redis_client, "crashed")
    messages = crashed.read(20, 100)
    first = StreamWorker(predictor, crashed)
    # Run the batch up to and including the publish, then "crash": no ack.
    crashed.ack = lambda ids: None  # type: ignore[method-assign]
    first.handle(messages)
    assert len(_outputs(redis_client)) == 20
    assert redis_client.xpending("in", "g")["pending"] == 20

    time.sleep(0.06)
    survivor = StreamWorker(predictor, _broker(redis_client, "survivor", claim_idle_ms=50), batch=8)
    stats = survivor.run(max_idle_s=0.3, block_ms=50, claim_every_s=0.05)
    assert stats.reclaimed == 20
    assert stats.duplicates == 20 and stats.results == 0
    assert [o["input_id"] for o in _outputs(redis_client)] == ids
    assert redis_client.zcard(seen_key("out")) == 20
    assert redis_client.xpending("in", "g")["pending"] == 0


def test_nothing_is_acked_when_the_output_cannot_be_written(redis_client, predictor, records) -> None:  # type: ignore[no-untyped-def]
    import redis

    redis_client.set("out", "not a stream")  # XADD will fail with WRONGTYPE
    _send(redis_client, records[:5])
    worker = StreamWorker(predictor, _broker(redis_client), batch=5)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        worker.run(max_idle_s=0.2, block_ms=50)
    assert redis_client.xpending("in", "g")["pending"] == 5


def test_cli_run_until_idle(redis_url, redis_client, bundle_dir, records) -> None:  # type: ignore[no-untyped-def]
    from sluice.cli import app

    _send(redis_client, records[:30])
    args = [
        "stream",
        "run",
        "--model",
        str(bundle_dir),
        "--broker",
        redis_url,
        "--input",
        "in",
        "--output",
        "out",
    ]
    result = CliRunner().invoke(
        app, [*args, "--group", "g", "--batch", "7", "--max-idle", "0.3", "--block-ms", "50"]
    )
    assert result.exit_code == 0, result.output
    assert "30 messages in 5 batches: 30 results" in result.output
    assert len(_outputs(redis_client)) == 30


def test_cli_names_an_unreachable_broker(bundle_dir) -> None:  # type: ignore[no-untyped-def]
    import socket

    from sluice.cli import app

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
    args = [
        "stream",
        "run",
        "--model",
        str(bundle_dir),
        "--broker",
        url,
        "--input",
        "i",
        "--output",
        "o",
        "--group",
        "g",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "cannot reach Redis" in result.output


def test_a_message_that_keeps_killing_workers_is_dead_lettered(redis_client, predictor, records) -> None:  # type: ignore[no-untyped-def]
    [poison] = _send(redis_client, records[:1])
    _broker(redis_client, "victim-0").read(10, 100)
    for i in range(1, 5):  # four more workers claim it and "die" before acking
        time.sleep(0.005)
        claimed = _broker(redis_client, f"victim-{i}", claim_idle_ms=1).reclaim(10)
        assert [m.id for m in claimed] == [poison] and claimed[0].deliveries == i + 1
    time.sleep(0.005)
    worker = StreamWorker(predictor, _broker(redis_client, "survivor", claim_idle_ms=1), max_deliveries=4)
    worker.run(max_idle_s=0.2, block_ms=50, claim_every_s=0.01)
    dead = [{k.decode(): v.decode() for k, v in f.items()} for _, f in redis_client.xrange("in:dead")]
    assert [d["input_id"] for d in dead] == [poison]
    assert "delivered 6 times" in dead[0]["reason"]
    assert _outputs(redis_client) == []
    assert redis_client.xpending("in", "g")["pending"] == 0
