"""The reconciler: one `tick(env)` reads the manifest from Git, observes metrics, decides, and proposes.

```
tick(env):
  manifest = scm.read(env)                   # gitops/environments/<env>/seldondeployment.yaml on main
  state    = target.state(manifest)          # predictors, weights, rollout annotation
  obs      = metrics.observe(state, window)  # per-predictor counts, errors, latency, feedback
  decision = decide(state, policy, obs, now) # pure
  if decision changes something: scm.propose(target.apply(manifest, decision), decision.report())
```
It keeps nothing between ticks. A lock stops two reconcilers acting on one environment, and every write is
checked against the main commit it was decided on. A proposal left unmerged by a crash is merged by the
next tick if main has not moved (its decision was made on the current state), or discarded. Also here:
`start`, `approve`, `abort` and `init`, the other ways a human moves a rollout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from deployment.names import predictor_name
from rollout import quarantine
from rollout.decision import Action, Decision, counted_seconds, decide
from rollout.decision import abort as abort_decision
from rollout.gates import custom_queries
from rollout.guardrails import check_manifest
from rollout.metrics import MetricProvider, MetricsError
from rollout.observations import Observations
from rollout.policy import Policy
from rollout.scm import SCM, Kind, Outcome, Proposal
from rollout.state import Rollout, RolloutState
from rollout.strategies import steps
from rollout.targets import TrafficTarget

log = logging.getLogger(__name__)

PromoteHook = Callable[[RolloutState, str], str]


class RolloutError(RuntimeError):
    """Something a human must fix before the rollout can go on; the message says what."""


@dataclass
class Environment:
    """Everything one environment's reconciler needs: adapters, the policy, a clock."""

    name: str
    scm: SCM
    target: TrafficTarget
    policy: Policy
    metrics: MetricProvider | None = None
    clock: Callable[[], float] = time.time
    on_promote: PromoteHook | None = None  # e.g. move the MLflow champion alias


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
    return env.metrics.observe(state.deployment, [r.stable, r.candidate], policy.window, custom, since)


def _write(
    env: Environment, base_text: str, base: str, decision: Decision, title: str | None = None
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
    return env.scm.propose(
        env.name, text, title or decision.summary(env.name), decision.report(), base, kind, decision.merge_now
    )


def _promoted(env: Environment, state_text: str, notes: list[str]) -> None:
    if env.on_promote is None:
        return
    state = env.target.state(state_text)
    if state.rollout is None or state.rollout.status != "promoted":
        return
    try:
        notes.append(env.on_promote(state, state.rollout.candidate))
    except Exception as e:  # the registry is a mirror of Git: a failure there must not undo the promotion
        notes.append(f"promoted in Git, but the registry was not updated: {e}")


_ACTIONS = {
    "advance": Action.ADVANCE,
    "start": Action.ADVANCE,
    "promote": Action.PROMOTE,
    "rollback": Action.ROLLBACK,
    "reallocate": Action.REALLOCATE,
}


def _proposal_decision(p: Proposal, merged: bool) -> Decision:
    """What a pending proposal did, read back from its title `rollout(env): <action> ...`."""
    what = p.title.split(": ", 1)[-1].split(" ", 1)[0]
    if not merged:
        return Decision(Action.HOLD, f"{p.name} ({what}) is written but cannot be merged yet")
    return Decision(
        _ACTIONS.get(what, Action.HOLD), f"merged {p.name} ({p.title}), left unmerged by an earlier run"
    )


def tick(env: Environment) -> TickResult:
    """One reconcile step of `env`. Safe to run at any moment, from several processes."""
    with env.scm.lock(env.name):
        snap = env.scm.read(env.name)
        state = env.target.state(snap.text)
        pending = env.scm.pending(env.name)
        r = state.rollout
        notes: list[str] = []
        if r is None or not r.active:
            waiting = [p for p in pending if p.kind == "approval" and p.base == snap.revision]
            for p in pending:
                if p not in waiting:
                    env.scm.discard(p, "no rollout in progress")
                    notes.append(f"discarded stale proposal {p.name}")
            if waiting:  # a start that needs approval
                wait = Decision(
                    Action.AWAIT_APPROVAL,
                    f"waiting for approval of {waiting[-1].name} (`sluice rollout approve --env {env.name}`)",
                )
                return TickResult(
                    env.name, wait, None, snap.revision, state, tuple(waiting), notes=tuple(notes)
                )
            return TickResult(
                env.name,
                decide(state, env.policy, Observations(0.0), env.clock()),
                None,
                snap.revision,
                state,
                (),
                notes=tuple(notes),
            )

        now = env.clock()
        t0 = time.perf_counter()
        try:
            obs = observe(env, state, env.policy, now)
        except MetricsError as e:
            # An unreachable metric source is no data: each gate's no-data rule applies (never a promotion).
            obs = Observations(window=env.policy.window, source=f"unavailable: {e}")
            notes.append(f"metrics unavailable, treated as no data: {e}")
        t1 = time.perf_counter()
        now = env.clock()  # the observation window has passed
        decision = decide(state, env.policy, obs, now)
        t2 = time.perf_counter()
        timing = {"observe_seconds": t1 - t0, "decide_seconds": t2 - t1}

        safety = decision.action == Action.ROLLBACK or (
            decision.rollout is not None and decision.rollout.status in ("frozen", "paused")
        )
        if not safety and pending:
            approvals = [p for p in pending if p.kind == "approval"]
            for p in pending:
                if p.kind == "auto" and p.base == snap.revision and not approvals:
                    outcome = env.scm.merge(p)  # a crash left it unmerged: finish what was decided
                    if outcome.merged:
                        notes.append(f"repaired: merged {p.name}, left unmerged by an earlier run")
                        _promoted(env, env.scm.read(env.name).text, notes)
                    else:
                        notes.append(f"{p.name} still cannot be merged: {outcome.detail}")
                    return TickResult(
                        env.name,
                        _proposal_decision(p, outcome.merged),
                        outcome if outcome.merged else None,
                        snap.revision,
                        state,
                        tuple(pending),
                        notes=tuple(notes),
                        **timing,
                    )
                if p.kind == "auto":
                    env.scm.discard(p, "stale")
                    notes.append(f"discarded stale proposal {p.name}")
            if approvals:
                wait = Decision(
                    Action.AWAIT_APPROVAL,
                    f"waiting for approval of {approvals[-1].name} (`sluice rollout approve --env {env.name}`); "
                    f"meanwhile: {decision.reason}",
                    decision.gates,
                    step=decision.step,
                )
                return TickResult(
                    env.name, wait, None, snap.revision, state, tuple(approvals), notes=tuple(notes), **timing
                )
        if safety:
            for p in pending:
                env.scm.discard(p, decision.reason)
                notes.append(f"discarded {p.name}: {decision.action.value}")
        if not decision.writes:
            return TickResult(
                env.name, decision, None, snap.revision, state, (), notes=tuple(notes), **timing
            )
        outcome = _write(env, snap.text, snap.revision, decision)
        if outcome.merged and decision.action == Action.PROMOTE:
            _promoted(env, env.scm.read(env.name).text, notes)
        return TickResult(env.name, decision, outcome, snap.revision, state, (), notes=tuple(notes), **timing)


def start(
    env: Environment,
    candidate_uri: str,
    model_uri: str,
    digest: str,
    strategy: str | None = None,
    force: bool = False,
) -> TickResult:
    """Add the candidate predictor `m-<short digest>` and open the first step of the rollout.

    A model the gates rolled back before is quarantined: refused unless `force`."""
    policy = env.policy.with_strategy(strategy) if strategy else env.policy
    with env.scm.lock(env.name):
        snap = env.scm.read(env.name)
        state = env.target.state(snap.text)
        if state.rollout is not None and state.rollout.active:
            r = state.rollout
            raise RolloutError(
                f"{env.name}: a {r.strategy} rollout of {r.candidate} is {r.status}; "
                f"abort it first (`sluice rollout abort --env {env.name}`)"
            )
        stable = state.stable_name()
        name = predictor_name(digest)
        if name == stable:
            raise RolloutError(f"{env.name}: {name} is already the stable model")
        if not force:
            try:
                refused = quarantine.find(env.target, snap.text, digest, name)
            except quarantine.QuarantineError as e:
                raise RolloutError(f"{env.name}: {e}; fix the record, or start with --force") from e
            if refused is not None:
                commit = quarantine.rollback_commit(env.scm, refused)
                raise RolloutError(quarantine.refusal(refused, env.name, commit))
        for p in env.scm.pending(env.name):
            env.scm.discard(p, "a new rollout starts")
        leftovers = [p.name for p in state.predictors if p.name != stable]
        now = env.clock()
        base_text = snap.text
        if leftovers:  # e.g. blue kept from an older rollout: start from the stable predictor alone
            from rollout.state import Slot

            base_text = env.target.apply(base_text, (Slot(stable, 100),), None)
        text = env.target.add_candidate(base_text, name, model_uri, digest)
        first = steps(policy)[0]
        sticky = policy.ab.sticky_key if policy.strategy == "ab" else None
        rollout = Rollout(
            policy.strategy, name, stable, 0, now, "progressing", "", now, sticky, first.approval
        )
        action = Action.AWAIT_APPROVAL if first.approval else Action.ADVANCE
        decision = Decision(
            action,
            f"start {policy.strategy} of {name} ({candidate_uri}) against {stable}",
            layout=first.layout(stable, name),
            rollout=rollout,
            then=Action.ADVANCE if first.approval else None,
            step=first.name,
        )
        title = f"rollout({env.name}): start {policy.strategy} {name} [{first.name}]"
        outcome = _write(env, text, snap.revision, decision, title=title)
        return TickResult(env.name, decision, outcome, snap.revision, state)


def approve(env: Environment, who: str = "sluice rollout approve") -> TickResult:
    """Merge the step waiting for a human; its stage's bake time starts now."""
    with env.scm.lock(env.name):
        snap = env.scm.read(env.name)
        approvals = [p for p in env.scm.pending(env.name) if p.kind == "approval"]
        if not approvals:
            raise RolloutError(f"{env.name}: nothing is waiting for approval")
        p = approvals[-1]
        text = env.scm.read_proposal(p)
        state = env.target.state(text)
        if state.rollout is not None:
            stamped = env.target.apply(
                text, None, state.rollout.evolve(entered_at=env.clock(), approval=False)
            )
            env.scm.update_proposal(p, stamped, f"approved by {who}")
        outcome = env.scm.merge(p)
        notes: list[str] = []
        _promoted(env, env.scm.read(env.name).text, notes)
        decision = Decision(Action.PROMOTE if "promot" in p.title else Action.ADVANCE, f"approved {p.name}")
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


def registry_hook(root: str | Path = ".") -> PromoteHook:
    """On promotion, move the MLflow `champion` alias to the candidate's registered version, if it has one."""

    def hook(state: RolloutState, candidate: str) -> str:
        pred = state.predictor(candidate)
        if pred is None or not pred.model_uri:
            return "registry: the candidate has no model_uri"
        uri = pred.model_uri
        if not uri.startswith("models:/"):
            return f"registry: {uri} is not a registered model (models:/...), champion alias left alone"
        from model.registry import Registry

        reg = Registry(root)
        rest = uri.removeprefix("models:/")
        if "@" in rest:
            name, alias = rest.split("@", 1)
            ref = reg.alias(name, alias)
            if ref is None:
                return f"registry: {uri} no longer resolves"
            version = ref.version
        else:
            name, version = rest.split("/", 1)
        before = reg.promote(name, version)
        was = f" (was version {before.version})" if before else ""
        return f"registry: {name} version {version} is now champion{was}"

    return hook
