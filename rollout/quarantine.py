"""Quarantine: a model the gates rolled back is recorded in Git, and is not started again unless forced.

The record lives in the environment's manifest itself, as the annotation `sluice.dev/quarantine` (a JSON
list, newest last), so it is written in the very commit that rolls the model back: no second file to keep in
step, nothing Argo CD or `sluice up` would try to apply. Only rollbacks decided on evidence quarantine a model
(a gate whose interval lies beyond its limit, an A/B test or a bandit that found the stable model better); a
rollback because data never came, a human abort or an A/B test with no winner does not. The rollback commit
carries the trailer `Sluice-Quarantine: <digest>`, which is how `sluice rollout start` finds it to name it.
Remove an entry from the annotation (a normal reviewed change) to lift a quarantine, or pass `--force`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from rollout.state import iso, parse_iso

ANNOTATION = "sluice.dev/quarantine"
LIMIT = 100  # entries kept (oldest dropped): an annotation must stay small


class QuarantineError(ValueError):
    """A quarantine annotation that cannot be read; the message says what is wrong with it."""


class Annotated(Protocol):
    def annotation(self, text: str, key: str) -> str | None: ...

    def annotate(self, text: str, key: str, value: str) -> str: ...


@dataclass(frozen=True)
class Entry:
    digest: str  # the bundle digest, "sha256:..." ("" when the manifest did not name it)
    predictor: str  # m-<12 hex digits of the digest>
    reason: str
    at: float  # when the rollback was decided
    strategy: str
    after: str = ""  # the main commit the rollback was written on top of

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["at"] = iso(self.at)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Entry:
        if not isinstance(d, dict):
            raise QuarantineError(f"{ANNOTATION}: each entry is an object, got {d!r}")
        try:
            return cls(
                digest=str(d.get("digest", "")),
                predictor=str(d["predictor"]),
                reason=str(d.get("reason", "")),
                at=parse_iso(str(d["at"])),
                strategy=str(d.get("strategy", "")),
                after=str(d.get("after", "")),
            )
        except (KeyError, ValueError, TypeError) as e:
            raise QuarantineError(f"{ANNOTATION}: cannot read entry {d!r} ({e})") from e

    def matches(self, digest: str, predictor: str) -> bool:
        return (bool(self.digest) and self.digest == digest) or self.predictor == predictor


def entries(target: Annotated, text: str) -> list[Entry]:
    raw = target.annotation(text, ANNOTATION)
    if not raw:
        return []
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise QuarantineError(f"metadata.annotations.{ANNOTATION}: not JSON ({e})") from e
    if not isinstance(data, list):
        raise QuarantineError(
            f"metadata.annotations.{ANNOTATION}: expected a JSON list, got {type(data).__name__}"
        )
    return [Entry.from_dict(d) for d in data]


def record(target: Annotated, text: str, entry: Entry) -> str:
    """The manifest with `entry` added to its quarantine (replacing an older entry for the same model)."""
    try:
        kept = [e for e in entries(target, text) if not e.matches(entry.digest, entry.predictor)]
    except QuarantineError:
        kept = []  # an unreadable record must not block a rollback: it is rewritten whole
    kept = [*kept, entry][-LIMIT:]
    value = json.dumps([e.to_dict() for e in kept], separators=(", ", ": "))
    return target.annotate(text, ANNOTATION, value)


def find(target: Annotated, text: str, digest: str, predictor: str) -> Entry | None:
    return next((e for e in reversed(entries(target, text)) if e.matches(digest, predictor)), None)


def refusal(entry: Entry, env: str, commit: str | None) -> str:
    where = (
        f"rollback commit {commit}"
        if commit
        else (
            f"rolled back in the commit after {entry.after[:12]}"
            if entry.after
            else "rollback commit unknown"
        )
    )
    return (
        f"{env}: {entry.predictor} ({entry.digest or 'digest unknown'}) is quarantined: the {entry.strategy} "
        f"rollout of it was rolled back at {iso(entry.at)} ({where}): {entry.reason}. "
        f"Start it anyway with --force, or remove it from metadata.annotations.{ANNOTATION} in a reviewed change."
    )
