"""Fixtures of the end-to-end tests: a scratch copy of the training half of the repository."""

from __future__ import annotations

from pathlib import Path

import pytest
from scratch_repo import ScratchRepo, make_scratch


@pytest.fixture
def scratch_repo(tmp_path: Path) -> ScratchRepo:
    return make_scratch(tmp_path / "repo")
