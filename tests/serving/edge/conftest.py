"""Edge fixtures: real edge bundles exported from the suite's real model bundles."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def edge_bundle(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from serving.edge.export import export

    out = tmp_path_factory.mktemp("edge") / "lr"
    export(str(bundle_dir), out)
    return out


@pytest.fixture(scope="session")
def bad_edge_bundle(bad_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from serving.edge.export import export

    out = tmp_path_factory.mktemp("edge") / "bad"
    export(str(bad_bundle_dir), out)
    return out
