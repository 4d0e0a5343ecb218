"""The demo's playground is a clone of the commit the user has checked out, whatever branch that is."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from demo.scratch import ScratchError, make_scratch


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "dev@example.com")
    git(root, "config", "user.name", "dev")
    (root / "README.md").write_text("one\n")
    (root / ".dvc").mkdir()  # a DVC project already, as this repository is: no `dvc init` commit on top
    (root / ".dvc" / "config").write_text("")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "one")
    git(root, "checkout", "-q", "-b", "feature")
    (root / "README.md").write_text("feature\n")
    git(root, "commit", "-qam", "feature")
    git(root, "checkout", "-q", "main")
    (root / "README.md").write_text("two\n")
    git(root, "commit", "-qam", "two: main moves on")
    return root


@pytest.mark.parametrize("checked_out", ["feature", "detached", "main"])
def test_the_playground_s_main_is_the_checked_out_commit(
    source: Path, tmp_path: Path, checked_out: str
) -> None:
    if checked_out == "detached":
        git(source, "checkout", "-q", "--detach", "main~1")
    else:
        git(source, "checkout", "-q", checked_out)
    head = git(source, "rev-parse", "HEAD")
    scratch = make_scratch(source, tmp_path / "work")
    assert scratch.head() == head
    assert git(scratch.remote, "rev-parse", "main") == head  # what the demo's promotions branch from
    assert git(source, "rev-parse", "HEAD") == head  # the user's checkout is untouched


def test_a_folder_that_is_not_a_checkout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ScratchError, match="not a git checkout"):
        make_scratch(tmp_path, tmp_path / "work")
