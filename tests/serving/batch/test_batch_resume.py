"""Resumability: a real `sluice batch score` process killed with SIGKILL mid-way, rerun, gives the same bytes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[3]
MALFORMED_AT = (10, 50_000, 120_000)


def _big_input(test_frame: pd.DataFrame, path: Path, copies: int) -> None:
    frame = pd.concat([test_frame] * copies, ignore_index=True)
    frame["id"] = [f"r{i}" for i in range(len(frame))]
    frame.loc[::997, "mean_radius"] = np.nan  # some rejects, spread over many chunks
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
        lines = path.read_text().splitlines(keepends=True)
        for at in MALFORMED_AT:  # lines that do not split into the header's columns
            lines.insert(at, "r-bad,1.0,2.0\n")
        path.write_text("".join(lines))
    else:
        frame.to_parquet(path, index=False, row_group_size=5000)


def _score(bundle: Path, source: Path, out: Path, chunk: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "sluice", "batch", "score", "--model", str(bundle), "--input", str(source)]
    cmd += ["--output", str(out), "--chunk-size", str(chunk), "--checkpoint-every", "0"]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_killed_run_resumes_to_identical_output(
    bundle_dir: Path, test_frame: pd.DataFrame, tmp_path: Path, suffix: str
) -> None:
    source = tmp_path / f"in{suffix}"
    _big_input(test_frame, source, copies=1000)  # 143,000 rows
    chunk = 1500
    total_chunks = -(-143_000 // chunk)

    reference = _score(bundle_dir, source, tmp_path / f"ref{suffix}", chunk)
    assert reference.wait(timeout=90) == 0, reference.stderr.read() if reference.stderr else ""

    out = tmp_path / f"out{suffix}"
    checkpoint = out.with_name(out.name + ".partial") / "checkpoint.json"
    victim = _score(bundle_dir, source, out, chunk)
    done = 0
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and victim.poll() is None:
            try:
                done = json.loads(checkpoint.read_text())["done"]
            except (OSError, ValueError, KeyError):
                done = 0
            if done >= 5:
                os.kill(victim.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        if victim.poll() is None and done < 5:
            victim.kill()
        victim.wait(timeout=10)
    assert victim.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = json.loads(checkpoint.read_text())["done"]
    assert 5 <= killed_at < total_chunks
    assert not out.exists()

    rerun = _score(bundle_dir, source, out, chunk)
    stdout, stderr = rerun.communicate(timeout=90)
    assert rerun.returncode == 0, stderr.decode()
    assert b"resumed after" in stdout
    assert out.read_bytes() == (tmp_path / f"ref{suffix}").read_bytes()
    rejects = Path(f"{out}.rejects.jsonl").read_bytes()
    assert rejects == Path(f"{tmp_path / f'ref{suffix}'}.rejects.jsonl").read_bytes()
    malformed = len(MALFORMED_AT) if suffix == ".csv" else 0
    assert len(rejects.splitlines()) == len(range(0, 143_000, 997)) + malformed
    if malformed:
        assert rejects.splitlines()[-1].startswith(b'{"line": 120001, "reason": "CSV line 120001: 3 fields')
    assert not checkpoint.parent.exists()


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_watch_stopped_twice_mid_file_exits_cleanly_and_the_next_scan_resumes(
    bundle_dir: Path, test_frame: pd.DataFrame, tmp_path: Path
) -> None:
    """The first Ctrl-C (or SIGTERM) asks `sluice batch watch` to stop after the file under way; a second one
    stops it at once, mid-file: exit 0 with no traceback, and the next scan resumes the file from its
    checkpoint instead of losing or repeating rows."""
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    _big_input(test_frame, inbox / "big.csv", copies=3000)  # 429,000 rows: several seconds of scoring
    past = time.time() - 60
    os.utime(inbox / "big.csv", (past, past))  # settled
    base = [sys.executable, "-m", "sluice", "batch", "watch", str(inbox), "--model", str(bundle_dir), "--out",
            str(out), "--chunk-size", "1500"]  # fmt: skip
    watch = subprocess.Popen(
        [*base, "--interval", "0.2"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    checkpoint = out / "big.csv.partial" / "checkpoint.json"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and watch.poll() is None and not (out / "big.csv").exists():
            try:
                if json.loads(checkpoint.read_text())["done"] >= 1:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.01)
        watch.send_signal(signal.SIGINT)
        time.sleep(0.1)
        watch.send_signal(signal.SIGINT)
        stdout, stderr = watch.communicate(timeout=30)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert watch.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr + stdout, stderr.decode()
    assert not (out / "big.csv").exists() and checkpoint.exists(), (
        "the file finished before the second Ctrl-C"
    )

    again = subprocess.run([*base, "--once"], cwd=REPO, capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr.decode()
    assert b"scored big.csv" in again.stdout and b"resumed after" in again.stdout, again.stdout.decode()
    assert len(pd.read_csv(out / "big.csv")) == 429_000 - len(range(0, 429_000, 997))
