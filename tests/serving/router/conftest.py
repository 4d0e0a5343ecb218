"""Gateway fixtures: bundle directories for fake predictors, and a running `sluice up` runtime factory."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gateway_harness import FakeCommand, RunningRuntime, write_manifest


@pytest.fixture()
def fake_uri(tmp_path: Path) -> Path:
    """A directory that passes the manifest's URI check; fake predictors never read it."""
    d = tmp_path / "bundle"
    d.mkdir()
    return d


@pytest.fixture()
def up(tmp_path: Path) -> Iterator[Callable[..., RunningRuntime]]:
    """Start a runtime on a manifest (fake predictors unless a command is given); stopped at teardown."""
    started: list[RunningRuntime] = []

    def start(predictors: list[dict[str, Any]], command: Any = None, **kwargs: Any) -> RunningRuntime:
        env = tmp_path / f"env{len(started)}"
        env.mkdir()
        write_manifest(env, predictors)
        rt = RunningRuntime(env, command=command or FakeCommand(), **kwargs)
        started.append(rt)
        rt.env = env  # type: ignore[attr-defined]
        return rt.start()

    yield start
    leftovers = []
    for rt in started:
        popens = [p.popen for p in list(rt.runtime.processes.values()) if p.popen is not None]
        rt.stop()
        for popen in popens:
            if popen.poll() is None:  # stop() must have ended every predictor
                popen.kill()
                leftovers.append(popen.pid)
    assert not leftovers, f"predictor processes outlived the runtime: {leftovers}"
