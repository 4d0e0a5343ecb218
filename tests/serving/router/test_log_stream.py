"""The prediction log's Redis stream sink on a real redis-server: records land as entries read back in order,
the stream stays near its cap, and a Redis that is down or gone costs serving nothing: batches are dropped and
counted, the sink pauses, and writes resume once Redis is back."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import orjson
import pytest
import redis
from testkit.services import start_redis

from serving.router.log_stream import FIELD, STREAM, RedisStreamSink, SinkDown, split_url
from serving.router.prediction_log import SINK_ERROR, Copy, PredictionLog


def copy(i: int, kind: str = "prediction") -> Copy:
    body = orjson.dumps({"data": {"ndarray": [[float(i)]]}})
    return Copy(
        kind, 1000.0 + i, "ns", "sd", "m-a", "sha256:" + "a" * 64, f"p{i}", True, body, b'{"data": {}}'
    )


def entries(url: str, stream: str = STREAM) -> list[dict[str, object]]:
    client = redis.Redis.from_url(url)
    out = [orjson.loads(fields[FIELD.encode()]) for _, fields in client.xrange(stream)]
    client.close()
    return out


def test_records_become_stream_entries_in_order(redis_url: str) -> None:
    plog = PredictionLog(RedisStreamSink(redis_url + "?stream=team:log"), interval=0.01)
    plog.start()
    for i in range(50):
        plog.offer(copy(i))
    plog.offer(copy(50, "feedback"))
    assert plog.flush()
    plog.stop()
    got = entries(redis_url, "team:log")
    assert [r["puid"] for r in got] == [f"p{i}" for i in range(51)]
    assert got[0]["request"] == {"data": {"ndarray": [[0.0]]}} and got[-1]["kind"] == "feedback"
    assert sum(plog.written.values()) == 51 and not plog.dropped_write


def test_the_stream_is_capped_near_maxlen(redis_url: str) -> None:
    sink = RedisStreamSink(redis_url, maxlen=100)
    for start in range(0, 3000, 100):
        sink.write([orjson.dumps({"i": i}) + b"\n" for i in range(start, start + 100)])
    length = redis.Redis.from_url(redis_url).xlen(STREAM)
    assert 100 <= length < 1000  # approximate trimming keeps whole macro nodes, never fewer than maxlen
    sink.close()


def test_redis_down_drops_and_counts_pauses_then_resumes(tmp_path: Path) -> None:
    proc, url = start_redis(tmp_path)
    now = [0.0]
    sink = RedisStreamSink(url, retry_after=5.0, socket_timeout=0.5, clock=lambda: now[0])
    sink.write([b'{"i": 0}\n'])
    port = url.rsplit(":", 1)[1].split("/")[0]
    proc.kill()
    proc.wait()
    with pytest.raises(SinkDown):
        sink.write([b'{"i": 1}\n'])
    assert sink.failures == 1
    now[0] = 4.9  # within the pause: dropped at once, Redis not even tried
    with pytest.raises(SinkDown, match="paused"):
        sink.write([b'{"i": 2}\n'])
    assert sink.failures == 1
    proc2 = subprocess.Popen(
        ["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis.from_url(url)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        now[0] = 5.1
        sink.write([b'{"i": 3}\n'])
        assert [r["i"] for r in entries(url)] == [3]  # (a fresh server: what came before is gone)
    finally:
        proc2.kill()
        proc2.wait()


def test_through_the_log_a_dead_redis_is_counted_never_raised(tmp_path: Path) -> None:
    proc, url = start_redis(tmp_path)
    proc.kill()
    proc.wait()
    plog = PredictionLog(RedisStreamSink(url, socket_timeout=0.5), interval=0.01)
    plog.start()
    for i in range(20):
        plog.offer(copy(i))  # never blocks, never raises
    assert plog.flush()
    plog.stop()
    assert sum(n for (_, _, reason), n in plog.dropped_write.items() if reason == SINK_ERROR) == 20
    assert not plog.written


def test_the_password_never_reaches_an_error(tmp_path: Path) -> None:
    proc, url = start_redis(tmp_path)
    proc.kill()
    proc.wait()
    secret_url = url.replace("redis://", "redis://:hunter2-secret@")
    sink = RedisStreamSink(secret_url, socket_timeout=0.5)
    with pytest.raises(SinkDown) as caught:
        sink.write([b"{}\n"])
    assert "hunter2-secret" not in str(caught.value) and "***" in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["http://host:6379/0", "redis://host:6379/0?stream=", "redis://h/0?stream=a&stream=b", "redis://h:bad/0"],
)
def test_bad_urls_are_refused_with_the_url(url: str) -> None:
    with pytest.raises(ValueError):
        RedisStreamSink(url)


def test_the_stream_key_is_ours_not_redis_pys() -> None:
    assert split_url("redis://:pw@h:1/2?stream=a:b&health_check_interval=3") == (
        "redis://:pw@h:1/2?health_check_interval=3",
        "a:b",
    )


def test_the_cli_option_picks_the_sink_by_its_value(tmp_path: Path, redis_url: str) -> None:
    import typer

    from sluice.log_options import open_prediction_log

    to_stream = open_prediction_log(redis_url + "?stream=k", None, None, 64.0, None, 500)
    assert isinstance(to_stream.sink, RedisStreamSink)  # type: ignore[union-attr]
    assert (to_stream.sink.stream, to_stream.sink.maxlen) == ("k", 500)  # type: ignore[union-attr]
    to_files = open_prediction_log(str(tmp_path / "log"), None, None, 64.0, None)
    assert to_files is not None and not isinstance(to_files.sink, RedisStreamSink)
    assert open_prediction_log("", None, None, 64.0, None) is None  # an empty SLUICE_PREDICTION_LOG: no log
    with pytest.raises(typer.Exit):
        open_prediction_log("redis://h:1/0?stream=", None, None, 64.0, None)


def test_a_sink_that_keeps_failing_is_reported_once_per_period_not_per_batch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proc, url = start_redis(tmp_path)
    proc.kill()
    proc.wait()
    plog = PredictionLog(RedisStreamSink(url, socket_timeout=0.2, retry_after=0.0), interval=0.001)
    plog.start()
    with caplog.at_level("WARNING", logger="sluice.router.prediction_log"):
        for i in range(30):
            plog.offer(copy(i))
            assert plog.flush()
    plog.stop()
    dropped = sum(n for (_, _, reason), n in plog.dropped_write.items() if reason == SINK_ERROR)
    assert dropped == 30
    warnings = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(warnings) == 1 and "1 record(s) dropped" in warnings[0].getMessage()
    assert "127.0.0.1" in warnings[0].getMessage()
