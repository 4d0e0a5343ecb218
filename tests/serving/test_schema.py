"""Schemathesis over the predictor's own OpenAPI document, against the real server, with every check on.

All phases (the document's examples, coverage of every boundary and undeclared method, fuzzing, stateful
sequences) and all checks: no 5xx; what the document calls valid is accepted and what it calls invalid is
refused with a declared 4xx; answers match their declared schema, status and content type; an undeclared
method gets 405 with `Allow`. The seed is fixed so a failure replays; SLUICE_FUZZ_SEED picks another.
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
# The document is written for the model: a model of numbers; one with categorical, boolean and nullable
# features (each position of a row has its feature's schema, v2 takes one tensor per feature); a regression.
@pytest.mark.parametrize("server", ["live", "mixed_live", "regression_live"])
def test_every_check_passes_on_every_operation(
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
    tested = next(line for line in report.splitlines() if "Tested:" in line)
    assert int(tested.split()[-1]) >= 20, tested  # every operation of the document was exercised
