"""The top of the `sluice` command: version and help."""

from __future__ import annotations

import os
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


def test_every_command_reports_an_error_with_its_markup_kept_as_text(
    tmp_path: Path, bundle_dir: Path
) -> None:
    """One error path: a file named like Rich markup is printed as it is, never eaten or styled, and the
    command exits 1 with `error:` and the name of what was wrong."""
    evil = tmp_path / "[red]rows[/red].csv"
    commands = [
        [
            "batch",
            "score",
            "--model",
            str(bundle_dir),
            "--input",
            str(evil),
            "--output",
            str(tmp_path / "o.csv"),
        ],
        ["edge", "predict", "--bundle", str(tmp_path / "[bold]edge[/bold]")],
        ["serve", "--model", str(tmp_path / "[blink]bundle[/blink]"), "--port", "0"],
    ]
    for args in commands:
        result = subprocess.run(
            [sys.executable, "-m", "sluice", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, "COLUMNS": "400"},
            timeout=120,
        )
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        named = next(a for a in args if "[" in a)
        assert "error:" in result.stderr and Path(named).name in result.stderr, (args, result.stderr)
