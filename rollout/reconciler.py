"""The reconciler's shell: one `tick(env)` reads Git, observes metrics, decides, and carries the decision out.

```
tick(env):
  manifest = scm.read(env)                      # gitops/environments/<env>/seldondeployment.yaml on main
  policy   = policy of env at that commit       # policies/<env>.yaml, read from Git on every tick
  state    = target.state(manifest)             # predictors, weights, rollout annotation
  obs      = metrics.observe(state, window)     # no lock held: observing takes a window
  with the environment's lock:
    main still as read?                         # else decide again next tick
    decision = decide(state, policy, obs, now)  # pure (decision.py)
    plan = settle(pending, decision)            # pure (proposals.py): merge, discard, wait or write
    carry out the plan through the SCM
  the registry's champion follows the stable predictor named in Git
```
It keeps nothing between ticks: every rule lives in the pure core, every effect behind an adapter (SCM,
traffic target, metric provider, registry). Also here: `start`, `approve`, `abort` (the ways a human moves a
rollout) and `preview` (what a tick would decide now, writing nothing: `sluice rollout status`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from rollout import evidence, quarantine
from rollout.decision import Action, Decision, counted_seconds, decide
from rollout.decision import abort as abort_decision
from rollout.gates import custom_queries
from rollout.guardrails import check_manifest
from rollout.metrics import MetricProvider, MetricsError
from rollout.observations import Observations
from rollout.policy import Policy, PolicyError
from rollout.proposals import RolloutError, approved, opening, repaired, settle, trailers
from rollout.scm import SCM, Kind, Outcome, Proposal, Snapshot
from rollout.state import RolloutState
from rollout.targets import TrafficTarget

__all__ = [
    "Environment",
    "PolicySource",
    "RolloutError",
    "TickResult",
    "abort",
    "approve",
    "observe",
    "preview",
    "start",
    "tick",
]

log = logging.getLogger(__name__)

# Keeps the model registry in step with Git: given the state on main, make the registry's `champion` alias
# name its stable model. Returns a note when it changed something or failed (retried on the next tick).
ChampionSync = Callable[[RolloutState], str | None]


class PolicySource(Protocol):
    def load(self, env: str, scm: SCM, revision: str) -> Policy:
        """The policy of `env` as of the main commit `revision` (PolicyError when it is invalid)."""
        ...


@dataclass
class Environment:
    """Everything one environment's reconciler needs: adapters, where its policy comes from, a clock."""

    name: str
    scm: SCM
    target: TrafficTarget
    policy: Policy | None = None  # a fixed policy; else `policies` is read on every tick
    metrics: MetricProvider | None = None
    clock: Callable[[], float] = time.time
    champion: ChampionSync | None = None
    policies: PolicySource | None = None
    last_policy: Policy | None = field(default=None, repr=False)  # the last valid one read (a cache)

    def policy_at(self, revision: str, notes: list[str] | None = None) -> Policy:
        """The policy to act on at `revision`. A policy merged broken is reported and the last valid one is
        used meanwhile (a rollout in progress keeps its gates); with none valid yet, PolicyError."""
        if self.policies is None:
            if self.policy is None:
                raise PolicyError(f"{self.name}: no policy and no policy source configured")
            return self.policy
        try:
            policy = self.policies.load(self.name, self.scm, revision)
        except PolicyError as e:
            if self.last_policy is None:
                raise
            if notes is not None:
                notes.append(f"{e}; acting on the last valid policy until it is fixed")
            return self.last_policy
        self.last_policy = policy
        return policy


@dataclass(frozen=True)
class TickResult:
    env: str
    decision: Decision
    outcome: Outcome | None = None
    revision: str = ""  # main when the tick read it
    state: RolloutState | None = None
    pending: tuple[Proposal, ...] = ()
    observe_seconds: float = 0.0
    decide_seconds: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)
    policy: Policy | None = None
    decided_at: float = 0.0  # wall-clock time of the decision

    @property
    def wrote(self) -> bool:
        return self.outcome is not None


def observe(env: Environment, state: RolloutState, policy: Policy, now: float) -> Observations:
    r = state.rollout
    if r is None or r.status != "progressing" or env.metrics is None:
        return Observations(window=0.0, source="none")
    # Gates, A/B tests and bandits judge every observation since the stage (or the test) began.
    since = counted_seconds(policy, r, now)
    if since is None:  # warming up: nothing is judged yet
        return Observations(window=policy.window, stage={}, source="warm-up")
    custom = custom_queries(policy.gates)
    return env.metrics.observe(
        state.deployment, [r.stable, r.candidate], policy.window, custom, since, namespace=state.namespace
    )


def _observe(env: Environment, state: RolloutState, policy: Policy, notes: list[str]) -> Observations:
    try:
        return observe(env, state, policy, env.clock())
    except MetricsError as e:
        # An unreachable metric source is no data: each gate's no-data rule applies (never a promotion).
        notes.append(f"metrics unavailable, treated as no data: {e}")
        return Observations(window=policy.window, source=f"unavailable: {e}")


def _write(
    env: Environment,
    base_text: str,
    base: str,
    decision: Decision,
    title: str | None = None,
    carried: tuple[str, Sequence[tuple[str, str]]] | None = None,
) -> Outcome:
    text = env.target.apply(base_text, decision.layout, decision.rollout)
    if decision.quarantine is not None:  # recorded in the rollback's own commit
        text = quarantine.record(env.target, text, replace(decision.quarantine, after=base))
    violations = check_manifest(text)
    if violations:
        raise RolloutError(
            "refusing to write a manifest that breaks the guardrails: "
            + "; ".join(str(v) for v in violations)
        )
    kind: Kind = "approval" if decision.action == Action.AWAIT_APPROVAL else "auto"
    report, extra = (
        (decision.report(), []) if carried is None else (decision.report() + "\n\n" + carried[0], carried[1])
    )
    body = evidence.with_trailers(report, [*trailers(decision, base), *extra])
    return env.scm.propose(
        env.name, text, title or decision.summary(env.name), body, base, kind, decision.merge_now
    )


def _follow_champion(env: Environment, state: RolloutState | None, notes: list[str]) -> None:
    if env.champion is None or state is None:
        return
    note = env.champion(state)
    if note:
        notes.append(note)


def _after(env: Environment, outcome: Outcome | None, state: RolloutState) -> RolloutState:
    """The state on main after a tick: re-read only when the tick merged something."""
    if outcome is None or not outcome.merged:
        return state
    return env.target.state(env.scm.read(env.name).text)


@dataclass(frozen=True)
class _Look:
    """What a tick sees before it decides: main, the policy there, the state, and the observations."""

    snap: Snapshot
    policy: Policy
    state: RolloutState
    obs: Observations
    observed: float  # seconds spent observing
    notes: list[str]


def _look(env: Environment) -> _Look:
    notes: list[str] = []
    snap = env.scm.read(env.name)
    policy = env.policy_at(snap.revision, notes)
    state = env.target.state(snap.text)
    t0 = time.perf_counter()
    obs = _observe(env, state, policy, notes)
    return _Look(snap, policy, state, obs, time.perf_counter() - t0, notes)


def tick(env: Environment) -> TickResult:
    """One reconcile step of `env`. Safe to run at any moment, from several processes."""
    seen = _look(env)  # before the lock: observing takes a window, and `sluice rollout abort` must not wait
    notes, state = seen.notes, seen.state
    with env.scm.lock(env.name):
        # After a window, look again; with nothing observed the snapshot is fresh (a write based on it that
        # another reconciler overtook is refused by the SCM's compare-and-swap anyway).
        current = env.scm.read(env.name) if seen.obs.source != "none" else seen.snap
        if current.revision != seen.snap.revision and (
            current.text != seen.snap.text or env.policy_at(current.revision) != seen.policy
        ):
            moved = Decision(
                Action.HOLD,
                f"{env.name} changed on main while metrics were observed "
                f"({seen.snap.revision[:12]} -> {current.revision[:12]}); deciding again on the next tick",
            )
            return TickResult(
                env.name,
                moved,
                revision=current.revision,
                state=env.target.state(current.text),
                observe_seconds=seen.observed,
                notes=tuple(notes),
                policy=seen.policy,
                decided_at=time.time(),
            )
        pending = env.scm.pending(env.name)
        t1 = time.perf_counter()
        decision = decide(state, seen.policy, seen.obs, env.clock())
        plan = settle(env.name, state, pending, current.revision, decision)
        decided, decided_at = time.perf_counter() - t1, time.time()
        for p, why in plan.discard:
            env.scm.discard(p, why)
            notes.append(f"discarded {p.name}: {why}")
        reported, outcome = plan.decision, None
        if plan.merge is not None:
            attempt = env.scm.merge(plan.merge)  # a crash left it unmerged: finish what was decided
            if attempt.merged:
                outcome = attempt
                notes.append(f"repaired: merged {plan.merge.name}, left unmerged by an earlier run")
            else:
                reported = repaired(plan.merge, merged=False)
                notes.append(f"{plan.merge.name} still cannot be merged: {attempt.detail}")
        elif plan.write:
            outcome = _write(env, current.text, current.revision, plan.decision)
        notes += [f"deleted {b}: a branch a crash left without a proposal" for b in env.scm.sweep(env.name)]
    _follow_champion(env, _after(env, outcome, state), notes)
    shown = plan.waiting or ((plan.merge,) if plan.merge is not None else ())
    return TickResult(
        env.name,
        reported,
        outcome,
        current.revision,
        state,
        pending=shown,
        observe_seconds=seen.observed,
        decide_seconds=decided,
        notes=tuple(notes),
        policy=seen.policy,
        decided_at=decided_at,
    )


def preview(env: Environment) -> TickResult:
    """What a tick would decide now, writing nothing and taking no lock (`sluice rollout status`)."""
    seen = _look(env)
    t0 = time.perf_counter()
    decision = decide(seen.state, seen.policy, seen.obs, env.clock())
    return TickResult(
        env.name,
        decision,
        None,
        seen.snap.revision,
        seen.state,
        pending=tuple(env.scm.pending(env.name)),
        observe_seconds=seen.observed,
        decide_seconds=time.perf_counter() - t0,
        notes=tuple(seen.notes),
        policy=seen.policy,
        decided_at=time.time(),
    )


def start(
    env: Environment,
    candidate_uri: str,
    model_uri: str,
    digest: str,
    strategy: str | None = None,
    force: bool = False,
    carried: tuple[str, Sequence[tuple[str, str]]] | None = None,
) -> TickResult:
    """Add the candidate predictor `m-<short digest>` and open the first step of the rollout.

    A model the gates rolled back before is quarantined: refused unless `force`. `carried`: evidence from
    elsewhere (an earlier environment's promotion) for the proposal's body, and trailers that name it."""
    with env.scm.lock(env.name):
        snap: Snapshot = env.scm.read(env.name)
        policy = env.policy_at(snap.revision)
        policy = policy.with_strategy(strategy) if strategy else policy
        state = env.target.state(snap.text)
        first = opening(env.name, state, policy, digest, candidate_uri, env.clock())
        if not force:
            _refuse_quarantined(env, snap.text, digest, first.decision)
        for p in env.scm.pending(env.name):
            env.scm.discard(p, "a new rollout starts")
        text = snap.text
        if (
            first.reset is not None
        ):  # e.g. blue kept from an older rollout: start from the stable predictor alone
            text = env.target.apply(text, first.reset, None)
        assert first.decision.rollout is not None
        text = env.target.add_candidate(text, first.decision.rollout.candidate, model_uri, digest)
        outcome = _write(env, text, snap.revision, first.decision, title=first.title, carried=carried)
        return TickResult(env.name, first.decision, outcome, snap.revision, state, policy=policy)


def _refuse_quarantined(env: Environment, text: str, digest: str, first: Decision) -> None:
    assert first.rollout is not None
    try:
        refused = quarantine.find(env.target, text, digest, first.rollout.candidate)
    except quarantine.QuarantineError as e:
        raise RolloutError(f"{env.name}: {e}; fix the record, or start with --force") from e
    if refused is not None:
        raise RolloutError(
            quarantine.refusal(
                refused,
                env.name,
                env.scm.commit_with_trailer(evidence.QUARANTINE, refused.digest or refused.predictor),
            )
        )


def approve(env: Environment, who: str = "sluice rollout approve") -> TickResult:
    """Merge the step waiting for a human; its stage's bake time starts now."""
    notes: list[str] = []
    with env.scm.lock(env.name):
        snap = env.scm.read(env.name)
        approvals = [p for p in env.scm.pending(env.name) if p.kind == "approval"]
        if not approvals:
            raise RolloutError(f"{env.name}: nothing is waiting for approval")
        p = approvals[-1]
        decision = approved(p)
        text = env.scm.read_proposal(p)
        state = env.target.state(text)
        if state.rollout is not None:
            stamped = env.target.apply(
                text, None, state.rollout.evolve(entered_at=env.clock(), approval=False)
            )
            message = evidence.with_trailers(
                f"approved by {evidence.one_line(who)}",
                [(evidence.ACTION, decision.action.value), (evidence.BASE, p.base)],
            )
            p = env.scm.update_proposal(p, stamped, message)
        outcome = env.scm.merge(p)
    _follow_champion(env, _after(env, outcome, state), notes)
    return TickResult(env.name, decision, outcome, snap.revision, state, notes=tuple(notes))


def abort(env: Environment, who: str = "sluice rollout abort") -> TickResult:
    """Roll back now: the stable predictor to 100 %, the candidate removed, pending steps discarded."""
    with env.scm.lock(env.name):
        snap = env.scm.read(env.name)
        state = env.target.state(snap.text)
        decision = abort_decision(state, env.clock(), who)
        if decision.action != Action.ROLLBACK:
            raise RolloutError(f"{env.name}: no rollout in progress")
        for p in env.scm.pending(env.name):
            env.scm.discard(p, "aborted")
        outcome = _write(env, snap.text, snap.revision, decision)
        return TickResult(env.name, decision, outcome, snap.revision, state)
