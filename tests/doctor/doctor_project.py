"""A real project to diagnose: the template's own files copied into a fresh Git repository whose `origin` is
named by the manifests' repository URL and answered by a bare repository on disk (git's `insteadOf`), so
`git ls-remote origin` runs for real without a network."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_URL = "https://github.com/sluice-ml/sluice.git"
COPIED = (
    "gitops",
    "policies",
    "pipelines/rendered",
    ".github/workflows",
    "docs",
    "README.md",
    "params.yaml",
    "contract.yaml",
)
CONVENTIONS = "pipelines/conventions.py"


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def init_repository(root: Path, url: str, bare: Path, branch: str = "main") -> None:
    """`root` becomes a repository with one commit on `branch`, pushed to `bare`, which `url` resolves to."""
    git(root, "init", "-q", "-b", branch)
    git(root, "config", "user.email", "dev@example.com")
    git(root, "config", "user.name", "dev")
    git(root, "config", "commit.gpgsign", "false")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    subprocess.run(["git", "init", "-q", "--bare", "-b", branch, str(bare)], check=True)
    git(root, "config", f"url.{bare}.insteadOf", url)
    git(root, "remote", "add", "origin", url)
    git(root, "push", "-q", "origin", branch)


def copy_project(dest: Path) -> Path:
    """The template's project files (manifests, policies, workflows, rendered pipelines, docs, params)."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in COPIED:
        src = REPO / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel)
        else:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / "pipelines").mkdir(exist_ok=True)
    shutil.copy2(REPO / CONVENTIONS, dest / CONVENTIONS)
    return dest


def project_repository(tmp: Path) -> Path:
    root = copy_project(tmp / "project")
    init_repository(root, TEMPLATE_URL, tmp / "origin.git")
    return root
