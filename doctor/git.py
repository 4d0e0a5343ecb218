"""The Git side: the project is a repository, its `origin` is the repository the manifests name (Argo CD syncs
from it, the pipelines clone it), and the branch they track is the remote's default branch and exists there."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

from doctor.names import normalize_repository
from doctor.project import Project
from doctor.report import Finding, missing, ok, warn

AREA = "git"
TIMEOUT = 20.0


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(root), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={"GIT_TERMINAL_PROMPT": "0", "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(Path.home())},
        check=False,
    )


def tracked_branch(project: Project) -> tuple[str, str] | None:
    """The branch the Argo CD Applications follow (`spec.source.targetRevision`) and where that is said."""
    for doc in project.documents:
        if doc.kind == "Application":
            rev = ((doc.body.get("spec") or {}).get("source") or {}).get("targetRevision")
            if isinstance(rev, str) and rev and rev != "HEAD":
                return rev, doc.where("spec.source.targetRevision")
    return None


def check(project: Project, remote: str = "origin") -> Iterator[Finding]:
    root = project.root
    try:
        inside = _git(root, "rev-parse", "--is-inside-work-tree")
    except (OSError, subprocess.TimeoutExpired) as exc:
        yield missing(AREA, "repository", f"git cannot run: {exc}", "install git")
        return
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        yield missing(
            AREA,
            "repository",
            f"{root} is not a Git repository",
            "git init -b main && git add -A && git commit -m init",
        )
        return
    yield ok(AREA, "repository", f"{root} is a Git work tree")
    url = _git(root, "config", "--get", f"remote.{remote}.url").stdout.strip()
    expected_url = project.conventions.get("REPO_URL")
    if not url:
        fix = f"git remote add {remote} {expected_url}" if expected_url else f"git remote add {remote} <url>"
        yield missing(AREA, f"remote {remote}", f"no remote named {remote!r}", fix)
        return
    if isinstance(expected_url, str) and normalize_repository(url) != normalize_repository(expected_url):
        yield missing(
            AREA,
            f"remote {remote}",
            f"{remote} is {url}, but the manifests and pipelines name {expected_url}",
            f"git remote set-url {remote} {expected_url} (or regenerate with the right git host/owner/repo)",
            "pipelines/conventions.py: REPO_URL",
        )
    else:
        yield ok(AREA, f"remote {remote}", url)
    try:
        head = _git(root, "ls-remote", "--symref", remote, "HEAD")
    except subprocess.TimeoutExpired:
        yield missing(
            AREA,
            "remote reachable",
            f"{url} did not answer in {TIMEOUT:.0f} s",
            "check the network and credentials",
        )
        return
    if head.returncode != 0:
        reason = (head.stderr.strip().splitlines() or ["no answer"])[-1]
        yield missing(
            AREA,
            "remote reachable",
            f"git ls-remote {remote}: {reason}",
            f"create the repository and push: git push -u {remote} HEAD",
        )
        return
    default = ""
    for line in head.stdout.splitlines():
        if line.startswith("ref: ") and line.endswith("\tHEAD"):
            default = line[len("ref: ") :].split("\t")[0].removeprefix("refs/heads/")
    tracked = tracked_branch(project)
    if tracked is None:
        if default:
            yield ok(AREA, "default branch", default)
        return
    branch, where = tracked
    if not default:
        yield warn(
            AREA,
            "default branch",
            f"{remote} has no default branch yet (empty repository?)",
            f"git push -u {remote} {branch}",
            where,
        )
    elif default != branch:
        yield missing(
            AREA,
            "default branch",
            f"the Argo CD Applications follow {branch!r} but {remote}'s default branch is {default!r}",
            f"make {branch!r} the default branch on the Git host, or set targetRevision to {default!r}",
            where,
        )
    else:
        yield ok(AREA, "default branch", f"{default} (the branch Argo CD follows)", where)
    exists = _git(root, "ls-remote", "--heads", remote, branch)
    if exists.returncode == 0 and not exists.stdout.strip():
        yield missing(
            AREA,
            f"branch {branch}",
            f"{remote} has no branch {branch!r}",
            f"git push {remote} HEAD:{branch}",
            where,
        )
