"""The local SCM: a real git repository, a branch per promotion step, merged into main when the policy allows.

It writes with git plumbing (hash-object, a private index, commit-tree, update-ref), so it never touches the
checked-out branch's files while building a proposal, and moves main with a compare-and-swap
(`update-ref main NEW OLD`): if main moved since the decision, the merge is refused. If main is checked out
and its copy of the manifest is unmodified, that file is refreshed after the merge so `git status` stays
clean; it is replaced whole (a temporary file renamed over it), never rewritten in place, because
`sluice up` polls it and must never read half a manifest. A lock file in .git keeps two reconcilers from
acting on one environment at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from deployment.kinds import kind_of
from rollout import evidence
from rollout.scm import (
    Conflict,
    Kind,
    Outcome,
    Proposal,
    SCMError,
    Snapshot,
    branch_prefix,
    manifest_path,
    manifest_paths,
    one_manifest,
)

_IDENTITY = {
    "GIT_AUTHOR_NAME": "sluice",
    "GIT_AUTHOR_EMAIL": "sluice@localhost",
    "GIT_COMMITTER_NAME": "sluice",
    "GIT_COMMITTER_EMAIL": "sluice@localhost",
}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "step"


class LocalGit:
    def __init__(self, repo: str | Path = ".", main: str = "main"):
        self.repo = Path(repo).resolve()
        self.main = main
        if not (self.repo / ".git").exists():
            raise SCMError(f"{self.repo}: not a git repository (the GitOps repo; see --repo)")

    # plumbing --------------------------------------------------------------------------------------
    def git(self, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> str:
        full_env = {**os.environ, **(env or {})}
        if not self._has_identity():
            full_env = {**_IDENTITY, **full_env}
        proc = subprocess.run(
            ["git", *args],
            cwd=self.repo,
            input=input,
            capture_output=True,
            text=True,
            env=full_env,
            check=False,
        )
        if proc.returncode != 0:
            raise SCMError(
                f"git {' '.join(args)} in {self.repo}: {proc.stderr.strip() or proc.stdout.strip()}"
            )
        return proc.stdout

    _identity: bool | None = None

    def _has_identity(self) -> bool:
        if self._identity is None:
            proc = subprocess.run(
                ["git", "config", "user.email"], cwd=self.repo, capture_output=True, text=True, check=False
            )
            self._identity = proc.returncode == 0 and bool(proc.stdout.strip())
        return self._identity

    def rev(self, ref: str) -> str:
        return self.git("rev-parse", "--verify", f"{ref}^{{commit}}").strip()

    def show(self, revision: str, path: str) -> str:
        return self.git("show", f"{revision}:{path}")

    def manifest(self, env: str, revision: str) -> str:
        """The path of the environment's deployment manifest at `revision` (whichever kind it holds)."""
        present = self.git("ls-tree", "--name-only", revision, "--", *manifest_paths(env)).split()
        return one_manifest(env, present, f"{self.repo} at {revision[:12]}")

    # SCM protocol ----------------------------------------------------------------------------------
    def read(self, env: str) -> Snapshot:
        head = self.rev(f"refs/heads/{self.main}")
        return Snapshot(env, self.show(head, self.manifest(env, head)), head)

    def read_path(self, revision: str, path: str) -> str:
        try:
            return self.show(revision, path)
        except SCMError as e:
            raise SCMError(f"{self.repo}: no {path} at {revision[:12]}") from e

    def pending(self, env: str) -> list[Proposal]:
        out = self.git(
            "for-each-ref",
            "--sort=committerdate",
            "--format=%(refname:short) %(objectname)",
            f"refs/heads/{branch_prefix(env)}",
        )
        proposals = []
        for line in out.splitlines():
            branch, tip = line.split()
            kind: Kind = "approval" if branch.startswith(f"{branch_prefix(env)}approval/") else "auto"
            message = self.git("log", "-1", "--format=%B", tip)
            subject = message.split("\n", 1)[0].strip()
            # The decision's base, as the proposal recorded it; else the fork point from main.
            base = (
                evidence.trailer(message, evidence.BASE)
                or self.git("merge-base", tip, f"refs/heads/{self.main}").strip()
            )
            action = evidence.trailer(message, evidence.ACTION)
            proposals.append(Proposal(env, branch, branch, kind, subject, base, action=action, head=tip))
        return proposals

    def read_proposal(self, proposal: Proposal) -> str:
        ref = f"refs/heads/{proposal.branch}"
        return self.show(ref, self.manifest(proposal.env, ref))

    def _commit_file(
        self, parent: str, path: str, text: str, message: str, extra_parent: str | None = None
    ) -> str:
        blob = self.git("hash-object", "-w", "--stdin", input=text).strip()
        with tempfile.TemporaryDirectory() as tmp:
            idx = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self.git("read-tree", parent, env=idx)
            self.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=idx)
            tree = self.git("write-tree", env=idx).strip()
        parents = ["-p", parent] + (["-p", extra_parent] if extra_parent else [])
        return self.git("commit-tree", tree, *parents, "-F", "-", input=message).strip()

    def propose(
        self, env: str, text: str, title: str, body: str, base: str, kind: Kind, merge: bool
    ) -> Outcome:
        head = self.rev(f"refs/heads/{self.main}")
        if head != base:
            raise Conflict(
                f"{self.main} moved from {base[:12]} to {head[:12]} since the decision; not writing"
            )
        commit = self._commit_file(base, self.manifest(env, base), text, f"{title}\n\n{body}")
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{commit[:7]}"
        branch = f"{branch_prefix(env)}{kind}/{stamp}-{_slug(title.split(':', 1)[-1])}"
        self.git("update-ref", f"refs/heads/{branch}", commit, "")  # create only
        action = evidence.trailer(body, evidence.ACTION)
        proposal = Proposal(env, branch, branch, kind, title, base, action=action, head=commit)
        if not merge:
            return Outcome(proposal, merged=False, detail=f"waiting on branch {branch}")
        return self.merge(proposal)

    def write_initial(self, env: str, text: str, message: str, force: bool = False) -> str:
        """Commit an environment's first manifest straight to main (creating main in an empty repo). With
        `force`, it replaces the manifest there, of either kind (an environment changes its target so)."""
        kind = kind_of(text)
        if kind is None:
            raise SCMError(
                f"{env}: the initial manifest holds no deployment (SeldonDeployment or InferenceService)"
            )
        path = manifest_path(env, kind)
        try:
            head: str | None = self.rev(f"refs/heads/{self.main}")
        except SCMError:
            head = None
        others: list[str] = []
        if head is not None:
            present = self.git("ls-tree", "--name-only", head, "--", *manifest_paths(env)).split()
            if present and not force:
                raise SCMError(
                    f"{self.repo}: {present[0]} already exists on {self.main} (use --force to replace it)"
                )
            others = [p for p in present if p != path]
        blob = self.git("hash-object", "-w", "--stdin", input=text).strip()
        with tempfile.TemporaryDirectory() as tmp:
            idx = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            if head is not None:
                self.git("read-tree", head, env=idx)
            if others:
                self.git("update-index", "--force-remove", "--", *others, env=idx)
            self.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=idx)
            tree = self.git("write-tree", env=idx).strip()
        parents = ["-p", head] if head else []
        commit = self.git("commit-tree", tree, *parents, "-F", "-", input=message).strip()
        self.git("update-ref", f"refs/heads/{self.main}", commit, head or "")
        if head is None:
            file = self.repo / path
            if not file.exists():
                replace_file(file, text)
                self.git("update-index", "--add", "--", path)
        else:
            self._refresh_worktree(path, head, commit)
            for other in others:
                self._refresh_worktree(other, head, commit)
        return commit

    def update_proposal(self, proposal: Proposal, text: str, message: str) -> Proposal:
        tip = self.rev(f"refs/heads/{proposal.branch}")
        commit = self._commit_file(tip, self.manifest(proposal.env, tip), text, message)
        self.git("update-ref", f"refs/heads/{proposal.branch}", commit, tip)
        return replace(proposal, head=commit)

    def merge(self, proposal: Proposal) -> Outcome:
        tip = self.rev(f"refs/heads/{proposal.branch}")
        path = self.manifest(proposal.env, tip)
        if proposal.head and tip != proposal.head:
            raise Conflict(f"{proposal.branch} moved since it was read ({proposal.head[:12]} -> {tip[:12]})")
        head = self.rev(f"refs/heads/{self.main}")
        if head != proposal.base and self.git("rev-parse", f"{head}:{path}") != self.git(
            "rev-parse", f"{proposal.base}:{path}"
        ):
            raise Conflict(
                f"{path} changed on {self.main} since {proposal.branch} was proposed; discard it and decide again"
            )
        text = self.show(tip, path)
        title = self.git("log", "-1", "--format=%s", tip).strip()
        # The merge on main's first-parent line carries the proposal's trailers (its evidence) too.
        trailers = evidence.parse_trailers(self.git("log", "-1", "--format=%B", tip))
        message = evidence.with_trailers(f"Merge {proposal.branch}: {title}", trailers)
        merge = self._commit_file(head, path, text, message, extra_parent=tip)
        try:
            self.git("update-ref", f"refs/heads/{self.main}", merge, head)
        except SCMError as e:
            raise Conflict(f"{self.main} moved while merging {proposal.branch}: {e}") from e
        self.git("update-ref", "-d", f"refs/heads/{proposal.branch}", tip)
        self._refresh_worktree(path, head, merge)
        return Outcome(
            proposal, merged=True, revision=merge, detail=f"merged {proposal.branch} into {self.main}"
        )

    def discard(self, proposal: Proposal, reason: str) -> None:
        with contextlib.suppress(SCMError):  # already gone: another run discarded or merged it
            self.git("update-ref", "-d", f"refs/heads/{proposal.branch}")

    def sweep(self, env: str) -> list[str]:
        """Nothing to sweep: here a branch is the proposal itself (pending, repaired or discarded by a tick)."""
        return []

    def commit_with_trailer(self, key: str, value: str) -> str | None:
        """Main's own line first (the commits that landed there), then any commit merged into it."""
        if not re.fullmatch(r"[A-Za-z0-9:._-]+", value):
            return None
        pattern = f"^{re.escape(key)}: {re.escape(value)}$"
        for extra in (["--first-parent"], []):
            try:
                out = self.git(
                    "log", self.main, *extra, "-n", "1", "-E", f"--grep={pattern}", "--format=%H"
                ).strip()
            except SCMError:
                return None
            if out:
                return out
        return None

    def _refresh_worktree(self, path: str, old: str, new: str) -> None:
        """Keep a checked-out main in step with the moved ref, for the one file we changed, if untouched."""
        try:
            checked_out = self.git("symbolic-ref", "-q", "HEAD").strip()
        except SCMError:
            return
        if checked_out != f"refs/heads/{self.main}":
            return
        file = self.repo / path
        try:
            old_text: str | None = self.show(old, path)
        except SCMError:
            old_text = None
        if file.exists() and file.read_text() != old_text:
            return  # edited by hand in the working tree: leave it to the user
        try:
            new_text: str | None = self.show(new, path)
        except SCMError:
            new_text = None  # the commit removed it (an environment that changed its kind of manifest)
        if new_text is None:
            file.unlink(missing_ok=True)
            self.git("update-index", "--force-remove", "--", path)
            return
        replace_file(file, new_text)
        self.git("update-index", "--add", "--", path)  # the index entry follows HEAD for this path only

    # lock ------------------------------------------------------------------------------------------
    @contextmanager
    def lock(self, env: str) -> Iterator[None]:
        """One reconciler per environment: an flock on a file in .git, released by the kernel if we die."""
        path = Path(self.git("rev-parse", "--git-common-dir").strip())
        path = (path if path.is_absolute() else self.repo / path) / f"sluice-rollout-{env}.lock"
        fd = self._take(path)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # while still holding it: a waiter re-checks the inode it locked
            os.close(fd)

    def _take(self, path: Path) -> int:
        # A lock file's contents decide nothing (a file left by a killed run is free to take): the kernel's
        # flock does. Reading "pid time" from the file to judge staleness raced with a holder that had
        # created but not yet written it, and two reconcilers could both act.
        for _ in range(5):
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise Conflict(f"another reconciler is acting on this environment (lock {path})") from None
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # its previous holder unlinked it between our open and our flock: take the new file
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {time.time():.3f}\n".encode())
            return fd
        raise Conflict(f"could not take the lock {path}")


def replace_file(path: Path, text: str) -> None:
    """Write `path` whole: a temporary file in the same directory, flushed, then renamed over it. A reader
    polling the file (`sluice up`) sees the old manifest or the new one, never a truncated one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
