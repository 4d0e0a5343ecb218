"""Fixtures for monitoring's tests: the `sluice up` harness of the router's tests (a real runtime on loopback)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving" / "router"))

from up_harness import fake_uri, up

__all__ = ["fake_uri", "up"]
