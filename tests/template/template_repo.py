"""Template repositories for the tests: this checkout's files (tracked and new, as `git ls-files` sees them)
committed into a fresh Git repository with release tags, as a user's `copier copy gh:...` would clone it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_FILES = ("copier.yml", "{{ _copier_conf.answers_file }}.jinja", "scripts/retarget.py")


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        [
            "git",
            "-C",
            str(root),
            "-c",
            "user.email=dev@example.com",
            "-c",
            "user.name=dev",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "tag.gpgsign=false",
            *args,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def checkout_files(only: tuple[str, ...] | None = None) -> list[str]:
    listed = (
        subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-z", "-c", "-o", "--exclude-standard"],
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    files = [f for f in listed if f and (REPO / f).is_file()]
    return [f for f in files if only is None or f in only or f.startswith(tuple(p + "/" for p in only))]


def release(root: Path, tag: str, change: Callable[[Path], None] | None = None) -> None:
    """Commit the tree (after `change`) as release `tag`."""
    if change is not None:
        change(root)
    git(root, "add", "-A")
    git(root, "commit", "-q", "--allow-empty", "-m", f"release {tag}")
    git(root, "tag", tag)


def template_repository(dest: Path, only: tuple[str, ...] | None = None) -> Path:
    """A Git repository holding this checkout's files (or `only` these paths), not yet committed."""
    dest.mkdir(parents=True)
    for rel in checkout_files(only):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    git(dest, "init", "-q", "-b", "main")
    return dest
