"""The top of the `sluice` command: version and help."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_version_is_the_distributions() -> None:
    expected = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    out = subprocess.run(
        [sys.executable, "-m", "sluice", "--version"], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    assert out.strip() == f"sluice {expected}"


def test_help_lists_every_area() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sluice", "--help"], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    for command in (
        "demo",
        "model",
        "serve",
        "up",
        "rollout",
        "gitops",
        "batch",
        "stream",
        "edge",
        "pipelines",
    ):
        assert command in out, command
