"""The log read back: delayed labels join within the label window and are counted as late after it; a puid
reused by a caller joins its first request only; a feedback repeated is not counted twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from model.contract import load_contract
from monitor.records import read_log

REPO = Path(__file__).resolve().parents[2]
CONTRACT = load_contract(REPO / "contract.yaml")
ROW = [14.0, 19.0, 90.0, 600.0, 0.096, 0.1, 0.08, 0.05, 0.18, 0.063, 0.4, 1.2, 2.8, 40.0, 0.007, 0.025, 0.03,
       0.012, 0.02, 0.004, 16.0, 25.0, 107.0, 880.0, 0.13, 0.25, 0.27, 0.11, 0.29, 0.084]  # fmt: skip


def prediction(t: float, puid: str, label: int = 1) -> dict[str, Any]:
    probs = [0.1, 0.9] if label == 1 else [0.9, 0.1]
    return {"kind": "prediction", "time": t, "predictor": "m-a", "puid": puid, "protocol": "seldon",
            "request": {"data": {"ndarray": [ROW]}}, "response": {"data": {"names": ["0", "1"], "ndarray": [probs]}}}  # fmt: skip


def feedback(t: float, puid: str, truth: int) -> dict[str, Any]:
    return {"kind": "feedback", "time": t, "puid": puid, "truth": {"data": {"ndarray": [truth]}}}


def write(directory: Path, records: list[dict[str, Any]]) -> Path:
    directory.mkdir()
    (directory / "predictions-20260101T000000Z-1-0001.jsonl").write_bytes(
        b"".join(orjson.dumps(r) + b"\n" for r in records)
    )
    return directory


def test_labels_join_within_the_window_and_later_ones_are_late(tmp_path: Path) -> None:
    log = read_log(
        write(
            tmp_path / "log",
            [
                prediction(100.0, "a"),
                prediction(100.0, "b"),
                prediction(100.0, "c", label=0),
                feedback(100.0 + 3599, "a", 1),  # just inside an hour
                feedback(100.0 + 3601, "b", 1),  # just outside
                feedback(150.0, "c", 1),
                feedback(160.0, "c", 0),  # repeated: the first one counts
                feedback(170.0, "nobody", 1),
            ],
        ),
        CONTRACT,
        label_window=3600.0,
    )
    assert (log.labels.joined, log.labels.late, log.labels.unmatched) == (2, 1, 1)
    assert log.rows.truth == [1, None, 1]
    assert log.rows.predicted == [1, 1, 0]
    assert log.skipped.counts["duplicate_feedback"] == 1


def test_a_reused_puid_joins_its_first_request_only(tmp_path: Path) -> None:
    log = read_log(
        write(tmp_path / "log", [prediction(1.0, "same"), prediction(2.0, "same"), feedback(3.0, "same", 0)]),
        CONTRACT,
    )
    assert log.rows.truth == [0, None]


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_sluice_monitor_watch_serves_the_metrics_on_a_port_and_stops_cleanly(
    tmp_path: Path, stop: str
) -> None:
    """Ctrl-C, or the SIGTERM a pod gets, ends --watch after the turn under way: exit 0, the report whole."""
    import json
    import signal
    import subprocess
    import sys
    import time

    import httpx
    from prometheus_client.parser import text_string_to_metric_families
    from testkit.services import free_port

    log = write(tmp_path / "log", [prediction(float(i), f"p{i}") for i in range(30)])
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice", "monitor", str(log), "--contract", str(REPO / "contract.yaml"),
         "--metrics-port", str(port), "--watch", "1s", "--report", str(tmp_path / "r")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        names: set[str] = set()
        while time.monotonic() < deadline and "sluice_drift_score" not in names:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                names = {f.name for f in text_string_to_metric_families(text)}
            except httpx.HTTPError:
                time.sleep(0.2)
        assert {
            "sluice_drift_score",
            "sluice_monitor_records",
            "sluice_monitor_last_run_timestamp_seconds",
        } <= names
    finally:
        proc.send_signal(getattr(signal, stop))
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert json.loads((tmp_path / "r" / "summary.json").read_text())
