"""The board: what the page shows for every environment, kept current, and the two actions a person may take.

Three loops per environment, each off the event loop in a worker thread: Git is polled (one cheap look at
main and the proposal branches; a full read only when they moved), the gates are evaluated the way the
reconciler's next tick would (`preview`: observe the metrics, decide, write nothing) once per policy interval
while a rollout progresses, and the live figures are read every few seconds. Each change is rendered once and
pushed to every subscriber (the page's server-sent events). Nothing here outlives the process: Git and the
metric providers are the state.

Approve and abort call the very functions `sluice rollout approve` and `sluice rollout abort` call, with the
acting identity (the one the presented token belongs to) written in the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dashboard.drift import DriftReading, DriftSource
from dashboard.figures import FIGURES, FigureSource
from dashboard.figures import Reading as FigureReading
from dashboard.history import History
from dashboard.views import (
    ActionResult,
    BoardView,
    EnvironmentView,
    Evaluation,
    FiguresView,
    FigureView,
    QuarantineView,
    Reading,
    TimelineView,
    drift_view,
    environment_view,
    role,
    timeline_view,
)
from rollout.evidence import one_line
from rollout.policy import MonitoringSpec, PolicyError
from rollout.reconciler import Environment, abort, approve, preview
from rollout.scm import Conflict, SCMError
from rollout.state import StateError
from rollout.targets import TargetError

log = logging.getLogger(__name__)

Part = Literal["state", "timeline", "figures"]
PARTS: tuple[Part, ...] = ("state", "timeline", "figures")
Lookup = Callable[[str | None, str | None, str], str | None]  # (model_uri, digest, model name) -> version


@dataclass
class Source:
    """One environment's adapters, as the reconciler has them, plus what only the dashboard reads."""

    name: str
    environment: Environment
    history: History | None = None
    figures: FigureSource | None = None
    drift: DriftSource | None = None  # model monitoring's figures
    link: str = "/commits/{env}/{sha}"  # a timeline point's link: the diff page, or a forge's commit page
    registry: Lookup | None = None
    fingerprint: Callable[[], str] | None = None  # a cheap look telling whether Git moved; None: a full read


# tokens -----------------------------------------------------------------------------------------------------------
class TokenError(ValueError):
    """A token file that cannot be used; the message names the file and the line."""


_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]{24,512}$")


class Tokens:
    """Who may act: identities, each with a secret bearer token (stored here only as SHA-256 digests)."""

    def __init__(self, pairs: list[tuple[str, str]]):
        self._by_digest = {hashlib.sha256(token.encode()).digest(): who for who, token in pairs}

    @classmethod
    def load(cls, path: Path) -> Tokens:
        """`identity token` per line (the token is the last word; # starts a comment)."""
        try:
            text = path.read_text()
        except OSError as e:
            raise TokenError(f"{path}: cannot be read ({e.strerror})") from e
        pairs: list[tuple[str, str]] = []
        seen: set[str] = set()
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            who, _, token = line.rpartition(" ")
            who = one_line(who)
            where = f"{path}:{number}"
            if not who:
                raise TokenError(f"{where}: expected `identity token`, found one word")
            if len(who) > 100:
                raise TokenError(f"{where}: the identity is longer than 100 characters")
            if not _TOKEN.fullmatch(token):
                raise TokenError(
                    f"{where}: the token of {who!r} must be 24 to 512 characters of A-Z a-z 0-9 . _ ~ + / = - "
                    "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
                )
            if token in seen:
                raise TokenError(f"{where}: the token of {who!r} is also another identity's")
            seen.add(token)
            pairs.append((who, token))
        if not pairs:
            raise TokenError(f"{path}: no `identity token` line")
        return cls(pairs)

    def identify(self, presented: str) -> str | None:
        """The identity a presented token belongs to, or None. Constant time in the token's contents."""
        digest = hashlib.sha256(presented.encode(errors="replace")).digest()
        found = None
        for known, who in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                found = who
        return found


# reading ---------------------------------------------------------------------------------------------------------
def quarantine_of(environment: Environment, text: str) -> tuple[list[QuarantineView], str | None]:
    """The digests the manifest records as quarantined (rolled back on evidence), and a problem if unreadable."""
    try:
        from rollout import quarantine  # type: ignore[attr-defined,unused-ignore]
    except ImportError:  # an engine without a quarantine records none
        return [], None
    try:
        found = quarantine.entries(environment.target, text)
    except ValueError as e:
        return [], str(e)
    return [
        QuarantineView(digest=e.digest, predictor=e.predictor, reason=e.reason, at=e.at, strategy=e.strategy)
        for e in reversed(found)
    ], None


def read(source: Source, order: int, history_limit: int, now: float) -> Reading:
    """Everything the page shows about one environment from Git (blocking: run it in a worker thread)."""
    env = source.environment
    reading = Reading(env=source.name, order=order, read_at=now, link=source.link)
    problems: list[str] = []
    try:
        snap = env.scm.read(source.name)
    except SCMError as e:
        reading.problem = str(e)
        return reading
    reading.revision, reading.text = snap.revision, snap.text
    try:
        reading.state = env.target.state(snap.text)
    except (TargetError, StateError) as e:
        problems.append(f"the manifest cannot be read: {e}")
    try:
        reading.policy = env.policy_at(snap.revision)
    except PolicyError as e:
        problems.append(str(e))
    try:
        reading.pending = env.scm.pending(source.name)
    except SCMError as e:
        problems.append(f"proposals cannot be listed: {e}")
    reading.quarantine, problem = quarantine_of(env, snap.text)
    if problem:
        problems.append(problem)
    if source.history is not None:
        reading.points = source.history.points(source.name, history_limit)
    if source.registry is not None and reading.state is not None:
        try:
            stable = reading.state.predictor(reading.state.stable_name())
        except StateError:
            stable = None
        if stable is not None:
            reading.mlflow_version = source.registry(
                stable.model_uri, stable.model_digest, reading.state.deployment
            )
    reading.problem = "; ".join(problems) or None
    return reading


def _progressing(reading: Reading | None) -> bool:
    if reading is None or reading.state is None or reading.policy is None:
        return False
    r = reading.state.rollout
    return r is not None and r.status == "progressing"


# the board -------------------------------------------------------------------------------------------------------
class Subscriber:
    """One page's stream: which parts changed since it last sent them (the latest rendering wins)."""

    def __init__(self) -> None:
        self.dirty: dict[str, None] = {}
        self.wake = asyncio.Event()

    def mark(self, event: str) -> None:
        self.dirty[event] = None
        self.wake.set()

    async def changes(self, timeout: float) -> list[str]:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout)
        self.wake.clear()
        events, self.dirty = list(self.dirty), {}
        return events


@dataclass
class _Env:
    source: Source
    order: int
    reading: Reading | None = None
    evaluation: Evaluation | None = None
    figures: FigureReading | None = None
    drift: DriftReading | None = None
    fingerprint: str | None = None
    moved: asyncio.Event = field(default_factory=asyncio.Event)  # Git moved: evaluate again now
    poke: asyncio.Event = field(default_factory=asyncio.Event)  # read Git now (after an action)


class Board:
    def __init__(
        self,
        sources: list[Source],
        tokens: Tokens | None = None,
        poll: float = 0.5,
        figures_every: float = 2.0,
        drift_every: float = 10.0,
        history_limit: int = 60,
        max_subscribers: int = 64,
        lock_wait: float = 5.0,
        clock: Callable[[], float] = time.time,
    ):
        if not sources:
            raise ValueError("the board needs at least one environment")
        self.envs = {s.name: _Env(s, i) for i, s in enumerate(sources)}
        self.tokens = tokens
        self.poll = poll
        self.figures_every = figures_every
        self.drift_every = drift_every
        self.history_limit = history_limit
        self.max_subscribers = max_subscribers
        self.lock_wait = lock_wait
        self.clock = clock
        self.subscribers: set[Subscriber] = set()
        self.fragments: dict[str, str] = {}
        self.renderer: Callable[[Board, str, Part], str] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._read_lock = threading.Lock()
        # Actions run on threads of their own: a poll that is slow (a preview, a figure query against a Prometheus
        # that does not answer) fills asyncio's default pool, and an abort must never queue behind it.
        self._actions = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sluice-ui-action")

    @property
    def actions_enabled(self) -> bool:
        return self.tokens is not None

    def names(self) -> list[str]:
        return list(self.envs)

    # views -----------------------------------------------------------------------------------------------------
    def environment(self, name: str) -> EnvironmentView:
        e = self.envs[name]
        reading = e.reading or Reading(env=name, order=e.order, read_at=self.clock(), problem="not read yet")
        view = environment_view(reading, e.evaluation, self.actions_enabled, self.clock())
        view.drift = drift_view(e.drift, self.drift_threshold(name), reading.state)
        return view

    def drift_threshold(self, name: str) -> float | None:
        """What a feature's drift score is judged against: the option given to `sluice ui`, else the policy the
        environment's state was read under (what `sluice monitor` alerts and `sluice loop` retrains on);
        None when monitoring is not configured."""
        e = self.envs[name]
        source = e.source.drift
        if source is None:
            return None
        if source.threshold is not None:
            return source.threshold
        policy = e.reading.policy if e.reading is not None else None
        return (policy.monitoring if policy is not None else MonitoringSpec()).drift_threshold

    def board(self) -> BoardView:
        return BoardView(generated_at=self.clock(), environments=[self.environment(n) for n in self.envs])

    def timeline(self, name: str) -> TimelineView:
        e = self.envs[name]
        points = e.reading.points if e.reading is not None else []
        return timeline_view(name, points, e.source.link)

    def figures(self, name: str) -> FiguresView:
        e = self.envs[name]
        f = e.figures
        source = e.source.figures
        window = getattr(source, "window", 0.0)
        if f is None:
            problem = "metrics are not configured (--metrics-url or --prometheus)" if source is None else None
            return FiguresView(env=name, window=window, problem=problem)
        state = e.reading.state if e.reading is not None else None
        shadows = {p.name for p in state.predictors if p.shadow} if state is not None else set()
        figures = [
            FigureView(
                predictor=p,
                role=role(state, p) if state is not None else "other",
                shadow=p in shadows,
                **{k: getattr(fig, k) for k in FIGURES},
            )
            for p, fig in f.predictors.items()
        ]
        history = {
            p: {k: [(t, getattr(fig, k)) for t, fig in points] for k in FIGURES}
            for p, points in f.history.items()
        }
        return FiguresView(
            env=name,
            at=f.at,
            window=f.window,
            source=f.source,
            problem=f.problem,
            predictors=figures,
            history=history,
        )

    # refresh loops ---------------------------------------------------------------------------------------------
    async def start(self) -> None:
        for name in self.envs:
            await self.refresh(name)
        loop = asyncio.get_running_loop()
        for name, e in self.envs.items():
            self._tasks.append(loop.create_task(self._watch(name), name=f"watch-{name}"))
            if e.source.environment.metrics is not None:
                self._tasks.append(loop.create_task(self._evaluate(name), name=f"evaluate-{name}"))
            if e.source.figures is not None:
                self._tasks.append(loop.create_task(self._figures(name), name=f"figures-{name}"))
            if e.source.drift is not None:
                self._tasks.append(loop.create_task(self._drift(name), name=f"drift-{name}"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        self._actions.shutdown(wait=False, cancel_futures=True)

    async def refresh(self, name: str) -> None:
        """Read `name` from Git now and push what changed."""
        e = self.envs[name]
        reading = await asyncio.to_thread(self._read, e)
        before = e.reading
        e.reading = reading
        if before is None or before.revision != reading.revision:
            e.moved.set()
        self.publish(name, "state")
        if before is None or [p.sha for p in before.points] != [p.sha for p in reading.points]:
            self.publish(name, "timeline")

    def _read(self, e: _Env) -> Reading:
        with self._read_lock:  # one reader of Git at a time: a poll never races an action's re-read
            return read(e.source, e.order, self.history_limit, self.clock())

    def _fingerprint(self, e: _Env) -> str | None:
        look = e.source.fingerprint
        return look() if look is not None else None

    async def _watch(self, name: str) -> None:
        e = self.envs[name]
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(e.poke.wait(), self.poll)
            poked = e.poke.is_set()
            e.poke.clear()
            try:
                fingerprint = await asyncio.to_thread(self._fingerprint, e)
                if poked or fingerprint is None or fingerprint != e.fingerprint:
                    await self.refresh(name)
                    e.fingerprint = fingerprint
            except Exception as exc:  # a failing read is shown, and retried at the next poll
                log.warning("reading %s failed: %s", name, exc)

    async def _evaluate(self, name: str) -> None:
        e = self.envs[name]
        while True:
            e.moved.clear()
            reading = e.reading
            wait = 5.0
            if _progressing(reading):
                assert reading is not None and reading.policy is not None
                wait = max(1.0, reading.policy.interval)
                try:
                    result = await asyncio.to_thread(preview, e.source.environment)
                except Exception as exc:  # shown as no evaluation; tried again next interval
                    log.warning("evaluating %s failed: %s", name, exc)
                else:
                    e.evaluation = Evaluation(result.revision, self.clock(), result)
                    self.publish(name, "state")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(e.moved.wait(), wait)

    async def _figures(self, name: str) -> None:
        e = self.envs[name]
        source = e.source.figures
        assert source is not None
        while True:
            state = e.reading.state if e.reading is not None else None
            if state is not None:
                names = [p.name for p in state.predictors]
                try:
                    e.figures = await asyncio.to_thread(source.read, state.deployment, state.namespace, names)
                except Exception as exc:
                    log.warning("figures of %s failed: %s", name, exc)
                else:
                    self.publish(name, "figures")
            await asyncio.sleep(self.figures_every)

    async def _drift(self, name: str) -> None:
        e = self.envs[name]
        source = e.source.drift
        assert source is not None
        while True:
            state = e.reading.state if e.reading is not None else None
            if state is not None:
                try:
                    reading = await asyncio.to_thread(source.read, state.deployment, state.namespace)
                except Exception as exc:
                    log.warning("drift of %s failed: %s", name, exc)
                else:
                    before, e.drift = e.drift, reading
                    if before is None or (before.predictors, before.problem, before.computed_at) != (
                        reading.predictors,
                        reading.problem,
                        reading.computed_at,
                    ):
                        self.publish(name, "state")
            await asyncio.sleep(self.drift_every)

    # fan-out ---------------------------------------------------------------------------------------------------
    @staticmethod
    def event(name: str, part: Part) -> str:
        return f"{part}-{name}"

    def publish(self, name: str, part: Part) -> None:
        event = self.event(name, part)
        if self.renderer is not None:
            self.fragments[event] = self.renderer(self, name, part)
        for s in self.subscribers:
            s.mark(event)

    def subscribe(self) -> Subscriber | None:
        """A new stream, or None when `max_subscribers` are already open."""
        if len(self.subscribers) >= self.max_subscribers:
            return None
        s = Subscriber()
        self.subscribers.add(s)
        return s

    def unsubscribe(self, s: Subscriber) -> None:
        self.subscribers.discard(s)

    # actions ---------------------------------------------------------------------------------------------------
    def identify(self, token: str) -> str | None:
        return self.tokens.identify(token) if self.tokens is not None else None

    async def act(self, name: str, action: Literal["approve", "abort"], identity: str) -> ActionResult:
        """Approve or abort through Git, exactly as the CLI does, as `identity`. Raises what the CLI reports."""
        e = self.envs[name]
        who = f"{one_line(identity)} via sluice ui"
        fn: Any = approve if action == "approve" else abort
        deadline = time.monotonic() + self.lock_wait
        while True:
            try:
                result = await asyncio.get_running_loop().run_in_executor(
                    self._actions, fn, e.source.environment, who
                )
                break
            except Conflict:  # the reconciler holds the environment for a moment: wait for it, briefly
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.2)
        e.poke.set()
        outcome = result.outcome
        return ActionResult(
            env=name,
            action=result.decision.action.value,
            reason=result.decision.reason,
            by=who,
            commit=outcome.revision if outcome is not None else None,
            detail=outcome.detail if outcome is not None else "",
        )
