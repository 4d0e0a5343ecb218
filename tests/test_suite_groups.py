"""The suite's own scheduling: `make test` runs `pytest -n 3 --dist loadgroup`, and the end-to-end modules (the
demo, the training pipeline, the gates, your data) share one expensive module fixture among their tests by an
`xdist_group` mark. If grouping stops working (pytest 9.2 with pytest-xdist 3.8 did, silently), each worker runs
that fixture again: the suite still passes, only minutes slower. This runs a small session the same way and
checks that a group's tests land on one worker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

GROUPED = """
import os
import pytest

pytestmark = pytest.mark.xdist_group("together")

@pytest.mark.parametrize("i", range(6))
def test_grouped(i, tmp_path_factory):
    with open(os.environ["GROUPS_OUT"], "a") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
"""

LOOSE = """
import pytest

@pytest.mark.parametrize("i", range(6))
def test_loose(i):
    pass
"""


def test_a_groups_tests_run_on_one_worker(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    (tmp_path / "test_loose.py").write_text(LOOSE)
    out = tmp_path / "workers.txt"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-n",
            "2",
            "--dist",
            "loadgroup",
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
        ],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "GROUPS_OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    workers = out.read_text().split()
    assert len(workers) == 6
    assert len(set(workers)) == 1, (
        f"one xdist_group ran on {sorted(set(workers))}: --dist loadgroup is not grouping"
    )
