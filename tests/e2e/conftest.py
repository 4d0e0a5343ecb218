"""A scratch copy of the training half of the repository: a real git repo with DVC initialised."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ScratchRepo:
    root: Path
    env: dict[str, str]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(args, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-m", "dvc", *args, check=check)

    def sluice(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-m", "sluice", *args, check=check)


@pytest.fixture
def scratch_repo(tmp_path: Path) -> ScratchRepo:
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "model", root / "model", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        GX_ANALYTICS_ENABLED="false",
        SLUICE_CACHE=str(tmp_path / "cache"),
        PYTHONPATH=str(REPO),
    )
    repo = ScratchRepo(root, env)
    repo.run("git", "init", "-q", "-b", "main")
    repo.dvc("init", "-q")
    repo.dvc("config", "core.analytics", "false")
    repo.run("git", "add", "-A")
    repo.run("git", "-c", "user.email=t@sluice.invalid", "-c", "user.name=t", "commit", "-qm", "scratch")
    return repo
