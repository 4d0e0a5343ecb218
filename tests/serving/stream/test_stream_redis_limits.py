"""Redis state and connections stay bounded: a dedup window instead of a forever-growing index, a capped
output stream, socket timeouts, and no password in any error message."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from testkit.services import free_port, start_redis
from typer.testing import CliRunner

from serving.stream.broker import Outgoing
from serving.stream.redis_streams import BrokerError, RedisStreamsBroker, connect, seen_key

pytestmark = pytest.mark.timeout(60)
REPO = Path(__file__).resolve().parents[3]


def _results(ids: list[str]) -> list[Outgoing]:
    return [Outgoing(i, {"input_id": i, "prediction": "1"}) for i in ids]


def test_dedup_is_a_window_that_forgets_old_input_ids(redis_client) -> None:  # type: ignore[no-untyped-def]
    broker = RedisStreamsBroker(redis_client, "in", "out", "g", consumer="c", dedup_window_ms=300)
    assert broker.publish(_results(["1-0", "2-0"])) == 2
    assert broker.publish(_results(["1-0"])) == 0  # a redelivery within the window: answered once
    assert redis_client.zcard(seen_key("out")) == 2
    assert 0 < redis_client.pttl(seen_key("out")) <= 300  # an idle set goes away by itself
    deadline = time.monotonic() + 5
    while redis_client.zscore(seen_key("out"), "1-0") is not None:
        broker.publish(_results([f"{int(time.monotonic() * 1e6)}-0"]))  # traffic goes on
        assert time.monotonic() < deadline, "old input ids were never forgotten"
        time.sleep(0.05)
    assert redis_client.zcard(seen_key("out")) <= 300 / 50 + 2  # about one window of traffic, not all of it
    assert not redis_client.exists("out:by-input")


def test_output_and_dead_letter_streams_are_capped(redis_client) -> None:  # type: ignore[no-untyped-def]
    capped = RedisStreamsBroker(redis_client, "in", "out", "g", consumer="c", maxlen=100)
    for start in range(0, 1000, 50):
        capped.publish(_results([f"{i}-0" for i in range(start, start + 50)]))
        capped.dead_letter(_results([f"{i}-1" for i in range(start, start + 50)]))
    # MAXLEN ~ trims whole radix-tree nodes (100 entries each by default): at least 100, well under 1000
    assert 100 <= redis_client.xlen("out") <= 200 and 100 <= redis_client.xlen("in:dead") <= 200
    uncapped = RedisStreamsBroker(redis_client, "in", "out2", "g", consumer="c", maxlen=0)
    uncapped.publish(_results([f"{i}-0" for i in range(1000)]))
    assert redis_client.xlen("out2") == 1000
    with pytest.raises(BrokerError, match="maxlen -1"):
        RedisStreamsBroker(redis_client, "in", "out", "g", maxlen=-1)


def test_cli_refuses_a_dedup_window_shorter_than_a_redelivery(redis_url, bundle_dir) -> None:  # type: ignore[no-untyped-def]
    from sluice.cli import app

    args = [
        "stream",
        "run",
        "--model",
        str(bundle_dir),
        "--broker",
        redis_url,
        "--input",
        "i",
        "--output",
        "o",
    ]
    args += ["--group", "g", "--claim-idle-ms", "60000", "--max-deliveries", "5", "--dedup-window", "300"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "--dedup-window 300 s is shorter than a redelivery can take" in result.output
    assert "360 s" in result.output


class Silent:
    """A TCP server that accepts connections and never says anything (a hung or black-holed Redis)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"redis://:hunter2-secret@127.0.0.1:{self.sock.getsockname()[1]}/0"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_a_silent_redis_is_an_error_within_the_socket_timeout_not_a_hang() -> None:
    silent = Silent()
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            connect(silent.url, socket_timeout=0.3, connect_timeout=0.3)
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=attempt, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(20)
    silent.close()
    assert not thread.is_alive(), "connect() hung on a server that never answers"
    [error] = outcome
    assert isinstance(error, BrokerError) and "cannot reach Redis" in str(error)
    assert "hunter2-secret" not in str(error) and ":***@127.0.0.1" in str(error)
    assert time.monotonic() - started < 15


@pytest.mark.parametrize(
    "url",
    [
        "redis://:pw-{secret}@127.0.0.1:{closed}/0",
        "redis://admin:pw-{secret}@127.0.0.1:{closed}/0",
        "redis://127.0.0.1:{closed}/0?password=pw-{secret}",
        "redis://:pw-{secret}@127.0.0.1:notaport/0",
        "redsi://:pw-{secret}@127.0.0.1:{closed}/0",
        "kafka://user:pw-{secret}@127.0.0.1:9092",
    ],
    ids=["password", "user-and-password", "query", "bad-port", "bad-scheme", "kafka"],
)
def test_no_error_message_shows_the_password(bundle_dir, url: str) -> None:  # type: ignore[no-untyped-def]
    from sluice.cli import app

    url = url.format(secret="s3cr3t", closed=free_port())
    args = ["stream", "run", "--model", str(bundle_dir), "--broker", url, "--input", "i", "--output", "o"]
    result = CliRunner().invoke(app, [*args, "--group", "g", "--socket-timeout", "0.5"])
    assert result.exit_code == 1, result.output
    assert "s3cr3t" not in result.output and "***" in result.output, result.output


def test_a_wrong_password_against_a_real_redis_is_not_echoed(bundle_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sluice.cli import app

    proc, url = start_redis(tmp_path, "--requirepass", "the-right-one")
    try:
        wrong = url.replace("redis://", "redis://:guess-s3cr3t@")
        args = ["stream", "run", "--model", str(bundle_dir), "--broker", wrong, "--input", "i"]
        result = CliRunner().invoke(app, [*args, "--output", "o", "--group", "g"])
        assert result.exit_code == 1 and "cannot reach Redis" in result.output, result.output
        assert "guess-s3cr3t" not in result.output and "the-right-one" not in result.output
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_a_worker_whose_redis_stops_answering_exits_with_a_redacted_error(
    bundle_dir, tmp_path, records
) -> None:  # type: ignore[no-untyped-def]
    import redis

    proc, url = start_redis(tmp_path, "--requirepass", "pw-s3cr3t")
    url = url.replace("redis://", "redis://:pw-s3cr3t@")
    client = redis.Redis.from_url(url)
    client.xadd("in", {"data": json.dumps(records[0])})
    cmd = [sys.executable, "-m", "sluice", "stream", "run", "--model", str(bundle_dir), "--broker", url]
    cmd += [
        "--input",
        "in",
        "--output",
        "out",
        "--group",
        "g",
        "--block-ms",
        "100",
        "--socket-timeout",
        "0.5",
    ]
    worker = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while client.xlen("out") < 1:  # the worker is up and working
            assert time.monotonic() < deadline and worker.poll() is None, "the worker did not start"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGSTOP)  # Redis hangs: connections stay open, nothing answers
        output, _ = worker.communicate(timeout=40)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        if worker.poll() is None:
            worker.kill()
        proc.kill()
        proc.wait()
    assert worker.returncode == 1, output
    assert "Timeout" in output and "pw-s3cr3t" not in output and ":***@" in output
