"""The log read from a Redis stream (a real redis-server): the same records as from files give the same result,
hostile entries are skipped and counted, entries trimmed before they were read are counted, reading by entry id
is incremental, and `sluice monitor redis://...` reads it."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import redis
from test_monitor_follow import CONTRACT, REPO, Traffic, same
from testkit.services import start_redis
from typer.testing import CliRunner

from monitor.follow import Follower
from monitor.records import Scope, read_log
from monitor.sources import SourceError, StreamLog, open_source
from serving.router.log_stream import FIELD, RedisStreamSink
from serving.router.prediction_log import log_files
from sluice.cli import app


def copy_files_to_stream(logdir: Path, url: str) -> None:
    """What the router would have written to the stream had it been given the URL: the same lines in order."""
    sink = RedisStreamSink(url)
    for path in log_files(logdir):
        sink.write(path.read_bytes().splitlines(keepends=True))
    sink.close()


def test_a_stream_and_files_with_the_same_records_give_the_same_log(tmp_path: Path, redis_url: str) -> None:
    logdir = tmp_path / "log"
    Traffic(logdir, seed=2).round(300)
    copy_files_to_stream(logdir, redis_url)
    from_files = read_log(logdir, CONTRACT, label_window=3600.0)
    from_stream = read_log(redis_url, CONTRACT, label_window=3600.0)
    assert len(from_files.rows) > 100 and from_files.labels.joined > 20
    assert from_stream.rows.puid == from_files.rows.puid
    assert from_stream.rows.truth == from_files.rows.truth
    assert vars(from_stream.labels) == vars(from_files.labels)
    assert from_stream.skipped.counts == from_files.skipped.counts


def test_hostile_entries_are_skipped_and_counted_never_raised(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = "sluice:predictions"
    good = {"kind": "prediction", "time": 1.0, "predictor": "m-a", "puid": "ok", "protocol": "seldon",
            "request": {"data": {"ndarray": [[14.0] * 30]}}, "response": {"data": {"ndarray": [[0.2, 0.8]]}}}  # fmt: skip
    client.xadd(key, {FIELD: b"not json at all"})
    client.xadd(key, {FIELD: b'{"kind": "prediction", "time": 1' + b" " * (5 << 20) + b"}"})  # 5 MiB
    client.xadd(key, {"something": "else"})
    client.xadd(key, {FIELD: orjson.dumps(good), "extra": b"field"})
    client.xadd(key, {FIELD: b"[1, 2, 3]"})
    client.xadd(key, {FIELD: b'{"kind": "prediction", "time": "yesterday"}'})
    client.xadd(key, {FIELD: b'{"kind": "prediction", "time": 1e999}'})  # orjson refuses infinity
    client.xadd(key, {FIELD: b'{"kind": "prediction", "time": 2, "request": {"data": {"ndarray": "x"}}}'})
    client.xadd(key, {FIELD: b"\xff\xfe binary"})
    client.xadd(key, {FIELD: orjson.dumps(good)})
    log = read_log(redis_url, CONTRACT)
    assert log.rows.puid == ["ok"]
    # not JSON: the text, the infinite time, the binary; too long; not a record: another field, an extra
    # field, a list; a bad time; rows the contract refuses
    assert log.skipped.counts == {
        "not_json": 3,
        "line_too_long": 1,
        "not_a_record": 3,
        "bad_time": 1,
        "rows_refused": 1,
    }


def test_reading_by_entry_id_takes_only_what_is_new_and_equals_a_full_read(
    tmp_path: Path, redis_url: str
) -> None:
    logdir = tmp_path / "log"
    traffic = Traffic(logdir, seed=9)
    follower = Follower(StreamLog(redis_url), tmp_path / "state")
    copied: dict[str, int] = {}
    sink = RedisStreamSink(redis_url)
    for _ in range(6):
        traffic.round(80)
        for path in log_files(logdir):  # append to the stream what each file gained since the last round
            data = path.read_bytes()
            sink.write(data[copied.get(path.name, 0) :].splitlines(keepends=True))
            copied[path.name] = len(data)
        scope = Scope(since=traffic.t - 60.0)
        follower = Follower(StreamLog(redis_url), tmp_path / "state")
        same(follower.read(CONTRACT, scope, 3600.0), read_log(redis_url, CONTRACT, scope, 3600.0))
        assert 0 < follower.read_last <= 80


def test_entries_trimmed_before_they_were_read_are_counted(tmp_path: Path, redis_url: str) -> None:
    line = orjson.dumps({"kind": "feedback", "time": 1.0, "puid": "x", "truth": None}) + b"\n"
    sink = RedisStreamSink(redis_url, maxlen=10)
    sink.write([line] * 5)
    follower = Follower(StreamLog(redis_url))
    follower.read(CONTRACT)
    assert "stream_trimmed_unread" not in follower.skipped
    client = redis.Redis.from_url(redis_url)
    for _ in range(30):
        sink.write([line] * 200)
    client.xtrim("sluice:predictions", maxlen=10)  # (exact, as ~ would do sooner or later)
    held = client.xlen("sluice:predictions")
    follower.read(CONTRACT)
    assert follower.skipped["stream_trimmed_unread"] == 5 + 30 * 200 - 5 - held
    assert follower.read_last == held
    sink.write([line] * 3)
    follower.read(CONTRACT)  # nothing more was lost
    assert follower.skipped["stream_trimmed_unread"] == 5 + 30 * 200 - 5 - held and follower.read_last == 3


def test_an_unreachable_redis_or_a_bad_url_is_a_clear_error(tmp_path: Path) -> None:
    proc, url = start_redis(tmp_path)
    proc.kill()
    proc.wait()
    secret = url.replace("redis://", "redis://:s3cret-pw@")
    with pytest.raises(SourceError, match="cannot read") as caught:
        read_log(secret, CONTRACT)
    assert "s3cret-pw" not in str(caught.value)
    with pytest.raises(SourceError, match="stream=KEY"):
        open_source("redis://h:1/0?stream=")
    with pytest.raises(SourceError, match="no such directory"):
        open_source(str(tmp_path / "nowhere"))


def test_sluice_monitor_reads_a_stream_and_keeps_its_place(tmp_path: Path, redis_url: str) -> None:
    logdir = tmp_path / "log"
    Traffic(logdir, seed=4).round(400)
    copy_files_to_stream(logdir, redis_url)
    argv = ["monitor", redis_url + "?stream=sluice:predictions", "--contract", str(REPO / "contract.yaml")]
    argv += ["--state", str(tmp_path / "state")]
    first = CliRunner().invoke(app, [*argv, "--report", str(tmp_path / "r1")], env={"COLUMNS": "200"})
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(app, [*argv, "--report", str(tmp_path / "r2")], env={"COLUMNS": "200"})
    assert second.exit_code == 0, second.output
    assert "(0 new records read)" in second.output and "(0 new records read)" not in first.output
    one, two = (orjson.loads((tmp_path / r / "summary.json").read_bytes()) for r in ("r1", "r2"))
    assert one["predictors"] == two["predictors"] and one["labels"] == two["labels"]
    (tmp_path / "state" / "state.json").write_text("{corrupt")
    third = CliRunner().invoke(app, [*argv, "--report", str(tmp_path / "r3")], env={"COLUMNS": "200"})
    assert third.exit_code == 0 and "reading the log from its start" in third.output
    assert orjson.loads((tmp_path / "r3" / "summary.json").read_bytes())["predictors"] == one["predictors"]
