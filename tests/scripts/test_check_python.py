"""The set-up refuses a Python other than 3.12 with a message that says why and what to do."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check-python.sh"


def interpreters() -> list[str]:
    """Real interpreters of other versions on this machine (pyenv's shims would pick 3.12 from .python-version)."""
    found = [
        str(p) for p in sorted(Path.home().glob(".pyenv/versions/3.*/bin/python3")) if "3.12" not in str(p)
    ]
    if Path("/usr/bin/python3").exists():
        found.append("/usr/bin/python3")
    return found


def run(python: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), python], capture_output=True, text=True, timeout=30)


def test_accepts_python_312():
    assert run(sys.executable).returncode == 0


@pytest.mark.parametrize(
    "python", interpreters() or [pytest.param("", marks=pytest.mark.skip("no other Python"))]
)
def test_refuses_other_versions_and_says_why(python):
    version = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version != "3.12"
    proc = run(python)
    assert proc.returncode == 1
    assert f"is Python {version}" in proc.stderr and "seldon-core" in proc.stderr and "PYTHON=" in proc.stderr


def test_refuses_a_missing_interpreter():
    proc = run("/nonexistent/python3.12")
    assert proc.returncode == 1 and "no Python 3.12 found" in proc.stderr
