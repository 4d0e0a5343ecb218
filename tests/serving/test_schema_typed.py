"""Schemathesis over the OpenAPI document of a typed model and of a regression, with every check on.

The document is written for the model it serves: for a model with categorical, boolean and nullable
features each position of a row has its feature's schema, and its v2 inputs are one tensor per feature;
for a regression the answers and the feedback hold values. Whatever it calls valid the server accepts, and
whatever it calls invalid the server refuses with a declared 4xx (the same run as test_schema.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ST = Path(sys.executable).parent / "st"


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("server", ["mixed_live", "regression_live"])
def test_every_check_passes_on_a_typed_model_and_a_regression(
    server: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    live: Any = request.getfixturevalue(server)
    seed = os.environ.get("SLUICE_FUZZ_SEED", "20261130")
    command = [
        str(ST), "run", f"{live.url}/openapi.json",
        "--checks", "all",
        "--max-examples", "8",
        "--workers", "1",
        "--seed", seed,
        "--request-timeout", "20",
        "--no-color",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=280)
    report = done.stdout + done.stderr
    assert done.returncode == 0, f"schemathesis (seed {seed}) found problems:\n{report[-12000:]}"
    assert "No issues found" in report
