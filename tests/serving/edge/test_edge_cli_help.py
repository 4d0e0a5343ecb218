"""Every batch, stream and edge command renders its help, and errors holding brackets print as they are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sluice.cli import app

COMMANDS = [
    ["batch", "score"],
    ["batch", "watch"],
    ["stream", "run"],
    ["edge", "export"],
    ["edge", "predict"],
    ["edge", "publish"],
    ["edge", "update"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_renders(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_error_text_with_brackets_is_not_markup(edge_bundle: Path, tmp_path: Path) -> None:
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([{"[/db]": 1.0}]))
    result = CliRunner().invoke(app, ["edge", "predict", "--bundle", str(edge_bundle), "--input", str(rows)])
    assert result.exit_code == 1
    assert "unknown feature '[/db]'" in result.output
