"""A scratch copy of the training half of the repository: a real git repo with DVC initialised (a module of
its own, so tests import it by a name no other folder uses)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Loaded by every Python process of a stage when its folder is on PYTHONPATH: at exit it writes which modules
# of model/ the process imported, so a test can hold dvc.yaml's deps to what the stages really use.
IMPORT_TRACER = """
import atexit, json, os, sys

def _dump():
    out = os.environ.get("SLUICE_IMPORT_TRACE")
    if out and len(sys.argv) >= 3 and sys.argv[-2] == "model":
        names = sorted(n for n in sys.modules if n == "model" or n.startswith("model."))
        with open(os.path.join(out, sys.argv[-1] + ".json"), "w") as f:
            json.dump(names, f)

atexit.register(_dump)
"""


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

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("git", "-c", "user.email=t@sluice.invalid", "-c", "user.name=t", *args, check=check)

    def trace_imports(self, out: Path) -> None:
        """Record, per stage, the modules of model/ its process imports (in `out/<stage>.json`)."""
        tracer = out / "tracer"
        tracer.mkdir(parents=True, exist_ok=True)
        (tracer / "sitecustomize.py").write_text(IMPORT_TRACER)
        self.env["PYTHONPATH"] = f"{tracer}{os.pathsep}{self.env['PYTHONPATH']}"
        self.env["SLUICE_IMPORT_TRACE"] = str(out)

    def traced(self, out: Path) -> dict[str, list[str]]:
        return {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}


def make_scratch(root: Path) -> ScratchRepo:
    """The repository's training files in a new git repo at `root` (DVC initialised, one commit)."""
    root.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", "contract.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "model", root / "model", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "data" / "source", root / "data" / "source")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        GX_ANALYTICS_ENABLED="false",
        SLUICE_CACHE=str(root.parent / "cache"),
        PYTHONPATH=str(REPO),
    )
    repo = ScratchRepo(root, env)
    repo.run("git", "init", "-q", "-b", "main")
    repo.dvc("init", "-q")
    repo.dvc("config", "core.analytics", "false")
    repo.dvc("config", "core.autostage", "true")
    repo.run("git", "add", "-A")
    repo.git("commit", "-qm", "scratch")
    return repo
