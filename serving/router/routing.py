"""The routing decision, pure: which predictor answers a request, whether it is mirrored, where a retry goes.

Weights are laid out as consecutive ranges over [0, 100) in manifest order. A request without a key draws a
uniform point; a request with a sticky key hashes it to a fixed point, so the same user lands on the same
predictor for as long as the weights leave that point inside its range (moving 90/10 to 50/50 moves only the
users in [50, 90)). The point is a hash of the key alone, so every router replica pins a user the same way.
A predictor that is not alive is skipped: its share goes to the others.

Which requests are pinned by a key is the rollout's choice (`sticky_header`): an A/B test splits users, so
its arms are pinned by the header its policy names; a canary, shadow or blue/green stage weighs requests, so
its realised split follows the stage weight within the sampling error of the request count, whoever sends
them. A manifest that no rollout drives pins by the default key header.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from deployment import wire
from deployment.names import ANNOTATION

SCALE = 100.0
# Strategies whose stages weigh requests, not users (rollout/policy.py names them).
REQUEST_WEIGHTED = frozenset({"canary", "shadow", "bluegreen"})
ACTIVE = frozenset({"progressing", "paused", "frozen"})
HEADER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


class UnknownPredictor(LookupError):
    """An override header or a feedback names a predictor that is not in the routing table."""


class ShadowRefused(ValueError):
    """An override names the shadow: its answers are dropped, so nobody may ask for one."""


@dataclass(frozen=True)
class Target:
    """One predictor as routing sees it."""

    name: str
    traffic: int
    shadow: bool = False


@lru_cache(maxsize=65536)
def key_point(key: str) -> float:
    """A stable point in [0, 100) for a sticky key (the same on every router replica and every run)."""
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    return h / 2**64 * SCALE


def sticky_header(annotations: Mapping[str, str]) -> str | None:
    """The request header that pins a user to a predictor, from the manifest's rollout annotation.

    An A/B rollout pins by its policy's `sticky_key` (default `x-sluice-user`); a rollout in progress whose
    stages weigh requests pins nobody (None); a manifest no rollout drives pins by the default header. An
    annotation that cannot be read, or a key that is not a header name, falls back to the default.
    """
    raw = annotations.get(ANNOTATION)
    if not raw:
        return wire.STICKY_HEADER
    try:
        state = json.loads(raw)
    except ValueError:
        return wire.STICKY_HEADER
    if not isinstance(state, dict):
        return wire.STICKY_HEADER
    strategy, status = state.get("strategy"), state.get("status", "progressing")
    if strategy == "ab":
        key = state.get("sticky_key")
        if isinstance(key, str) and HEADER_NAME.match(key.lower()):
            return key.lower()
        return wire.STICKY_HEADER
    if strategy in REQUEST_WEIGHTED and status in ACTIVE:
        return None
    return wire.STICKY_HEADER


class RoutingTable:
    """An immutable routing table; the router swaps the whole table to change weights atomically."""

    def __init__(self, targets: Sequence[Target]):
        self.targets = tuple(targets)
        self.by_name = {t.name: t for t in self.targets}
        if len(self.by_name) != len(self.targets):
            raise ValueError("duplicate predictor names in the routing table")
        self.live = tuple(t for t in self.targets if not t.shadow)
        shadows = [t for t in self.targets if t.shadow]
        self.shadow: Target | None = shadows[0] if shadows else None
        # Istio (what Seldon drives) mirrors 100% when the shadow has no traffic, else `traffic` percent.
        self.mirror_percent = (self.shadow.traffic or 100) if self.shadow else 0
        ranges = []
        start = 0.0
        for t in self.live:
            ranges.append((start, start + t.traffic, t))
            start += t.traffic
        self._ranges = tuple(ranges)
        self._total = start

    def names(self) -> list[str]:
        return [t.name for t in self.targets]

    def resolve(self, value: str) -> str:
        """`NAME`, or a Seldon v2 style `:NAME:` -> a predictor name of this table (shadow included)."""
        value = value.strip()
        if value in self.by_name:
            return value
        for token in value.replace(",", ":").split(":"):
            token = token.strip()
            if token in self.by_name:
                return token
        shown = value if len(value) <= 80 else value[:80] + "..."
        raise UnknownPredictor(
            f"unknown predictor {shown!r} (this deployment has: {', '.join(t.name for t in self.live)})"
        )

    def resolve_live(self, value: str) -> str:
        """Like `resolve`, but a shadow is refused: an override may only name a predictor that answers."""
        name = self.resolve(value)
        if self.by_name[name].shadow:
            raise ShadowRefused(
                f"predictor {name!r} is the shadow: its answers are never served, so it cannot be asked for"
            )
        return name

    def pick(self, point: float, alive: Callable[[str], bool]) -> str | None:
        """The live predictor whose weight range holds `point` (in [0, 100)); dead ones are skipped.

        None when no non-shadow predictor is alive. With all weights 0 (a single predictor at 0, as the
        admission rules allow) the first alive predictor answers.
        """
        if self._total <= 0:
            return next((t.name for t in self.live if alive(t.name)), None)
        point = point * self._total / SCALE
        chosen = None
        for lo, hi, t in self._ranges:
            if lo <= point < hi:
                chosen = t
                break
        if chosen is None:  # point == total (float edge)
            chosen = next(t for _, hi, t in reversed(self._ranges) if hi > 0)
        if alive(chosen.name):
            return chosen.name
        # Spread the dead predictor's share over the others in proportion to their weights.
        others = [(t.traffic, t) for t in self.live if t is not chosen and alive(t.name) and t.traffic > 0]
        if others:
            total = sum(w for w, _ in others)
            lo_chosen = next(lo for lo, _, t in self._ranges if t is chosen)
            frac = (point - lo_chosen) / chosen.traffic if chosen.traffic else 0.0
            cut = frac * total
            acc = 0.0
            for w, t in others:
                acc += w
                if cut < acc:
                    return t.name
            return others[-1][1].name
        return self.fallback(chosen.name, alive)

    def fallback(self, failed: str, alive: Callable[[str], bool]) -> str | None:
        """Where a failed request is retried: another alive non-shadow predictor, the heaviest first."""
        candidates = sorted(
            (t for t in self.live if t.name != failed and alive(t.name)), key=lambda t: -t.traffic
        )
        return candidates[0].name if candidates else None

    def mirrors(self, draw: float) -> bool:
        """Whether a request with uniform `draw` in [0, 100) is mirrored to the shadow."""
        return self.shadow is not None and draw < self.mirror_percent
