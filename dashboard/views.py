"""What the page shows, as data: the JSON API's response models (so the OpenAPI schema documents them), and
the pure functions that build them from what was read in Git, what the reconciler's rules decide now, and the
live figures. The HTML page renders these same objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from dashboard.drift import DriftReading
from dashboard.explain import explain, facts, outlook
from dashboard.history import Point, promoted
from rollout.decision import current_step
from rollout.policy import Policy
from rollout.scm import Proposal
from rollout.state import RolloutState

Role = Literal["stable", "candidate", "other"]


class PredictorView(BaseModel):
    name: str
    traffic: int = Field(
        description="Share of live traffic in percent (a shadow: share of requests mirrored)."
    )
    shadow: bool
    role: Role
    model_uri: str | None = None
    digest: str | None = None


class StableView(BaseModel):
    predictor: str
    digest: str | None = None
    model_uri: str | None = None
    mlflow_version: str | None = Field(None, description="The registered MLflow model version, when known.")
    promoted_at: float | None = Field(
        None, description="When the commit that made it stable landed (epoch s)."
    )
    promoted_commit: str | None = None
    promoted_subject: str | None = None
    promoted_link: str | None = Field(None, description="Where that commit's diff can be read.")


class QuarantineView(BaseModel):
    digest: str
    predictor: str
    reason: str
    at: float | None = None
    strategy: str = ""


class GateView(BaseModel):
    gate: str
    metric: str
    verdict: str = Field(description="pass, fail, hold, no-data-pass or skip.")
    compare: str = Field(
        description="absolute, difference (candidate - stable) or ratio (candidate / stable)."
    )
    n_candidate: float | None = None
    n_stable: float | None = None
    value: float | None = Field(None, description="The candidate's measured value.")
    baseline: float | None = Field(None, description="The stable model's measured value.")
    estimate: float | None = Field(None, description="The compared value's estimate.")
    low: float | None = None
    high: float | None = None
    limit: float | None = None
    threshold: str = ""
    margin: float | None = None
    confidence: float | None = None
    method: str = ""
    detail: str = ""
    explanation: str = Field(description="One sentence: what was measured, against what, and so what.")


class StageView(BaseModel):
    index: int
    name: str
    weight: int
    shadow: bool = False
    approval: bool = False
    state: Literal["done", "current", "next"]


class NextView(BaseModel):
    action: str
    summary: str
    at: float | None = Field(None, description="When it happens, if known (epoch s).")


class PendingView(BaseModel):
    name: str
    kind: str
    title: str
    action: str | None = None
    url: str = ""


class RolloutView(BaseModel):
    strategy: str
    candidate: str
    stable: str
    status: str
    message: str = ""
    stage: int
    stage_name: str | None = None
    stages: list[StageView] = Field(default_factory=list)
    entered_at: float
    started_at: float | None = None
    evaluated_at: float | None = Field(None, description="When the gates below were evaluated (epoch s).")
    decision: str | None = Field(None, description="What a tick would decide now (None: not evaluated).")
    reason: str | None = None
    gates: list[GateView] = Field(default_factory=list)
    next: NextView


class LastRolloutView(BaseModel):
    strategy: str
    candidate: str
    status: str
    message: str = ""
    at: float


class ActionsView(BaseModel):
    enabled: bool = Field(description="Whether approve and abort are configured (sluice ui --token-file).")
    approve: bool = Field(description="A step waits for approval.")
    abort: bool = Field(description="A rollout is in progress.")


class FeatureDriftView(BaseModel):
    feature: str
    score: float = Field(description="Population stability index of the live values against the reference.")
    over: bool = Field(description="Whether the score is over the alert threshold.")


class PredictorDriftView(BaseModel):
    predictor: str
    role: Role
    features: list[FeatureDriftView] = Field(default_factory=list, description="Highest score first.")
    drifted: int = Field(0, description="How many features are over the threshold.")
    prediction_drift: float | None = Field(None, description="The predictions' PSI against the target's.")
    prediction_over: bool = False
    accuracy: float | None = Field(None, description="Live accuracy on the labels joined in time.")
    error: float | None = Field(None, description="A regression's live mean absolute error.")


NOT_CONFIGURED = (
    "Model monitoring is not configured: pass --monitor-url (a `sluice monitor --watch --metrics-port` "
    "endpoint) or --prometheus."
)


class DriftView(BaseModel):
    configured: bool = False
    detail: str = NOT_CONFIGURED
    source: str = ""
    threshold: float | None = Field(None, description="The drift alert's threshold on a feature's PSI.")
    at: float | None = Field(None, description="When the figures were read (epoch s).")
    computed_at: float | None = Field(None, description="When the monitor computed them, if it says.")
    problem: str | None = Field(None, description="Why the figures could not be read, if they could not.")
    predictors: list[PredictorDriftView] = Field(default_factory=list)


class EnvironmentView(BaseModel):
    name: str
    order: int = Field(description="Position in the promotion order (0 first).")
    namespace: str | None = None
    deployment: str | None = None
    revision: str | None = Field(None, description="The main commit the manifest was read at.")
    read_at: float
    problem: str | None = Field(None, description="What could not be read, if anything.")
    predictors: list[PredictorView] = Field(default_factory=list)
    stable: StableView | None = None
    quarantine: list[QuarantineView] = Field(default_factory=list)
    rollout: RolloutView | None = None
    last_rollout: LastRolloutView | None = None
    pending: list[PendingView] = Field(default_factory=list)
    actions: ActionsView
    drift: DriftView = Field(default_factory=DriftView)


class PointView(BaseModel):
    commit: str
    at: float
    subject: str
    kind: str = Field(description="init, start, advance, approve, promote, rollback, abort, hold or change.")
    action: str | None = None
    weights: dict[str, int] = Field(default_factory=dict)
    shadows: dict[str, int] = Field(default_factory=dict)
    stable: str | None = None
    note: str = ""
    link: str = Field(description="Where the commit's diff can be read.")


class TimelineView(BaseModel):
    env: str
    points: list[PointView]
    predictors: list[str] = Field(description="Every predictor the points name, in order of appearance.")


class FigureView(BaseModel):
    predictor: str
    role: Role
    shadow: bool = False
    requests_per_second: float | None = None
    error_ratio: float | None = Field(None, description="Share of prediction requests answered with a 5xx.")
    p50: float | None = Field(None, description="Median latency in seconds.")
    p95: float | None = None
    p99: float | None = None
    feedback_per_second: float | None = None
    accuracy: float | None = Field(None, description="Mean reward of the feedback received (1 = right).")
    disagreement: float | None = Field(
        None, description="A shadow's share of answers unlike the live model's."
    )


class FiguresView(BaseModel):
    env: str
    at: float | None = None
    window: float = Field(description="Seconds each figure is computed over.")
    source: str = ""
    problem: str | None = None
    predictors: list[FigureView] = Field(default_factory=list)
    history: dict[str, dict[str, list[tuple[float, float | None]]]] = Field(
        default_factory=dict, description="predictor -> figure -> [(time, value)], oldest first."
    )


class BoardView(BaseModel):
    generated_at: float
    environments: list[EnvironmentView]


class ActionResult(BaseModel):
    env: str
    action: str = Field(description="What the action did: rollback, advance or promote.")
    reason: str
    by: str = Field(description="The acting identity, as written in the commit.")
    commit: str | None = Field(None, description="main after the action.")
    detail: str = ""


class Problem(BaseModel):
    detail: str


# builders ----------------------------------------------------------------------------------------------------
@dataclass
class Reading:
    """Everything read from Git for one environment at one main commit."""

    env: str
    order: int
    read_at: float
    revision: str | None = None
    text: str | None = None
    state: RolloutState | None = None
    policy: Policy | None = None
    problem: str | None = None
    pending: list[Proposal] = field(default_factory=list)
    quarantine: list[QuarantineView] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    mlflow_version: str | None = None
    link: str = "/commits/{env}/{sha}"  # where a commit's diff is read


@dataclass(frozen=True)
class Evaluation:
    """What a tick would decide now (the reconciler's `preview`), and when it was worked out."""

    revision: str
    at: float
    result: Any  # rollout.reconciler.TickResult


_MODEL_VERSION = re.compile(r"^models:/[^/@]+/(\d+)$")


def mlflow_version_of(uri: str | None) -> str | None:
    """The version a `models:/name/N` URI names; None for an alias or a bundle path (the registry says)."""
    m = _MODEL_VERSION.match(uri or "")
    return m[1] if m else None


def role(state: RolloutState, name: str) -> Role:
    r = state.rollout
    if r is not None and r.active:
        return "candidate" if name == r.candidate else "stable" if name == r.stable else "other"
    try:
        return "stable" if name == state.stable_name() else "other"
    except ValueError:
        return "other"


def environment_view(
    reading: Reading, evaluation: Evaluation | None, actions_enabled: bool, now: float
) -> EnvironmentView:
    view = EnvironmentView(
        name=reading.env,
        order=reading.order,
        revision=reading.revision,
        read_at=reading.read_at,
        problem=reading.problem,
        pending=[
            PendingView(name=p.name, kind=p.kind, title=p.title, action=p.action, url=p.url)
            for p in reading.pending
        ],
        quarantine=reading.quarantine,
        actions=ActionsView(enabled=actions_enabled, approve=False, abort=False),
    )
    state = reading.state
    if state is None:
        return view
    view.namespace = state.namespace
    view.deployment = state.deployment
    live = [p for p in state.predictors if not p.shadow]
    view.predictors = [
        PredictorView(
            name=p.name,
            traffic=p.traffic if p.shadow or len(live) > 1 else 100,
            shadow=p.shadow,
            role=role(state, p.name),
            model_uri=p.model_uri,
            digest=p.model_digest,
        )
        for p in state.predictors
    ]
    try:
        stable_name: str | None = state.stable_name()
    except ValueError:
        stable_name = None
    stable = state.predictor(stable_name) if stable_name else None
    if stable is not None:
        when = promoted(reading.points, stable.name)
        view.stable = StableView(
            predictor=stable.name,
            digest=stable.model_digest,
            model_uri=stable.model_uri,
            mlflow_version=mlflow_version_of(stable.model_uri) or reading.mlflow_version,
            promoted_at=when.at if when else None,
            promoted_commit=when.sha if when else None,
            promoted_subject=when.subject if when else None,
            promoted_link=reading.link.format(env=reading.env, sha=when.sha) if when else None,
        )
    r = state.rollout
    approvals = [p for p in reading.pending if p.kind == "approval"]
    view.actions.approve = actions_enabled and bool(approvals)
    view.actions.abort = actions_enabled and r is not None and r.active
    if r is None:
        return view
    if not r.active:
        view.last_rollout = LastRolloutView(
            strategy=r.strategy, candidate=r.candidate, status=r.status, message=r.message, at=r.entered_at
        )
        return view
    view.rollout = rollout_view(reading, evaluation, approvals[-1].title if approvals else None, now)
    return view


def rollout_view(
    reading: Reading, evaluation: Evaluation | None, approval: str | None, now: float
) -> RolloutView:
    state, policy = reading.state, reading.policy
    assert state is not None and state.rollout is not None
    r = state.rollout
    stages: list[StageView] = []
    stage_name = None
    if policy is not None:
        plan, step = current_step(policy, r)
        stage_name = step.name if step is not None else None
        stages = [
            StageView(
                index=i,
                name=s.name,
                weight=s.candidate_weight,
                shadow=s.shadow,
                approval=s.approval,
                state="done" if i < r.stage else "current" if i == r.stage else "next",
            )
            for i, s in enumerate(plan)
        ]
    current = evaluation if evaluation is not None and evaluation.revision == reading.revision else None
    decision = current.result.decision if current is not None else None
    gates: list[GateView] = []
    if decision is not None:
        by_name = {g.name: g for g in policy.gates} if policy is not None else {}
        on_failure = policy.on_failure if policy is not None else "rollback"
        for g in decision.gates:
            f = facts(g, by_name.get(g.gate))
            gates.append(GateView(**f.__dict__, explanation=explain(f, by_name.get(g.gate), on_failure)))
    nxt = outlook(r, policy, decision, now, approval)
    return RolloutView(
        strategy=r.strategy,
        candidate=r.candidate,
        stable=r.stable,
        status=r.status,
        message=r.message,
        stage=r.stage,
        stage_name=stage_name,
        stages=stages,
        entered_at=r.entered_at,
        started_at=r.started_at,
        evaluated_at=current.at if current is not None else None,
        decision=decision.action.value if decision is not None else None,
        reason=decision.reason if decision is not None else None,
        gates=gates,
        next=NextView(action=nxt.action, summary=nxt.summary, at=nxt.at),
    )


def timeline_view(env: str, points: list[Point], link: str) -> TimelineView:
    """`link` is a format string with `{env}` and `{sha}` (the dashboard's diff page, or a forge's commit URL)."""
    seen: dict[str, None] = {}
    for p in points:
        for name in (*p.weights, *p.shadows):
            seen.setdefault(name, None)
    return TimelineView(
        env=env,
        points=[
            PointView(
                commit=p.sha,
                at=p.at,
                subject=p.subject,
                kind=p.kind,
                action=p.action,
                weights=p.weights,
                shadows=p.shadows,
                stable=p.stable,
                note=p.note,
                link=link.format(env=env, sha=p.sha),
            )
            for p in points
        ],
        predictors=list(seen),
    )


def drift_view(
    reading: DriftReading | None, threshold: float | None, state: RolloutState | None
) -> DriftView:
    """What monitoring says per predictor: the manifest's predictors first, then any other the monitor names.
    `threshold` None: monitoring is not configured."""
    if threshold is None:
        return DriftView()
    if reading is None:
        return DriftView(configured=True, threshold=threshold, detail="Waiting for the first drift figures.")
    known = [p.name for p in state.predictors] if state is not None else []
    names = [p for p in known if p in reading.predictors] + sorted(set(reading.predictors) - set(known))
    predictors = []
    for name in names:
        d = reading.predictors[name]
        features = [
            FeatureDriftView(feature=f, score=v, over=v > threshold)
            for f, v in sorted(d.features.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
        predictors.append(
            PredictorDriftView(
                predictor=name,
                role=role(state, name) if state is not None and name in known else "other",
                features=features,
                drifted=sum(f.over for f in features),
                prediction_drift=d.prediction,
                prediction_over=d.prediction is not None and d.prediction > threshold,
                accuracy=d.accuracy,
                error=d.error,
            )
        )
    if reading.problem:
        detail = "The drift figures could not be read."
    elif predictors:
        drifted = [f"{p.predictor}: {p.drifted}" for p in predictors if p.drifted]
        detail = (
            f"Features over the threshold ({', '.join(drifted)})."
            if drifted
            else "No feature over the threshold."
        )
    else:
        detail = "The monitor exports no figures for this deployment yet (too few predictions logged?)."
    return DriftView(
        configured=True,
        detail=detail,
        source=reading.source,
        threshold=threshold,
        at=reading.at,
        computed_at=reading.computed_at,
        problem=reading.problem,
        predictors=predictors,
    )
