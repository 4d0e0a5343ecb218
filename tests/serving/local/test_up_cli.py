"""`sluice up` refuses what it cannot run before starting anything, with the reason on stderr."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner
from up_harness import predictor, write_manifest

from sluice.cli import app

pytestmark = pytest.mark.timeout(60)


def test_a_manifest_it_cannot_run_exits_with_the_field(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    write_manifest(tmp_path, [predictor("m-a", 60, bundle), predictor("m-b", 30, bundle)])
    result = CliRunner().invoke(app, ["up", str(tmp_path), "--port", "0"])
    assert result.exit_code == 1
    assert "spec.predictors[].traffic: non-shadow traffic must sum to 100, got 90" in result.output


def test_a_directory_without_a_seldondeployment(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["up", str(tmp_path), "--port", "0"])
    assert result.exit_code == 1
    assert "no YAML file with kind: SeldonDeployment" in result.output


def test_a_busy_port_fails_before_any_predictor_starts(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    write_manifest(tmp_path, [predictor("m-a", 100, bundle)])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["up", str(tmp_path), "--port", str(port)])
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert "starting m-a" not in result.output
