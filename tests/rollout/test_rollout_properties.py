"""Property tests over random policies and metric streams (hypothesis).

- weights are always valid (every layout passes the manifest guardrails);
- a failing or missing gate never advances or promotes;
- rollback is always reachable and always restores the stable predictor to 100 %;
- promotion happens only after every stage of the plan has been entered and passed, in order;
- a bandit's weights always stay within its bounds, and only a rollback the evidence decided quarantines.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from rollout_factories import CAND, STABLE, T0

from rollout.decision import Action, abort, decide
from rollout.gates import GateContext, evaluate
from rollout.guardrails import check_manifest
from rollout.observations import Observations, PredictorStats
from rollout.policy import Policy, parse_policy
from rollout.state import Layout, PredictorState, Rollout, RolloutState
from rollout.strategies import steps

DIGESTS = {STABLE: "sha256:" + "a" * 64, CAND: "sha256:" + "b" * 64}


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    strategy = draw(st.sampled_from(["canary", "shadow", "ab", "bluegreen", "bandit"]))
    weights = sorted(draw(st.sets(st.integers(1, 100), min_size=1, max_size=4)))
    gates: list[dict[str, Any]] = []
    for i, metric in enumerate(
        draw(st.lists(st.sampled_from(["success_rate", "accuracy", "disagreement", "latency"]), max_size=3))
    ):
        g: dict[str, Any] = {
            "name": f"g{i}",
            "metric": metric,
            "no_data": draw(st.sampled_from(["hold", "fail", "pass"])),
            "no_data_deadline": draw(st.integers(0, 100)),
            "confidence": draw(st.sampled_from([0.8, 0.95, 0.99])),
        }
        if metric == "latency":
            g["quantile"] = draw(st.sampled_from([0.5, 0.9]))
            if draw(st.booleans()):
                g["max"] = draw(st.floats(0.01, 1.0))
            else:
                g["margin"] = draw(st.floats(0.05, 1.0))
        elif metric == "disagreement":
            g["margin"] = draw(st.floats(0.01, 0.5))
            g["min_sample"] = draw(st.integers(0, 50))
        else:
            if draw(st.booleans()):
                g["min"] = draw(st.floats(0.5, 1.0))
            else:
                g["margin"] = draw(st.floats(0.001, 0.2))
            g["min_sample"] = draw(st.integers(0, 50))
        gates.append(g)
    return parse_policy(
        {
            "strategy": strategy,
            "on_failure": draw(st.sampled_from(["rollback", "freeze"])),
            "approve_promotion": draw(st.booleans()),
            "stages": [
                {"weight": w, "bake": draw(st.integers(0, 30)), "approval": draw(st.booleans())}
                for w in weights
            ],
            "gates": gates,
            "shadow": {
                "mirror": draw(st.integers(1, 100)),
                "duration": draw(st.integers(0, 30)),
                "then": draw(st.sampled_from(["promote", "canary", "bluegreen"])),
            },
            "ab": {
                "split": draw(st.integers(1, 99)),
                "min_sample": draw(st.integers(1, 100)),
                "max_duration": 200,
                "metric": draw(st.sampled_from(["accuracy", "success_rate"])),
            },
            "bluegreen": {
                "warmup": draw(st.integers(0, 20)),
                "switch": sorted({*draw(st.sets(st.integers(1, 99), max_size=2)), 100}),
                "approval": draw(st.booleans()),
            },
            "bandit": {
                "start": 50,
                "step": draw(st.integers(1, 30)),
                "min_sample": draw(st.integers(1, 100)),
                "max_duration": 200,
                "margin": draw(st.sampled_from([0.0, 0.02])),
            },
        }
    )


@st.composite
def stats(draw: st.DrawFn) -> PredictorStats:
    # Mostly healthy, sometimes empty or bad: so that long rollouts, holds and failures all occur.
    n = draw(st.one_of(st.just(0), st.integers(0, 60), st.integers(200, 300), st.integers(2000, 5000)))
    fb = draw(st.one_of(st.just(0), st.integers(0, 300), st.integers(2000, 5000)))
    comp = draw(st.one_of(st.just(0), st.integers(0, 300)))
    healthy = draw(st.booleans()) or draw(st.booleans())
    return PredictorStats(
        requests=n,
        errors=0 if healthy else draw(st.integers(0, n)),
        buckets=((0.05, n if healthy else draw(st.integers(0, n))), (0.5, n), (float("inf"), n)),
        feedback=fb,
        reward=fb if healthy else draw(st.integers(0, fb)),
        comparisons=comp,
        disagreements=0 if healthy else draw(st.integers(0, comp)),
    )


ticks = st.lists(st.tuples(stats(), stats(), st.integers(0, 60)), min_size=1, max_size=12)


def manifest(layout: Layout) -> dict[str, Any]:
    preds = []
    for s in layout:
        p: dict[str, Any] = {
            "name": s.name,
            "traffic": s.traffic,
            "graph": {
                "name": "classifier",
                "parameters": [
                    {"name": "model_uri", "type": "STRING", "value": f"models:/m/{s.name}"},
                    {"name": "model_digest", "type": "STRING", "value": DIGESTS[s.name]},
                ],
            },
        }
        if s.shadow:
            p["shadow"] = True
        preds.append(p)
    return {
        "apiVersion": "machinelearning.seldon.io/v1",
        "kind": "SeldonDeployment",
        "metadata": {"name": "sd"},
        "spec": {"predictors": preds},
    }


def start(pol: Policy) -> RolloutState:
    r = Rollout(pol.strategy, CAND, STABLE, 0, T0)
    layout = steps(pol)[0].layout(STABLE, CAND)
    return RolloutState("sd", tuple(PredictorState(s.name, s.traffic, s.shadow) for s in layout), r)


@settings(max_examples=150, deadline=None)
@given(pol=policies(), stream=ticks)
def test_rollouts_keep_invariants(
    pol: Policy, stream: list[tuple[PredictorStats, PredictorStats, int]]
) -> None:
    plan = steps(pol)
    state, now = start(pol), T0
    assert check_manifest(manifest(state.layout)) == []
    visited = [0]
    for cand, stable, dt in stream:
        now += dt
        r = state.rollout
        assert r is not None
        # rollback is reachable from every state and restores the stable predictor alone at 100
        back = abort(state, now)
        if r.active:
            assert back.action == Action.ROLLBACK and back.layout is not None
            assert [(s.name, s.traffic, s.shadow) for s in back.layout] == [(STABLE, 100, False)]
            assert check_manifest(manifest(back.layout)) == []

        o = Observations(10, {CAND: cand, STABLE: stable})
        d = decide(state, pol, o, now)
        if d.layout is not None:
            assert check_manifest(manifest(d.layout)) == [], d
        if (
            r.active
            and r.status == "progressing"
            and d.action in (Action.ADVANCE, Action.PROMOTE, Action.AWAIT_APPROVAL)
        ):
            step = plan[r.stage]
            ctx = GateContext(
                CAND, STABLE, step.shadow, step.shadow or step.candidate_weight < 100, now - r.entered_at
            )
            verdicts = [evaluate(g, o, ctx).verdict for g in pol.gates]
            assert "fail" not in verdicts and "hold" not in verdicts, (d, verdicts)
            if d.action == Action.PROMOTE or d.then == Action.PROMOTE:
                assert "no-data-pass" not in verdicts, "missing data never promotes"
                assert visited == list(range(len(plan))), "promotion only after every stage, in order"
                if step.judge == "gates":
                    assert now - r.entered_at >= step.bake
        if d.action == Action.ROLLBACK:
            assert d.layout is not None and [(s.name, s.traffic) for s in d.layout] == [(STABLE, 100)]
        if d.quarantine is not None:
            assert d.action == Action.ROLLBACK, "only a rollback quarantines"
            decided = [g for g in d.gates if g.verdict == "fail" and g.conclusive]
            assert decided, "only evidence quarantines a model"
        if d.action == Action.REALLOCATE:
            assert d.rollout is not None and d.rollout.weight is not None
            assert pol.bandit.min_weight <= d.rollout.weight <= pol.bandit.max_weight
        if d.rollout is None and d.layout is None:
            continue
        new_r = d.rollout or r
        layout = d.layout if d.layout is not None else state.layout
        state = RolloutState("sd", tuple(PredictorState(s.name, s.traffic, s.shadow) for s in layout), new_r)
        if new_r.stage != r.stage:
            assert new_r.stage == r.stage + 1
            visited.append(new_r.stage)
        if not new_r.active:
            break
