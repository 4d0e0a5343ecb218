"""Fixtures for the dashboard's tests (helpers in dashboard_fixtures.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dashboard_fixtures import make_environment_repo, running_exporter
from rollout_exporter import Exporter  # on the path once dashboard_fixtures is imported


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A GitOps repository whose `local` environment serves STABLE, with a fast canary policy in Git."""
    return make_environment_repo(tmp_path)


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    with running_exporter() as exp:
        yield exp
