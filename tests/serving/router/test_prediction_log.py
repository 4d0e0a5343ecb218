"""The router's prediction log: records on files, rotation, sampling, drops counted, hostile bodies; and the
real `sluice up` runtime on loopback writing it while it serves."""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from up_harness import digest_of, metric_samples, predictor, v1_body

from deployment import metric_names as n
from serving.router.prediction_log import (
    OVERSIZE,
    QUEUE_FULL,
    SINK_ERROR,
    Copy,
    FileSink,
    PredictionLog,
    log_files,
    record,
)


def copy(
    kind: str = "prediction",
    request: bytes = b'{"data": {"ndarray": [[1.0]]}}',
    response: bytes = b'{"data": {"ndarray": [[0.2, 0.8]]}}',
    puid: str | None = "p1",
) -> Copy:
    return Copy(kind, 1.0, "ns", "sd", "m-a", "sha256:" + "a" * 64, puid, True, request, response)


def read_records(directory: Path) -> list[dict[str, Any]]:
    out = []
    for path in log_files(directory):
        out += [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return out


def test_files_rotate_by_size_and_keep_every_record_in_order(tmp_path: Path) -> None:
    sink = FileSink(tmp_path, max_file_bytes=2048)
    lines = [orjson.dumps({"i": i, "pad": "x" * 100}) + b"\n" for i in range(100)]
    for start in range(0, 100, 7):
        sink.write(lines[start : start + 7])
    sink.close()
    files = log_files(tmp_path)
    assert len(files) >= 5
    assert all(p.stat().st_size <= 2048 for p in files)
    assert [r["i"] for r in read_records(tmp_path)] == list(range(100))


def test_keep_files_deletes_the_oldest(tmp_path: Path) -> None:
    sink = FileSink(tmp_path, max_file_bytes=1024, keep_files=2)
    for i in range(40):
        sink.write([orjson.dumps({"i": i, "pad": "x" * 200}) + b"\n"])
    sink.close()
    assert len(log_files(tmp_path)) == 2
    assert read_records(tmp_path)[-1]["i"] == 39


def test_a_prediction_record_carries_inputs_prediction_predictor_digest_puid_and_time() -> None:
    r = record(copy())
    assert r["kind"] == "prediction" and r["v"] == 1
    assert r["request"] == {"data": {"ndarray": [[1.0]]}}
    assert r["response"] == {"data": {"ndarray": [[0.2, 0.8]]}}
    assert (r["predictor"], r["digest"], r["puid"], r["time"]) == ("m-a", "sha256:" + "a" * 64, "p1", 1.0)


def test_malformed_bodies_are_recorded_as_null_and_flagged() -> None:
    r = record(copy(request=b"\xff{not json", response=b"\x00"))
    assert r["malformed"] is True and r["request"] is None and r["response"] is None


def test_feedback_puid_comes_from_the_answer_it_is_about_when_no_header_named_one() -> None:
    body = orjson.dumps(
        {"response": {"meta": {"puid": "abc.m-a"}}, "truth": {"data": {"ndarray": [1]}}, "reward": 1}
    )
    r = record(copy("feedback", request=body, response=b"", puid=None))
    assert (r["puid"], r["truth"], r["reward"]) == ("abc.m-a", {"data": {"ndarray": [1]}}, 1)
    hostile = orjson.dumps({"response": {"meta": {"puid": "a b\r\nx"}}, "reward": "1e999"})
    r = record(copy("feedback", request=hostile, response=b"", puid=None))
    assert r["puid"] is None and r["reward"] is None


class _Slow:
    """A sink that blocks until released: the writer thread is stuck, the buffer fills."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lines: list[bytes] = []

    def write(self, lines: Sequence[bytes]) -> None:
        self.release.wait(10)
        self.lines += lines

    def close(self) -> None:
        pass


def test_a_full_buffer_drops_and_counts_instead_of_blocking() -> None:
    sink = _Slow()
    plog = PredictionLog(sink, buffer_bytes=10_000)
    plog.start()
    try:
        for _ in range(1000):
            plog.offer(copy())  # never blocks: the sink is stuck
        dropped = plog.dropped_offer.get(("ns", "sd", QUEUE_FULL), 0)
        size = len(copy().request) + len(copy().response)
        # At most a buffer's worth is held, plus one batch the writer took before the sink stuck.
        assert dropped >= 1000 - 2 * (10_000 // size)
    finally:
        sink.release.set()
        plog.stop()
    assert len(sink.lines) == 1000 - dropped


def test_an_oversized_copy_is_dropped_and_counted(tmp_path: Path) -> None:
    plog = PredictionLog(FileSink(tmp_path), max_record_bytes=1000)
    plog.start()
    plog.offer(copy(request=b"[" + b"1," * 4000 + b"1]"))
    plog.offer(copy())
    plog.stop()
    assert plog.dropped_offer == {("ns", "sd", OVERSIZE): 1}
    assert len(read_records(tmp_path)) == 1


def test_a_failing_sink_is_counted_and_the_log_carries_on() -> None:
    class Broken:
        calls = 0

        def write(self, lines: Sequence[bytes]) -> None:
            self.calls += 1
            if self.calls == 1:
                raise OSError(28, "No space left on device")

        def close(self) -> None:
            pass

    plog = PredictionLog(Broken())
    plog.start()
    plog.offer(copy())
    assert plog.flush()
    plog.offer(copy())
    plog.stop()
    assert plog.dropped_write == {("ns", "sd", SINK_ERROR): 1}
    assert plog.written == {("ns", "sd", "prediction"): 1}


def test_predictions_are_sampled_and_feedback_never_is(tmp_path: Path) -> None:
    plog = PredictionLog(FileSink(tmp_path), sample=0.3, rng=random.Random(7).random)
    plog.start()
    for _ in range(1000):
        plog.offer(copy())
    for _ in range(50):
        plog.offer(copy("feedback", request=b"{}", response=b""))
    plog.stop()
    kinds = [r["kind"] for r in read_records(tmp_path)]
    # Binomial(1000, 0.3): mean 300, sd 14.5; 235..365 is 4.5 sd either way.
    assert 235 <= kinds.count("prediction") <= 365
    assert kinds.count("feedback") == 50


def test_a_sample_rate_outside_0_1_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sample: 1.5"):
        PredictionLog(FileSink(tmp_path), sample=1.5)


# The runtime on loopback -----------------------------------------------------------------------------------


def test_sluice_up_logs_each_answer_and_feedback_off_the_request_path(
    up: Any, fake_uri: Path, tmp_path: Path
) -> None:
    logdir = tmp_path / "log"
    plog = PredictionLog(FileSink(logdir), max_record_bytes=64 << 10)
    rt = up([predictor("m-a", 100, fake_uri)], prediction_log=plog)
    with httpx.Client(base_url=rt.url, timeout=10) as client:
        answers = [client.post("/api/v1.0/predictions", json=v1_body([float(i)] * 30)) for i in range(20)]
        assert all(a.status_code == 200 for a in answers)
        puids = [a.json()["meta"]["puid"] for a in answers]
        fb = client.post(
            "/api/v1.0/feedback",
            json={"response": answers[0].json(), "truth": {"data": {"ndarray": [1]}}, "reward": 1},
        )
        assert fb.status_code == 200
        # Hostile: a body far larger than a record may be is still answered, and only counted.
        big = client.post("/api/v1.0/predictions", json=v1_body([1.0] * 20_000))
        assert big.status_code == 200
        v2 = client.post(
            "/v2/models/classifier/infer",
            json={
                "id": "req-7",
                "inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP64", "data": [1.0]}],
            },
        )
        assert v2.status_code == 200
    assert plog.flush()
    records = read_records(logdir)
    predictions = [r for r in records if r["kind"] == "prediction"]
    assert [r["puid"] for r in predictions if r["protocol"] == "seldon"] == puids
    assert predictions[0]["request"] == v1_body([0.0] * 30)
    assert predictions[0]["response"]["data"]["ndarray"] == [[0.2, 0.8]]
    assert {(r["predictor"], r["digest"], r["namespace"], r["deployment"]) for r in predictions} == {
        ("m-a", digest_of("m-a"), "sluice", "sd")
    }
    assert [r["puid"] for r in predictions if r["protocol"] == "v2"] == ["req-7"]
    (feedback,) = [r for r in records if r["kind"] == "feedback"]
    assert feedback["puid"] == puids[0] and feedback["truth"] == {"data": {"ndarray": [1]}}
    text = rt.metrics()
    written = {s["kind"]: v for s, v in metric_samples(text, n.total(n.PREDICTION_LOG_RECORDS))}
    assert written == {"prediction": 21.0, "feedback": 1.0}
    dropped = {s["reason"]: v for s, v in metric_samples(text, n.total(n.PREDICTION_LOG_DROPPED))}
    assert dropped == {OVERSIZE: 1.0}


# The options of `sluice up` and `sluice router` ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--log-sample", "0.5"], "--log-sample and --log-policy need --prediction-log DIR"),
        (
            ["--prediction-log", "LOG", "--log-sample", "2"],
            "--log-sample: 2.0 is not a fraction between 0 and 1",
        ),
        (["--prediction-log", "LOG", "--log-policy", "POLICY"], "monitoring.sample"),
    ],
)
@pytest.mark.parametrize("command", ["up", "router"])
def test_bad_prediction_log_options_are_refused_naming_the_option(
    tmp_path: Path, command: str, args: list[str], message: str
) -> None:
    from typer.testing import CliRunner
    from up_harness import write_manifest

    from sluice.cli import app

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    write_manifest(tmp_path, [predictor("m-a", 100, bundle)])
    policy = tmp_path / "policy.yaml"
    policy.write_text("strategy: canary\nstages: [{weight: 50}]\nmonitoring: {sample: 7}\n")
    args = [a.replace("LOG", str(tmp_path / "log")).replace("POLICY", str(policy)) for a in args]
    result = CliRunner().invoke(app, [command, str(tmp_path), "--port", "0", *args])
    assert result.exit_code == 1
    assert message in " ".join(result.output.split())
