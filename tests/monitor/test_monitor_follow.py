"""Reading the log incrementally gives what reading the whole log gives: over rounds of writing by two
processes, with rotation, a window that moves, restarts from the state directory, a torn last line; a corrupt
state directory restarts the read from the log's start (and still gives the same result)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from model.contract import load_contract
from monitor.follow import Follower
from monitor.records import Log, Scope, read_log
from monitor.sources import FileLog, Skipped
from serving.router.prediction_log import FileSink, log_files

REPO = Path(__file__).resolve().parents[2]
CONTRACT = load_contract(REPO / "contract.yaml")
ROW = [14.0, 19.0, 90.0, 600.0, 0.096, 0.1, 0.08, 0.05, 0.18, 0.063, 0.4, 1.2, 2.8, 40.0, 0.007, 0.025, 0.03,
       0.012, 0.02, 0.004, 16.0, 25.0, 107.0, 880.0, 0.13, 0.25, 0.27, 0.11, 0.29, 0.084]  # fmt: skip


def prediction(t: float, puid: str, label: int, x0: float, predictor: str = "m-a") -> bytes:
    probs = [0.1, 0.9] if label == 1 else [0.9, 0.1]
    doc = {"kind": "prediction", "time": t, "predictor": predictor, "puid": puid, "protocol": "seldon",
           "namespace": "ns", "deployment": "sd",
           "request": {"data": {"ndarray": [[x0, *ROW[1:]]]}}, "response": {"data": {"names": ["0", "1"], "ndarray": [probs]}}}  # fmt: skip
    return orjson.dumps(doc) + b"\n"


def feedback(t: float, puid: str, truth: int) -> bytes:
    doc = {"kind": "feedback", "time": t, "puid": puid, "namespace": "ns", "deployment": "sd",
           "truth": {"data": {"ndarray": [truth]}}}  # fmt: skip
    return orjson.dumps(doc) + b"\n"


def same(a: Log, b: Log) -> None:
    assert np.array_equal(a.rows.X, b.rows.X)
    assert np.array_equal(a.rows.time, b.rows.time)
    for name in ("predictor", "digest", "puid", "index", "request", "predicted", "truth", "labelled_at"):
        assert getattr(a.rows, name) == getattr(b.rows, name), name
    assert vars(a.labels) == vars(b.labels)
    assert a.skipped.counts == b.skipped.counts
    assert a.requests == b.requests


class Traffic:
    """Two router processes writing interleaved predictions, late and repeated feedback, and some junk."""

    def __init__(self, directory: Path, seed: int, keep_files: int | None = None):
        self.rng = random.Random(seed)
        self.sinks = [FileSink(directory, max_file_bytes=4096, keep_files=keep_files) for _ in range(2)]
        self.t = 1000.0
        self.n = 0
        self.open: list[tuple[str, int]] = []

    def round(self, k: int) -> None:
        for _ in range(k):
            self.t += self.rng.choice([0.0, 0.5, 3.0])  # ties in time across processes, too
            sink = self.rng.choice(self.sinks)
            r = self.rng.random()
            if r < 0.6:
                self.n += 1
                puid = f"p{self.n}"
                label = self.rng.randint(0, 1)
                sink.write(
                    [
                        prediction(
                            self.t, puid, label, self.rng.uniform(5, 25), self.rng.choice(["m-a", "m-b"])
                        )
                    ]
                )
                self.open.append((puid, label))
            elif r < 0.9 and self.open:
                puid, label = self.rng.choice(self.open)
                late = self.rng.random() < 0.1
                sink.write(
                    [feedback(self.t + (5000.0 if late else 0.0), puid, label ^ (self.rng.random() < 0.2))]
                )
            else:
                sink.write(
                    [self.rng.choice([b"not json\n", b"[1]\n", b'{"kind": "prediction", "time": "x"}\n'])]
                )


@pytest.mark.parametrize("window", [None, 40.0])
def test_incremental_reading_equals_reading_the_whole_log(tmp_path: Path, window: float | None) -> None:
    logdir = tmp_path / "log"
    traffic = Traffic(logdir, seed=7)
    live = Follower(FileLog(logdir))  # one long-running reader
    state = tmp_path / "state"
    read_new = 0
    for step in range(12):
        traffic.round(60)
        scope = Scope(since=None if window is None else traffic.t - window)
        full = read_log(logdir, CONTRACT, scope, label_window=3600.0)
        same(live.read(CONTRACT, scope, 3600.0), full)
        read_new += live.read_last
        restarted = Follower(FileLog(logdir), state)  # a reader started afresh each round, from its state
        same(restarted.read(CONTRACT, scope, 3600.0), full)
        assert restarted.reset is None
        if step % 4 == 3:
            assert len(log_files(logdir)) > 2
    if window is None:  # every record was read exactly once over the rounds
        assert read_new == len(list(FileLog(logdir).read(Skipped())))
    else:  # the window's records only: the state stays small
        assert len(restarted.records) < traffic.n / 2


def test_each_record_is_read_once(tmp_path: Path) -> None:
    logdir = tmp_path / "log"
    traffic = Traffic(logdir, seed=3)
    follower = Follower(FileLog(logdir), tmp_path / "state")
    total = 0
    for _ in range(5):
        traffic.round(50)
        Follower(FileLog(logdir), tmp_path / "state").read(CONTRACT)  # (another reader of the same state)
        follower = Follower(FileLog(logdir), tmp_path / "state")
        follower.read(CONTRACT)
        total += follower.read_last
        assert follower.read_last == 0  # the reader before it took everything
    assert total == 0
    traffic.round(10)
    follower.read(CONTRACT)
    assert 0 < follower.read_last <= 10


def test_rotated_away_files_keep_their_records_and_new_files_are_read_from_the_start(tmp_path: Path) -> None:
    logdir = tmp_path / "log"
    sink = FileSink(logdir, max_file_bytes=2048, keep_files=2)
    follower = Follower(FileLog(logdir), tmp_path / "state")
    for i in range(60):
        sink.write([prediction(float(i), f"p{i}", 1, 14.0)])
        if i % 5 == 4:
            follower.read(CONTRACT)
    log = follower.read(CONTRACT)
    assert log.rows.puid == [f"p{i}" for i in range(60)]  # every record once, even those of deleted files
    assert len(read_log(logdir, CONTRACT).rows) < 60  # a full read has lost the rotated-away files


def test_a_torn_last_line_is_read_once_it_is_finished(tmp_path: Path) -> None:
    logdir = tmp_path / "log"
    logdir.mkdir()
    path = logdir / "predictions-20260101T000000Z-1-0001.jsonl"
    whole = prediction(1.0, "a", 1, 14.0) + prediction(2.0, "b", 0, 14.0)
    cut = len(whole) - 40
    path.write_bytes(whole[:cut])
    follower = Follower(FileLog(logdir), tmp_path / "state")
    first = follower.read(CONTRACT)
    assert first.rows.puid == ["a"] and first.skipped.counts["not_json"] == 1  # as a full read counts it
    same(first, read_log(logdir, CONTRACT))
    with path.open("ab") as f:
        f.write(whole[cut:])
    second = Follower(FileLog(logdir), tmp_path / "state").read(CONTRACT)
    assert second.rows.puid == ["a", "b"] and not second.skipped.counts


def test_a_file_replaced_by_a_shorter_one_is_read_again_and_counted(tmp_path: Path) -> None:
    logdir = tmp_path / "log"
    logdir.mkdir()
    path = logdir / "predictions-20260101T000000Z-1-0001.jsonl"
    path.write_bytes(b"".join(prediction(float(i), f"p{i}", 1, 14.0) for i in range(5)))
    follower = Follower(FileLog(logdir))
    follower.read(CONTRACT)
    path.write_bytes(prediction(9.0, "q", 1, 14.0))
    log = follower.read(CONTRACT)
    assert log.rows.puid == [*(f"p{i}" for i in range(5)), "q"]
    assert log.skipped.counts["file_truncated"] == 1


def corrupt_cases() -> list[tuple[str, Any]]:
    return [
        ("not json", lambda d: (d / "state.json").write_bytes(b"{torn")),
        ("a list", lambda d: (d / "state.json").write_bytes(b"[1, 2]")),
        ("another version", lambda d: _edit(d, version=99)),
        ("a path in records", lambda d: _edit(d, records="../../etc/passwd")),
        ("a negative offset", lambda d: _edit(d, position={"kind": "files", "files": {"x": -5}})),
        ("a bad size", lambda d: _edit(d, records_bytes="many")),
        ("records file gone", lambda d: [p.unlink() for p in d.glob("records-*.jsonl")]),
        (
            "records file cut short",
            lambda d: [p.write_bytes(p.read_bytes()[:100]) for p in d.glob("records-*")],
        ),
        (
            "records garbage",
            lambda d: [p.write_bytes(b"\xff" * p.stat().st_size) for p in d.glob("records-*")],
        ),
        ("another log", lambda d: _edit(d, source="/elsewhere")),
    ]


def _edit(directory: Path, **changes: Any) -> None:
    state = orjson.loads((directory / "state.json").read_bytes())
    state.update(changes)
    (directory / "state.json").write_bytes(orjson.dumps(state))


@pytest.mark.parametrize(("what", "damage"), corrupt_cases(), ids=[c[0] for c in corrupt_cases()])
def test_a_corrupt_state_restarts_from_the_start_of_the_log_with_the_same_result(
    tmp_path: Path, what: str, damage: Any
) -> None:
    logdir = tmp_path / "log"
    traffic = Traffic(logdir, seed=11)
    traffic.round(80)
    Follower(FileLog(logdir), tmp_path / "state").read(CONTRACT)
    damage(tmp_path / "state")
    traffic.round(40)
    follower = Follower(FileLog(logdir), tmp_path / "state")
    assert follower.reset and str(tmp_path / "state" / "state.json") in follower.reset
    same(follower.read(CONTRACT), read_log(logdir, CONTRACT))
    again = Follower(FileLog(logdir), tmp_path / "state")  # and the state written after the restart is sound
    assert again.reset is None
    same(again.read(CONTRACT), read_log(logdir, CONTRACT))


def test_a_crash_between_appending_records_and_saving_the_state_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    logdir = tmp_path / "log"
    traffic = Traffic(logdir, seed=5)
    traffic.round(50)
    Follower(FileLog(logdir), tmp_path / "state").read(CONTRACT)
    saved = (tmp_path / "state" / "state.json").read_bytes()
    traffic.round(50)
    Follower(FileLog(logdir), tmp_path / "state").read(CONTRACT)
    (tmp_path / "state" / "state.json").write_bytes(saved)  # records appended, state.json not yet replaced
    follower = Follower(FileLog(logdir), tmp_path / "state")
    assert follower.reset is None
    same(follower.read(CONTRACT), read_log(logdir, CONTRACT))


def test_the_loop_reads_incrementally_with_a_state_dir_and_sees_the_whole_log(tmp_path: Path) -> None:
    from monitor.loop import LoopSettings, read_live

    logdir = tmp_path / "log"
    traffic = Traffic(logdir, seed=13)
    settings = LoopSettings(repo=tmp_path, log_dir=logdir, state_dir=tmp_path / "state", label_window=3600.0)
    for _ in range(3):
        traffic.round(70)
        same(read_live(settings, CONTRACT), read_log(logdir, CONTRACT, label_window=3600.0))
    assert (tmp_path / "state" / "state.json").is_file()


def test_a_long_running_reader_decodes_each_record_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import monitor.records as records

    calls = []
    real = records._decode
    monkeypatch.setattr(records, "_decode", lambda doc, *a: calls.append(doc["puid"]) or real(doc, *a))
    logdir = tmp_path / "log"
    traffic = Traffic(logdir, seed=17)
    traffic.round(100)
    follower = Follower(FileLog(logdir))
    first = follower.read(CONTRACT, Scope(since=traffic.t - 1000.0))
    assert len(calls) == len(set(calls)) > 0
    calls.clear()
    traffic.round(20)
    scope = Scope(since=traffic.t - 1000.0)
    again = follower.read(CONTRACT, scope)
    assert 0 < len(calls) <= 20  # only the new records
    calls.clear()
    same(again, read_log(logdir, CONTRACT, scope))
    assert len(first.rows) > 40


def test_a_file_unreadable_for_a_while_keeps_its_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logdir = tmp_path / "log"
    logdir.mkdir()
    path = logdir / "predictions-20260101T000000Z-1-0001.jsonl"
    path.write_bytes(b"".join(prediction(float(i), f"p{i}", 1, 14.0) for i in range(5)))
    follower = Follower(FileLog(logdir))
    follower.read(CONTRACT)
    real_open = Path.open

    def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    assert follower.read(CONTRACT).skipped.counts["unreadable_file"] == 1
    monkeypatch.setattr(Path, "open", real_open)
    assert follower.read(CONTRACT).rows.puid == [f"p{i}" for i in range(5)]  # each once
