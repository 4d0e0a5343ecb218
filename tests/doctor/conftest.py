"""Fixtures for the doctor's tests: a real project repository with a real remote."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from doctor_project import project_repository


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return project_repository(tmp_path)
