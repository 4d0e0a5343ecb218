"""`sluice batch watch` under poison files, I/O errors and a misplaced --out: one file never stops the scan."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from serving.batch.formats import BatchError
from serving.batch.watch import LEDGER, QUARANTINE, Backoff, Watcher


def _age(path: Path, seconds: float = 60) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def _ledger(outbox: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (outbox / LEDGER).read_text().splitlines()]


def _latin1_rows(frame: pd.DataFrame) -> bytes:
    text = frame.head(5).to_csv(index=False).replace("r1,", "caf\xe9,")
    return text.encode("latin-1")  # a legacy export: valid CSV, not UTF-8, in a data row


def _latin1_header(frame: pd.DataFrame) -> bytes:
    return frame.head(5).to_csv(index=False).replace("id", "n\xb0", 1).encode("latin-1")


def _huge_header_field(frame: pd.DataFrame) -> bytes:
    header, _, rest = frame.head(5).to_csv(index=False).partition("\n")
    return (header.replace("id", "x" * (200 * 1024), 1) + "\n" + rest).encode()


def _binary(frame: pd.DataFrame) -> bytes:
    return bytes(range(256)) * 64


POISON = {
    "latin1-rows": _latin1_rows,
    "latin1-header": _latin1_header,
    "field-over-128k": _huge_header_field,
    "binary": _binary,
}


@pytest.mark.parametrize("kind", POISON)
def test_a_poison_file_is_quarantined_and_the_scan_goes_on(
    predictor, test_frame: pd.DataFrame, tmp_path: Path, kind: str
) -> None:
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    (inbox / "a-poison.csv").write_bytes(POISON[kind](test_frame))
    test_frame.head(7).to_csv(inbox / "b-good.csv", index=False)  # sorts after the poison
    for path in inbox.iterdir():
        _age(path)
    events = Watcher(predictor, inbox, outbox, settle=1.0).scan()
    assert [(e.name, e.status) for e in events] == [("a-poison.csv", "quarantined"), ("b-good.csv", "scored")]
    assert len(pd.read_csv(outbox / "b-good.csv")) == 7
    moved = outbox / QUARANTINE / "a-poison.csv"
    assert moved.read_bytes() == POISON[kind](test_frame) and not (inbox / "a-poison.csv").exists()
    reason = (outbox / QUARANTINE / "a-poison.csv.reason.txt").read_text()
    assert reason.startswith("a-poison.csv: ") and reason.strip() in f"a-poison.csv: {events[0].detail}"
    assert not (outbox / "a-poison.csv").exists() and not (outbox / "a-poison.csv.partial").exists()
    entry = next(e for e in _ledger(outbox) if e["name"] == "a-poison.csv")
    assert entry["status"] == "quarantined" and entry["error"] in events[0].detail
    assert Watcher(predictor, inbox, outbox, settle=1.0).scan() == []


def test_quarantine_reasons_name_what_is_wrong(predictor, test_frame: pd.DataFrame, tmp_path: Path) -> None:
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    for kind in ("latin1-rows", "latin1-header", "field-over-128k"):
        (inbox / f"{kind}.csv").write_bytes(POISON[kind](test_frame))
        _age(inbox / f"{kind}.csv")
    details = {e.name: e.detail for e in Watcher(predictor, inbox, outbox, settle=1.0).scan()}
    assert "Row #3: CSV conversion error to string: invalid UTF8 data" in details["latin1-rows.csv"]
    assert "the header is not UTF-8 text (invalid start byte at byte 1)" in details["latin1-header.csv"]
    assert "field larger than field limit (131072)" in details["field-over-128k.csv"]
    assert all(str(inbox / name) in detail for name, detail in details.items())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_io_error_is_retried_with_back_off_not_recorded_for_good(
    predictor, test_frame: pd.DataFrame, tmp_path: Path
) -> None:
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    test_frame.head(4).to_csv(inbox / "a.csv", index=False)
    _age(inbox / "a.csv")
    (outbox / "a.csv" / "in-the-way").mkdir(parents=True)  # the output's place is taken: an OSError
    clock = Clock()
    watcher = Watcher(predictor, inbox, outbox, settle=1.0, backoff=Backoff(base=30, cap=60), clock=clock)
    [event] = watcher.scan()
    assert event.status == "retrying" and "attempt 1 of 5; next try in 30 s" in event.detail
    assert (inbox / "a.csv").exists() and not (outbox / LEDGER).exists()
    assert watcher.scan() == []  # backing off
    (outbox / "a.csv" / "in-the-way").rmdir()
    (outbox / "a.csv").rmdir()  # the disk is fine again
    clock.now += 31
    [event] = watcher.scan()
    assert event.status == "scored", event.detail
    assert len(pd.read_csv(outbox / "a.csv")) == 4


def test_io_errors_that_do_not_go_away_end_in_quarantine(
    predictor, test_frame: pd.DataFrame, tmp_path: Path
) -> None:
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    test_frame.head(4).to_csv(inbox / "a.csv", index=False)
    _age(inbox / "a.csv")
    (outbox / "a.csv" / "in-the-way").mkdir(parents=True)
    clock = Clock()
    watcher = Watcher(
        predictor, inbox, outbox, settle=1.0, max_attempts=3, backoff=Backoff(base=1), clock=clock
    )
    statuses = []
    for _ in range(3):
        statuses += [e.status for e in watcher.scan()]
        clock.now += 10
    assert statuses == ["retrying", "retrying", "quarantined"]
    assert (outbox / QUARANTINE / "a.csv").exists()
    assert "gave up after 3 attempts" in _ledger(outbox)[-1]["error"]


@pytest.mark.parametrize("where", ["inbox-itself", "inside", "symlink-into"])
def test_an_out_inside_the_inbox_is_refused(predictor, tmp_path: Path, where: str) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    out = {"inbox-itself": inbox, "inside": inbox / "scored", "symlink-into": tmp_path / "link"}[where]
    if where == "symlink-into":
        (inbox / "deep").mkdir()
        out.symlink_to(inbox / "deep")
    with pytest.raises(BatchError, match="is inside the inbox"):
        Watcher(predictor, inbox, out, settle=1.0)
    assert not (inbox / "scored").exists()


def test_cli_refuses_an_out_inside_the_inbox_and_reports_quarantine(
    bundle_dir: Path, test_frame: pd.DataFrame, tmp_path: Path
) -> None:
    from sluice.cli import app

    inbox = tmp_path / "in"
    inbox.mkdir()
    base = ["batch", "watch", str(inbox), "--model", str(bundle_dir), "--once"]
    result = CliRunner().invoke(app, [*base, "--out", str(inbox / "scored")])
    assert result.exit_code == 1 and "is inside the inbox" in result.output
    (inbox / "bad.csv").write_bytes(_latin1_header(test_frame))
    _age(inbox / "bad.csv")
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "quarantined bad.csv" in result.output and "1 file(s) handled" in result.output


@pytest.mark.timeout(30)
def test_the_watch_loop_outlives_a_scan_that_fails_as_a_whole(
    predictor, test_frame: pd.DataFrame, tmp_path: Path
) -> None:
    import threading

    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    watcher = Watcher(predictor, inbox, outbox, settle=0.1, backoff=Backoff(base=0.05, cap=0.1))
    inbox.rename(tmp_path / "unmounted")  # the inbox's mount goes away for a while
    errors: list[str] = []
    scored: list[str] = []
    stop = threading.Event()
    thread = threading.Thread(
        target=watcher.run,
        kwargs={
            "interval": 0.05,
            "stop": stop.is_set,
            "on_event": lambda e: scored.append(e.name),
            "on_error": lambda e, wait: errors.append(type(e).__name__),
        },
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not errors and time.monotonic() < deadline:
            time.sleep(0.01)
        (tmp_path / "unmounted").rename(inbox)
        test_frame.head(3).to_csv(inbox / "a.csv", index=False)
        _age(inbox / "a.csv")
        while not scored and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(10)
    assert errors and errors[0] == "FileNotFoundError"
    assert scored == ["a.csv"]
