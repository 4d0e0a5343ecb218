"""The manifest's history in Git: one point per commit on main's first-parent line that changed it.

Each point carries the weights the manifest held after the commit and what the commit was (its
`Sluice-Action` trailer, read from the merged branch's tip for a merge commit, or failing that its subject).
Commits are immutable, so a point once read is cached by its hash: a refresh reads `git log` and only the
commits it has not seen.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from rollout import evidence
from rollout.scm import SCMError, manifest_path
from rollout.state import RolloutState, StateError
from rollout.targets import TargetError

Kind = Literal["init", "start", "advance", "approve", "promote", "rollback", "abort", "hold", "change"]
MARKED: frozenset[str] = frozenset({"promote", "rollback", "abort"})
if TYPE_CHECKING:
    from rollout.scm.local import LocalGit

_ACTOR = re.compile(r"\b(?:aborted|approved) by [^\n]+")
_SHA = re.compile(r"^[0-9a-f]{7,64}$")


def is_sha(text: str) -> bool:
    return bool(_SHA.fullmatch(text))


@dataclass(frozen=True)
class Point:
    """One commit that changed the manifest: when, what, and the traffic it left."""

    sha: str
    at: float  # committer time, seconds since the epoch
    subject: str
    kind: Kind
    action: str | None  # the Sluice-Action trailer, when the commit (or its merged branch) carries one
    weights: dict[str, int] = field(default_factory=dict)  # live predictors' traffic
    shadows: dict[str, int] = field(default_factory=dict)  # shadow predictors' mirror percentage
    rollout_status: str | None = None
    stable: str | None = None  # the predictor serving users as the stable model after this commit
    note: str = ""  # e.g. "aborted by alice (sluice ui)", "approved by bob"


StateOf = Callable[[str], RolloutState]  # a traffic target's reading of a manifest


class History(Protocol):
    def points(self, env: str, limit: int) -> list[Point]:
        """The newest `limit` commits that changed the environment's manifest, oldest first."""
        ...


def classify(subject: str, message: str, action: str | None, first: bool) -> tuple[Kind, str]:
    """What a commit was, from its trailer, its subject and its body (the subject of a merge commit names the
    merged proposal's title)."""
    text = subject.lower()
    body = message.lower()
    found = _ACTOR.search(message)
    note = evidence.one_line(found[0]) if found else ""
    if action == "rollback" or "rollback" in text or ": abort" in text:
        return ("abort" if "aborted by" in body or ": abort" in text else "rollback"), note
    if action == "promote" or ": promote" in text:
        return "promote", note
    if ": start " in text:
        return "start", note
    if body.startswith("approved by") or "\napproved by" in body:
        return "approve", note
    if action == "advance" or ": advance" in text:
        return "advance", note
    if action is not None or any(w in text for w in (": freeze", ": pause", ": update", ": hold")):
        return "hold", note
    if first or "init" in text:
        return "init", note
    return "change", note


def _point(
    sha: str, at: float, subject: str, message: str, text: str | None, first: bool, state_of: StateOf
) -> Point:
    action = evidence.trailer(message, evidence.ACTION)
    kind, note = classify(subject, message, action, first)
    weights: dict[str, int] = {}
    shadows: dict[str, int] = {}
    status = stable = None
    if text is not None:
        try:
            state = state_of(text)
        except (TargetError, StateError):
            state = None
        if state is not None:
            live = [p for p in state.predictors if not p.shadow]
            for p in state.predictors:
                if p.shadow:
                    shadows[p.name] = p.traffic or 100
                else:
                    weights[p.name] = p.traffic if len(live) > 1 else 100
            status = state.rollout.status if state.rollout is not None else None
            try:
                stable = state.stable_name()
            except StateError:
                stable = None
    return Point(sha, at, subject, kind, action, weights, shadows, status, stable, note)


class LocalHistory:
    """History of a local repository (the SCM `LocalGit`): `git log --first-parent` on main, manifests and
    merged branches' messages read in one `git cat-file --batch` each."""

    def __init__(self, scm: LocalGit, state_of: StateOf):
        self.scm = scm
        self.state_of = state_of
        self._cache: dict[tuple[str, str], Point] = {}
        self._lock = threading.Lock()

    def points(self, env: str, limit: int) -> list[Point]:
        path = manifest_path(env)
        try:
            log = self.scm.git(
                "log",
                "--first-parent",
                f"-n{max(1, int(limit))}",
                "--format=%H%x1f%ct%x1f%P%x1f%s%x1e",
                f"refs/heads/{self.scm.main}",
                "--",
                path,
            )
        except SCMError:
            return []
        rows = []
        for entry in filter(None, (e.strip("\n") for e in log.split("\x1e"))):
            sha, ts, parents, subject = entry.split("\x1f", 3)
            rows.append((sha, float(ts), parents.split(), subject))
        rows.reverse()
        with self._lock:
            missing = [r for r in rows if (env, r[0]) not in self._cache]
            if missing:
                self._read(env, path, missing, first_sha=rows[0][0] if rows else "")
            return [self._cache[(env, r[0])] for r in rows if (env, r[0]) in self._cache]

    def _read(
        self, env: str, path: str, rows: list[tuple[str, float, list[str], str]], first_sha: str
    ) -> None:
        # Messages: each commit's own, and the merged branch's tip for a merge (where the trailers are).
        wanted: list[str] = []
        for sha, _, parents, _ in rows:
            wanted.append(sha)
            if len(parents) > 1:
                wanted.append(parents[1])
            wanted.append(f"{sha}:{path}")
        blobs = self._batch(wanted)
        for sha, at, parents, subject in rows:
            message = _message(blobs.get(sha, ""))
            if len(parents) > 1:
                message = _message(blobs.get(parents[1], "")) or message
            text = blobs.get(f"{sha}:{path}")
            first = sha == first_sha and len(parents) == 0
            self._cache[(env, sha)] = _point(sha, at, subject, message, text, first, self.state_of)

    def _batch(self, objects: list[str]) -> dict[str, str]:
        """The contents of several objects in one `git cat-file --batch` call (missing ones left out)."""
        if not objects:
            return {}
        out = self.scm.git("cat-file", "--batch", input="\n".join(objects) + "\n")
        found: dict[str, str] = {}
        pos = 0
        data = out.encode()
        for name in objects:
            end = data.index(b"\n", pos)
            header = data[pos:end].decode()
            pos = end + 1
            if header.endswith(" missing") or header.endswith(" ambiguous"):
                continue
            size = int(header.rsplit(" ", 1)[1])
            found[name] = data[pos : pos + size].decode(errors="replace")
            pos += size + 1
        return found

    def diff(self, env: str, sha: str) -> str:
        """`git show` of one commit, limited to the environment's manifest (the page a timeline point links to)."""
        if not is_sha(sha):
            raise ValueError(f"{sha!r} is not a commit hash (7 to 64 hex digits)")
        path = manifest_path(env)
        merged = self.scm.git("rev-list", "--parents", "-n", "1", sha, "--").split()
        first_parent = merged[1] if len(merged) > 1 else None
        header = self.scm.git("show", "-s", "--format=commit %H%nDate:   %cI%n%n%B", sha, "--")
        if first_parent is None:
            return header + "\n" + self.scm.git("show", "--format=", sha, "--", path)
        return header + "\n" + self.scm.git("diff", first_parent, sha, "--", path)


def _message(commit_object: str) -> str:
    """The message of a raw commit object (what follows the first blank line)."""
    _, sep, message = commit_object.partition("\n\n")
    return message if sep else ""


def promoted(points: list[Point], stable: str) -> Point | None:
    """The commit that made `stable` the stable model: the first of the latest unbroken run of commits after
    which it was the stable one (a promotion, or the first manifest when it has served since)."""
    found: Point | None = None
    for p in points:
        found = (found or p) if p.stable == stable else None
    return found
