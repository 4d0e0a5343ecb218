"""SCM adapters: how a decision becomes a Git change. The engine sees only the `SCM` Protocol.

Every proposal lives on a branch `sluice/<env>/<kind>/<stamp>-<step>`, where kind is `auto` (merged as soon
as written: automatic steps and rollbacks) or `approval` (left for a human: `sluice rollout approve`, or a
merge on GitHub). Writes are optimistic: a proposal names the main commit its decision was based on, and is
refused if main has moved since (another reconciler acted first). Each proposal's message carries its action
and its base as trailers (rollout/evidence.py), so a proposal left behind by a crash is read back exactly.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

from deployment.kinds import FILES, KINDS

Kind = Literal["auto", "approval"]

# An environment names a directory, a branch prefix, a lock file, a Kubernetes label value and an Argo CD
# Application: a DNS label, nothing else. Git's own branch names are refused so that no environment can be
# taken for the branch every proposal is merged into.
ENV_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
RESERVED = frozenset({"main", "master", "head"})


class SCMError(RuntimeError):
    """A repository operation that failed; the message says which and why."""


class BadEnvironment(SCMError, ValueError):
    """An environment name that cannot be used in paths and refs."""


def check_env(name: str) -> str:
    """`name` if it is a valid environment name; BadEnvironment naming the value and the rule otherwise."""
    if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
        raise BadEnvironment(
            f"--env {name!r}: an environment name is a DNS label (lowercase letters, digits and '-', "
            "at most 63, starting and ending with a letter or digit)"
        )
    if name in RESERVED:
        raise BadEnvironment(f"--env {name!r}: reserved (a Git branch name); choose another environment name")
    return name


def manifest_path(env: str, kind: str = "SeldonDeployment") -> str:
    """Where an environment keeps its deployment manifest of `kind` (deployment.kinds: one file per kind)."""
    return f"gitops/environments/{check_env(env)}/{FILES[kind]}"


def manifest_paths(env: str) -> tuple[str, ...]:
    """Every path the environment's manifest may have: it holds exactly one of them (its kind is its target)."""
    return tuple(manifest_path(env, kind) for kind in KINDS)


def one_manifest(env: str, present: Collection[str], where: str) -> str:
    """The environment's manifest among the `present` paths; SCMError naming what is missing or doubled."""
    found = [p for p in manifest_paths(env) if p in present]
    if len(found) == 1:
        return found[0]
    if found:
        raise SCMError(f"{where}: both {' and '.join(found)}; an environment has one deployment manifest")
    raise SCMError(f"{where}: no {' or '.join(manifest_paths(env))} (run `sluice rollout init`)")


def policy_path(env: str) -> str:
    return f"policies/{check_env(env)}.yaml"


def proposal_paths(env: str) -> frozenset[str]:
    """Every file a proposal of `env` may change: exactly what the reconciler writes (the manifest; the
    rollout state and any quarantine record live in its annotations). A pull request touching anything else
    is not the reconciler's, whoever opened it."""
    return frozenset(manifest_paths(env))


def branch_prefix(env: str) -> str:
    return f"sluice/{check_env(env)}/"


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
    action: str | None = None  # what merging it does, from its Sluice-Action trailer (None: unknown)
    head: str = ""  # the commit its branch pointed at when listed: a merge takes this, never a later push


@dataclass(frozen=True)
class Outcome:
    proposal: Proposal
    merged: bool
    revision: str | None = None  # main after the merge
    detail: str = ""


class SCM(Protocol):
    def read(self, env: str) -> Snapshot: ...

    def read_path(self, revision: str, path: str) -> str:
        """Any file of the repository at `revision` (e.g. the environment's policy)."""
        ...

    def pending(self, env: str) -> list[Proposal]:
        """The open proposals of `env` that this reconciler wrote (anything else is ignored)."""
        ...

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

    def sweep(self, env: str) -> list[str]:
        """Delete proposal branches a crash left without a proposal; the names of those deleted."""
        ...

    def commit_with_trailer(self, key: str, value: str) -> str | None:
        """The newest commit on main whose message carries the trailer `key: value`, or None when there is
        none or the host cannot search its history."""
        ...

    def lock(self, env: str) -> AbstractContextManager[None]:
        """Exclusive right to act on `env` (raises Conflict when another reconciler holds it)."""
        ...
