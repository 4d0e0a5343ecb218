"""SCM adapters: how a decision becomes a Git change. The engine sees only the `SCM` Protocol.

Every proposal lives on a branch `sluice/<env>/<kind>/<stamp>-<step>`, where kind is `auto` (merged as soon
as written: automatic steps and rollbacks) or `approval` (left for a human: `sluice rollout approve`, or a
merge on GitHub). Writes are optimistic: a proposal names the main commit its decision was based on, and is
refused if main has moved since (another reconciler acted first).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

Kind = Literal["auto", "approval"]


def manifest_path(env: str) -> str:
    return f"gitops/environments/{env}/seldondeployment.yaml"


def branch_prefix(env: str) -> str:
    return f"sluice/{env}/"


class SCMError(RuntimeError):
    """A repository operation that failed; the message says which and why."""


class Conflict(SCMError):
    """Main moved since the decision was made, or another reconciler holds the environment."""


@dataclass(frozen=True)
class Snapshot:
    env: str
    text: str
    revision: str  # the main commit this text was read at


@dataclass(frozen=True)
class Proposal:
    env: str
    name: str  # branch name (local) or "#<number>" (GitHub)
    branch: str
    kind: Kind
    title: str
    base: str  # the main commit the proposal was based on
    url: str = ""


@dataclass(frozen=True)
class Outcome:
    proposal: Proposal
    merged: bool
    revision: str | None = None  # main after the merge
    detail: str = ""


class SCM(Protocol):
    def read(self, env: str) -> Snapshot: ...

    def pending(self, env: str) -> list[Proposal]: ...

    def read_proposal(self, proposal: Proposal) -> str: ...

    def propose(
        self, env: str, text: str, title: str, body: str, base: str, kind: Kind, merge: bool
    ) -> Outcome:
        """Write `text` on a new branch based on `base` (which must still be main's head); merge it now if
        asked."""
        ...

    def update_proposal(self, proposal: Proposal, text: str, message: str) -> Proposal: ...

    def merge(self, proposal: Proposal) -> Outcome: ...

    def discard(self, proposal: Proposal, reason: str) -> None: ...

    def lock(self, env: str) -> AbstractContextManager[None]:
        """Exclusive right to act on `env` (raises Conflict when another reconciler holds it)."""
        ...
