"""Builders shared by the rollout tests: policies, states and observations in a few words."""

from __future__ import annotations

from typing import Any

from rollout.observations import Observations, PredictorStats
from rollout.policy import Policy, parse_policy
from rollout.state import PredictorState, Rollout, RolloutState

STABLE = "m-aaaaaaaaaaaa"
CAND = "m-bbbbbbbbbbbb"
T0 = 1_800_000_000.0


def policy(strategy: str = "canary", **over: Any) -> Policy:
    base: dict[str, Any] = {
        "strategy": strategy,
        "stages": [{"weight": 10, "bake": 10}, {"weight": 50, "bake": 10}],
        "gates": [
            {
                "name": "success",
                "metric": "success_rate",
                "min": 0.99,
                "min_sample": 20,
                "no_data_deadline": 60,
            },
        ],
        "shadow": {"mirror": 100, "duration": 10, "then": "promote"},
        "ab": {
            "split": 50,
            "metric": "accuracy",
            "min_sample": 100,
            "significance": 0.05,
            "max_duration": 600,
        },
        "bluegreen": {"warmup": 10, "switch": [100], "step_bake": 5, "blue_bake": 10},
    }
    base.update(over)
    return parse_policy(base)


def state_for(
    pol: Policy, stage: int = 0, entered_at: float = T0, status: str = "progressing"
) -> RolloutState:
    from rollout.decision import expected_layout

    r = Rollout(pol.strategy, CAND, STABLE, stage, entered_at, status)  # type: ignore[arg-type]
    layout = expected_layout(pol, r)
    assert layout is not None
    preds = tuple(PredictorState(s.name, s.traffic, s.shadow) for s in layout)
    return RolloutState("sd", preds, r)


def healthy(n: float = 2000, errors: float = 0, **extra: Any) -> PredictorStats:
    return PredictorStats(
        requests=n, errors=errors, buckets=((0.01, n * 0.9), (0.1, n), (float("inf"), n)), **extra
    )


def obs(cand: PredictorStats | None = None, stable: PredictorStats | None = None, **kw: Any) -> Observations:
    preds = {}
    if cand is not None:
        preds[CAND] = cand
    if stable is not None:
        preds[STABLE] = stable
    return Observations(window=10, predictors=preds, **kw)
