"""`sluice batch watch`: each settled file scored exactly once, across restarts; partial files left alone."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from serving.batch.watch import LEDGER, Watcher


def _age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_each_file_is_scored_once_across_restarts(
    predictor, test_frame: pd.DataFrame, tmp_path: Path
) -> None:
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    test_frame.head(20).to_csv(inbox / "a.csv", index=False)
    test_frame.head(30).to_parquet(inbox / "b.parquet")
    for p in inbox.iterdir():
        _age(p, 60)
    watcher = Watcher(predictor, inbox, outbox, settle=1.0)
    events = watcher.scan()
    assert sorted((e.name, e.status) for e in events) == [("a.csv", "scored"), ("b.parquet", "scored")]
    assert watcher.scan() == []
    assert Watcher(predictor, inbox, outbox, settle=1.0).scan() == []  # a restart reads the ledger
    assert len(pd.read_csv(outbox / "a.csv")) == 20 and len(pd.read_parquet(outbox / "b.parquet")) == 30

    test_frame.head(5).to_csv(inbox / "a.csv", index=False)  # same name, new content: a new file
    _age(inbox / "a.csv", 60)
    assert [(e.name, e.status) for e in Watcher(predictor, inbox, outbox, settle=1.0).scan()] == [
        ("a.csv", "scored")
    ]
    assert len(pd.read_csv(outbox / "a.csv")) == 5
    ledger = [json.loads(line) for line in (outbox / LEDGER).read_text().splitlines()]
    assert [e["name"] for e in ledger].count("a.csv") == 2


def test_files_being_written_are_not_taken(predictor, test_frame: pd.DataFrame, tmp_path: Path) -> None:
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    test_frame.head(10).to_csv(inbox / ".c.csv.tmp", index=False)  # write-then-rename convention
    test_frame.head(10).to_csv(inbox / "d.csv", index=False)  # just written: not settled yet
    (inbox / "notes.txt").write_text("not a data file")
    watcher = Watcher(predictor, inbox, outbox, settle=0.3)
    assert watcher.scan() == []
    time.sleep(0.35)
    with (inbox / "d.csv").open("a") as f:  # still growing
        f.write(test_frame.head(1).to_csv(index=False, header=False))
    assert watcher.scan() == []
    time.sleep(0.7)
    assert [e.name for e in watcher.scan()] == ["d.csv"]
    assert len(pd.read_csv(outbox / "d.csv")) == 11
    (inbox / ".c.csv.tmp").rename(inbox / "c.csv")
    _age(inbox / "c.csv", 60)
    assert [e.name for e in watcher.scan()] == ["c.csv"]


def test_a_bad_file_is_recorded_not_retried(predictor, test_frame: pd.DataFrame, tmp_path: Path) -> None:
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    test_frame.drop(columns=["mean_area"]).to_csv(inbox / "bad.csv", index=False)
    _age(inbox / "bad.csv", 60)
    events = Watcher(predictor, inbox, outbox, settle=1.0).scan()
    assert [(e.name, e.status) for e in events] == [("bad.csv", "quarantined")]
    assert "missing feature column 'mean_area'" in events[0].detail
    assert Watcher(predictor, inbox, outbox, settle=1.0).scan() == []


def test_cli_watch_once(bundle_dir: Path, test_frame: pd.DataFrame, tmp_path: Path) -> None:
    from sluice.cli import app

    inbox = tmp_path / "in"
    inbox.mkdir()
    test_frame.to_json(inbox / "x.jsonl", orient="records", lines=True)
    _age(inbox / "x.jsonl", 60)
    args = [
        "batch",
        "watch",
        str(inbox),
        "--model",
        str(bundle_dir),
        "--out",
        str(tmp_path / "out"),
        "--once",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "scored x.jsonl" in result.output and "1 file(s) handled" in result.output
    result = CliRunner().invoke(app, args)
    assert "0 file(s) handled" in result.output
    help_text = CliRunner().invoke(app, ["batch", "watch", "--help"]).output
    assert "cron" in help_text


def test_known_files_are_not_hashed_again(
    predictor, test_frame: pd.DataFrame, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    import serving.batch.watch as watch

    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    test_frame.head(5).to_csv(inbox / "a.csv", index=False)
    _age(inbox / "a.csv", 60)
    assert len(Watcher(predictor, inbox, outbox, settle=1.0).scan()) == 1
    hashed: list[Path] = []
    real = watch.content_hash
    monkeypatch.setattr(watch, "content_hash", lambda p: hashed.append(p) or real(p))
    assert Watcher(predictor, inbox, outbox, settle=1.0).scan() == []
    assert hashed == []
    os.utime(
        inbox / "a.csv", (time.time() - 30, time.time() - 30)
    )  # touched, same content: hashed, not scored
    assert Watcher(predictor, inbox, outbox, settle=1.0).scan() == []
    assert hashed == [inbox / "a.csv"]
