"""Rollout state as it lives in Git: the predictors' weights, and one annotation on the SeldonDeployment.

The annotation `sluice.dev/rollout` holds JSON: strategy, candidate and stable predictor names, the stage
index, when the stage was entered, a status and a message. The engine keeps nothing else anywhere.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from deployment.names import ANNOTATION as ANNOTATION  # the key is the contract's; the JSON in it is ours

Status = Literal["progressing", "paused", "frozen", "promoted", "rolled-back"]
ACTIVE: frozenset[str] = frozenset({"progressing", "paused", "frozen"})
STATUSES: tuple[str, ...] = ("progressing", "paused", "frozen", "promoted", "rolled-back")


class StateError(ValueError):
    """An annotation or manifest the engine cannot read as rollout state."""


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class Rollout:
    """What the annotation says about the rollout in progress (or the last one)."""

    strategy: str
    candidate: str
    stable: str
    stage: int
    entered_at: float
    status: Status = "progressing"
    message: str = ""
    started_at: float | None = None
    sticky_key: str | None = None  # A/B: the request header that pins a user to one arm (for the gateway)
    approval: bool = False  # written by a step that waits for a human: its clock starts once it is merged
    weight: int | None = None  # bandit: the candidate's current share of traffic, as last written

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def to_json(self) -> str:
        d: dict[str, Any] = asdict(self)
        d["entered_at"] = iso(self.entered_at)
        d["started_at"] = iso(self.started_at) if self.started_at is not None else None
        if self.sticky_key is None:
            del d["sticky_key"]
        if not self.approval:
            del d["approval"]
        if self.weight is None:
            del d["weight"]
        return json.dumps(d, sort_keys=False, separators=(", ", ": "))

    @classmethod
    def from_json(cls, text: str) -> Rollout:
        try:
            d = json.loads(text)
            if d.get("status", "progressing") not in STATUSES:
                raise ValueError(f"status {d.get('status')!r} is not one of {', '.join(STATUSES)}")
            return cls(
                strategy=str(d["strategy"]),
                candidate=str(d["candidate"]),
                stable=str(d["stable"]),
                stage=int(d["stage"]),
                entered_at=parse_iso(d["entered_at"]),
                status=d.get("status", "progressing"),
                message=str(d.get("message", "")),
                started_at=parse_iso(d["started_at"]) if d.get("started_at") else None,
                sticky_key=d.get("sticky_key"),
                approval=bool(d.get("approval", False)),
                weight=_weight(d.get("weight")),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise StateError(f"annotation {ANNOTATION}: cannot read {text!r} ({e})") from e

    def evolve(self, **changes: Any) -> Rollout:
        return replace(self, **changes)


def _weight(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise ValueError(f"weight {value!r} is not an integer from 0 to 100")
    return value


@dataclass(frozen=True)
class PredictorState:
    name: str
    traffic: int
    shadow: bool = False
    model_uri: str | None = None
    model_digest: str | None = None


@dataclass(frozen=True)
class Slot:
    """One predictor in a desired traffic layout."""

    name: str
    traffic: int
    shadow: bool = False


Layout = tuple[Slot, ...]


@dataclass(frozen=True)
class RolloutState:
    """A SeldonDeployment seen by the engine: its name, predictors (in manifest order) and the annotation."""

    deployment: str
    predictors: tuple[PredictorState, ...]
    rollout: Rollout | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    namespace: str | None = None  # metadata.namespace: what separates this environment's metrics

    def predictor(self, name: str) -> PredictorState | None:
        return next((p for p in self.predictors if p.name == name), None)

    @property
    def layout(self) -> Layout:
        return tuple(Slot(p.name, p.traffic, p.shadow) for p in self.predictors)

    def weights(self) -> dict[str, int]:
        return {p.name: p.traffic for p in self.predictors}

    def stable_name(self) -> str:
        """The predictor serving users when no rollout is active: the lone live predictor."""
        if self.rollout is not None and self.rollout.active:
            return self.rollout.stable
        live = [p for p in self.predictors if not p.shadow]
        if len(live) == 1:
            return live[0].name
        full = [p for p in live if p.traffic == 100]
        if len(full) == 1:
            return full[0].name
        raise StateError(
            f"{self.deployment}: no single stable predictor (weights {self.weights()}) and no rollout annotation"
        )
