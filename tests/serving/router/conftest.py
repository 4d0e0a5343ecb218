"""Fixtures for the router's tests: `up` starts `sluice up` in a thread on a manifest, `fake_uri` is a bundle path."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "router"))

from up_harness import fake_uri, up

__all__ = ["fake_uri", "up"]
