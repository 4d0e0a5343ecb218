"""The demo's playground: a scratch clone of this repository with a bare local remote.

The demo never rewrites the user's working tree: it clones the committed state into `reports/demo/repo`
(origin = `reports/demo/remote.git`), so promotion steps appear there as branches and merges exactly as they
would as pull requests, and `git log` in that folder shows every traffic change afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


class ScratchError(RuntimeError):
    """The scratch repository could not be made (not a git checkout, git missing, a command failed)."""


@dataclass
class Scratch:
    root: Path  # the working clone
    remote: Path  # its bare origin
    env: dict[str, str]

    def run(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            args, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise ScratchError(
                f"`{' '.join(args)}` exited {proc.returncode} in {self.root}:\n{proc.stdout}{proc.stderr}"
            )
        return proc

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("git", *args, check=check)

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-m", "dvc", *args, check=check)

    def sluice(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-m", "sluice", *args, check=check)

    def head(self) -> str:
        return self.git("rev-parse", "HEAD").stdout.strip()


def demo_env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        GX_ANALYTICS_ENABLED="false",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
        SLUICE_CACHE=str(cache),
        GIT_AUTHOR_NAME=env.get("GIT_AUTHOR_NAME", "Sluice demo"),
        GIT_AUTHOR_EMAIL=env.get("GIT_AUTHOR_EMAIL", "demo@sluice.invalid"),
        GIT_COMMITTER_NAME=env.get("GIT_COMMITTER_NAME", "Sluice demo"),
        GIT_COMMITTER_EMAIL=env.get("GIT_COMMITTER_EMAIL", "demo@sluice.invalid"),
    )
    return env


def make_scratch(source: Path, workdir: Path) -> Scratch:
    """Clone `source`'s committed HEAD into `workdir/repo` with a bare origin at `workdir/remote.git`."""
    source = source.resolve()
    if not (source / ".git").exists():
        raise ScratchError(
            f"{source}: not a git checkout (the demo clones the committed state of the repository)"
        )
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    remote, root = workdir / "remote.git", workdir / "repo"
    env = demo_env(workdir / "cache")
    for args in (
        ["git", "clone", "-q", "--bare", "--no-local", str(source), str(remote)],
        ["git", "clone", "-q", str(remote), str(root)],
    ):
        proc = subprocess.run(args, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ScratchError(f"`{' '.join(args)}` failed: {proc.stderr.strip()}")
    scratch = Scratch(root, remote, env)
    scratch.git("checkout", "-q", "-B", "main")
    # The checked-out commit becomes the playground's main even when the source's own main is elsewhere (a
    # feature branch, a detached HEAD): the bare remote is the demo's, nothing else reads it.
    scratch.git("push", "-q", "--force", "-u", "origin", "main")
    if not (root / ".dvc").exists():
        scratch.dvc("init", "-q")
        scratch.git("commit", "-qm", "dvc init")
    scratch.dvc("config", "--local", "core.analytics", "false", check=False)
    return scratch
