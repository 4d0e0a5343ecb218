"""Gate benchmark: how often a gate decides wrongly, and how soon it decides, over simulated rollouts.

For each shipped policy at a stated traffic (policies/local.yaml and the demo's canary at 50 requests/s,
staging at 100/s, production at 500/s) and each gate kind in it (plus a custom PromQL mean, and the whole
policy at once), `runs` rollouts of two candidates are simulated tick by tick, at the policy's interval and
canary weights:

- identical: the candidate behaves exactly like the stable model: every rollback is a false rollback;
- worse: the candidate is worse by twice the gate's margin: every promotion is a miss.

Three deciders, each fed its own draws of the same traffic process (they reach their stages at different
times):

- old: the point-threshold gate the engine had before: the margin's limit as a fixed threshold on the last
  `window` seconds (the old policies' windows and min_sample), read at every tick;
- fixed-n: a one-sided non-inferiority test at the gate's confidence, with power equal to the confidence at
  no difference, read once per stage when its planned sample is in (normal approximation; exact binomial for
  disagreement; asymptotic quantile variance for latency);
- new: the engine itself, `rollout.decision.decide`, with the policy cut down to that gate, fed the stage's
  counts each tick.

Traffic per tick is Poisson; successes, rewards and disagreements binomial; latencies log-normal (median
2 ms, sigma 0.5) counted into the gateway's histogram buckets, a worse candidate's latencies scaled by
1 + 2 margins. A cold-start scenario sends the candidate's first 20 requests at 10x the latency, with the policy's warm-up
(the first seconds of each stage not judged) and without it.

The bandit part runs the engine's Thompson sampling (`strategy: bandit`, policies/local.yaml's settings) on
simulated feedback and compares its regret (rewards lost to the worse arm) with a 50/50 A/B test of the same
length, and how often it stops on the wrong arm.

`python -m benchmarks gates` writes results/gates.json, gates.md, gates.png, gates_time.png and bandit.png.
Seeded: the same code gives the same numbers. `runs` (default 1000) and `scale` tune the size.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

STABLE, CAND = "m-aaaaaaaaaaaa", "m-bbbbbbbbbbbb"
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf)
MEDIAN, SIGMA = 0.002, 0.5
Z = NormalDist()

# The policies before this change: the window each tick judged, and the smallest sample a gate accepted.
OLD = {
    "local": {"window": 5.0, "min_sample": 20},
    "demo": {"window": 2.5, "min_sample": 10},
    "staging": {"window": 120.0, "min_sample": 200},
    "production": {"window": 300.0, "min_sample": 500},
}
TRAFFIC = {"local": 50.0, "demo": 50.0, "staging": 100.0, "production": 500.0}
BASE = {"success_rate": 0.999, "accuracy": 0.95, "promql": 0.3, "disagreement": 0.0}


# policies ------------------------------------------------------------------------------------------------------
def load_policies() -> dict[str, Any]:
    from demo.run import Settings, demo_policy
    from rollout.policy import load_policy, parse_policy

    root = Path(__file__).resolve().parents[1] / "policies"
    out = {name: load_policy(root / f"{name}.yaml") for name in ("local", "staging", "production")}
    out["demo"] = parse_policy(demo_policy(Settings(fast=True), "canary"), "sluice demo --fast (canary)")
    return out


def custom_gate() -> dict[str, Any]:
    """A custom PromQL mean (e.g. a conversion rate) with its sample query, for the promql gate kind."""
    return {
        "name": "conversion",
        "metric": "promql",
        "query": 'conversion_rate{{namespace="{namespace}",predictor="{predictor}"}}',
        "sample_query": 'sessions{{namespace="{namespace}",predictor="{predictor}"}}',
        "better": "higher",
        "margin": 0.03,
        "confidence": 0.95,
        "no_data_deadline": 1800,
    }


# traffic ---------------------------------------------------------------------------------------------------------
def _bucket_probs(scale: float) -> np.ndarray:
    cdf = [Z.cdf(math.log(le / (MEDIAN * scale)) / SIGMA) if le != math.inf else 1.0 for le in BUCKETS]
    return np.diff(np.concatenate(([0.0], cdf)))


@dataclass
class Arm:
    """Counts of one predictor (one tick, a window or a stage)."""

    n: float = 0.0
    good: float = 0.0  # successes for success_rate; rewards for accuracy; the promql sum
    fb: float = 0.0
    reward: float = 0.0
    comparisons: float = 0.0
    disagreements: float = 0.0
    hist: np.ndarray = field(default_factory=lambda: np.zeros(len(BUCKETS)))

    def add(self, other: Arm) -> None:
        self.n += other.n
        self.good += other.good
        self.fb += other.fb
        self.reward += other.reward
        self.comparisons += other.comparisons
        self.disagreements += other.disagreements
        self.hist = self.hist + other.hist

    def stats(self) -> Any:
        from rollout.observations import PredictorStats

        cum = np.cumsum(self.hist)
        return PredictorStats(
            requests=self.n,
            errors=self.n - self.good,
            buckets=tuple((le, float(c)) for le, c in zip(BUCKETS, cum, strict=True)),
            feedback=self.fb,
            reward=self.reward,
            comparisons=self.comparisons,
            disagreements=self.disagreements,
        )


@dataclass(frozen=True)
class Candidate:
    success: float
    accuracy: float
    custom: float
    disagreement: float
    latency_scale: float
    cold_start: int = 0


def draw_tick(rng: np.random.Generator, n: int, p_good: float, acc: float, hist_p: np.ndarray) -> Arm:
    a = Arm()
    a.n = n
    a.good = rng.binomial(n, p_good) if n else 0
    a.fb = n
    a.reward = rng.binomial(n, acc) if n else 0
    a.hist = rng.multinomial(n, hist_p).astype(float) if n else np.zeros(len(BUCKETS))
    return a


# deciders ---------------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    result: str  # promoted | rolled-back | undecided
    seconds: float


def _gate_value(g: Any, arm: Arm) -> tuple[float | None, float]:
    """(point value, sample) of one arm for a gate, as the old engine measured it."""
    from rollout.observations import histogram_quantile

    s = arm.stats()
    match g.metric:
        case "success_rate":
            return s.success_rate(), arm.n
        case "accuracy":
            return s.accuracy(), arm.fb
        case "promql":
            return (arm.good / arm.n if arm.n else None), arm.n
        case "disagreement":
            return s.disagreement(), arm.comparisons
        case "latency":
            return histogram_quantile(g.quantile, s.buckets), arm.n
    raise AssertionError(g.metric)


def old_verdict(g: Any, cand: Arm, stable: Arm, shadow: bool, min_sample: int, in_stage: float) -> str:
    """The point-threshold rule: the window's value against the margin's limit."""
    if g.metric == "disagreement" and not shadow:
        return "skip"
    if g.metric == "accuracy" and shadow:
        return "skip"
    v, n = _gate_value(g, cand)
    relative = g.comparison != "absolute"
    base = None
    if v is None or n < max(min_sample, 1):
        return "hold" if in_stage < g.no_data_deadline else "fail"
    if relative:
        base, bn = _gate_value(g, stable)
        if base is None or bn < max(min_sample, 1):
            return "hold" if in_stage < g.no_data_deadline else "fail"
    margin = g.margin or 0.0
    if g.metric == "disagreement":
        return "pass" if v <= margin else "fail"
    if g.comparison == "ratio":
        assert base is not None
        ratio = (1.0 if v == 0 else math.inf) if base == 0 else v / base
        return "pass" if ratio <= 1 + margin else "fail"
    if g.comparison == "difference":
        assert base is not None
        d = v - base
        return "pass" if (d >= -margin if g.direction == "higher" else d <= margin) else "fail"
    bound = g.min if g.min is not None else g.max
    return "pass" if (v >= bound - margin if g.direction == "higher" else v <= bound + margin) else "fail"


def fixed_n(g: Any, weight: float, mirror: bool, power: float | None = None) -> float:
    """Candidate observations a one-sided fixed-sample non-inferiority test needs: type I error 1 - confidence
    at the margin, and `power` (default: the confidence) to pass a candidate no different from the stable."""
    z = Z.inv_cdf(g.confidence)
    zb = Z.inv_cdf(power if power is not None else g.confidence)
    k = 1.0 if mirror else (100 - weight) / weight  # stable observations per candidate observation
    d = g.margin or 0.0
    if g.metric == "disagreement":  # exact: pass only with no difference at all in n
        return math.ceil(math.log(1 - g.confidence) / math.log(1 - d))
    if g.metric == "latency":
        q = g.quantile
        var = q * (1 - q) * SIGMA**2 / Z.pdf(Z.inv_cdf(q)) ** 2
        return math.ceil((z + zb) ** 2 * var * (1 + 1 / k) / math.log(1 + d) ** 2)
    p = BASE[g.metric]
    v0 = (p - d) * (1 - (p - d)) + p * (1 - p) / k
    v1 = p * (1 - p) * (1 + 1 / k)
    return math.ceil((z * math.sqrt(v0) + zb * math.sqrt(v1)) ** 2 / d**2)


def planned_seconds(policy: Any, rate: float, power: float) -> float:
    """How long a fixed-sample test with this overall power takes to promote: each stage lasts until every
    gate's planned sample is in (after the warm-up) or its bake, whichever is longer. The power is split
    evenly over the gates and stages read."""
    plan = _plan(policy)
    reads = [(g, s) for s in plan for g in policy.gates if _applies(g, s.shadow)]
    per_test = power ** (1 / max(len(reads), 1))
    total = 0.0
    for step in plan:
        w = step.candidate_weight
        need = [
            fixed_n(g, max(w, 1), step.shadow, per_test) / (rate * w / 100)
            for g in policy.gates
            if _applies(g, step.shadow)
        ]
        total += max(step.bake, policy.warmup + max(need, default=0.0))
    return total


def _applies(g: Any, shadow: bool) -> bool:
    return not ((g.metric == "disagreement" and not shadow) or (g.metric == "accuracy" and shadow))


def fixed_verdict(g: Any, cand: Arm, stable: Arm, shadow: bool) -> str:
    """The fixed-sample test at its planned sample: pass when the one-sided bound clears the limit."""
    z = Z.inv_cdf(g.confidence)
    d = g.margin or 0.0
    if g.metric == "disagreement":
        return "pass" if cand.disagreements == 0 else "fail"
    if g.metric == "latency":
        from rollout.observations import histogram_quantile

        c = histogram_quantile(g.quantile, cand.stats().buckets) or 0.0
        s = histogram_quantile(g.quantile, stable.stats().buckets) or 0.0
        if c <= 0 or s <= 0:
            return "fail"
        q = g.quantile
        var = q * (1 - q) * SIGMA**2 / Z.pdf(Z.inv_cdf(q)) ** 2
        se = math.sqrt(var / cand.n + var / stable.n)
        return "pass" if math.log(c / s) + z * se < math.log(1 + d) else "fail"
    vc, nc = _gate_value(g, cand)
    vs, ns = _gate_value(g, stable)
    assert vc is not None and vs is not None
    se = math.sqrt(vc * (1 - vc) / nc + vs * (1 - vs) / ns) or 1e-12
    return "pass" if (vc - vs) - z * se > -d else "fail"


# one rollout ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenario:
    policy: str
    kind: str  # a gate's metric, "promql", or "policy" (every gate at once)
    candidate: str  # identical | worse | cold-start | cold-start-no-warmup
    runs: int
    seed: int
    horizon: float
    margin: float | None = None  # another margin for the gate kind than the policy's


def _plan(policy: Any) -> list[Any]:
    from rollout.strategies import steps

    return steps(policy)


def simulate(sc: Scenario) -> dict[str, Any]:
    """All runs of one scenario, for the three deciders; returns their outcomes."""
    from rollout.decision import Action, decide, expected_layout
    from rollout.observations import Observations
    from rollout.policy import parse_policy
    from rollout.state import PredictorState, Rollout, RolloutState

    base_policy = load_policies()[sc.policy]
    gates_data = [g.model_dump(exclude_unset=True) for g in base_policy.gates]
    if sc.kind == "promql":
        gates_data = [custom_gate()]
    elif sc.kind != "policy":
        gates_data = [g for g in gates_data if g["metric"] == sc.kind]
    spec = {**base_policy.model_dump(exclude_unset=True), "gates": gates_data}
    if sc.kind == "disagreement" and base_policy.strategy != "shadow":
        spec["strategy"] = "shadow"  # only a shadow is compared answer by answer
    if sc.candidate == "cold-start-no-warmup":
        spec["warmup"] = 0
    if sc.margin is not None:
        spec["gates"] = [{**g, "margin": sc.margin} for g in spec["gates"]]
    policy = parse_policy(spec, sc.policy)
    gates = policy.gates
    margins = {g.metric: g.margin or 0.0 for g in gates}
    worse = sc.candidate == "worse"
    cand = Candidate(
        success=BASE["success_rate"]
        - (2 * margins.get("success_rate", 0) if worse and sc.kind in ("success_rate", "policy") else 0),
        accuracy=BASE["accuracy"]
        - (2 * margins.get("accuracy", 0) if worse and sc.kind in ("accuracy", "policy") else 0),
        custom=BASE["promql"] - (2 * margins.get("promql", 0) if worse else 0),
        disagreement=2 * margins.get("disagreement", 0)
        if worse and sc.kind in ("disagreement", "policy")
        else 0.0,
        latency_scale=1 + 2 * margins.get("latency", 0)
        if worse and sc.kind in ("latency", "policy")
        else 1.0,
        cold_start=20 if sc.candidate.startswith("cold-start") else 0,
    )
    plan = _plan(policy)
    rate = TRAFFIC[sc.policy]
    dt = policy.interval
    old = OLD[sc.policy]
    window_ticks = max(1, round(old["window"] / dt))
    stable_hist = _bucket_probs(1.0)
    cand_hist = _bucket_probs(cand.latency_scale)
    cold_bucket = int(np.searchsorted(BUCKETS, MEDIAN * 10))
    rng = np.random.default_rng(sc.seed)
    out: dict[str, list[Outcome]] = {"old": [], "fixed": [], "new": []}
    samples = {id(g): [fixed_n(g, max(s.candidate_weight, 1), s.shadow) for s in plan] for g in gates}

    for _ in range(sc.runs):
        done = {"old": False, "fixed": False, "new": False}
        stage = {"old": 0, "fixed": 0, "new": 0}
        entered = {"old": 0.0, "fixed": 0.0, "new": 0.0}
        acc = {m: (Arm(), Arm()) for m in done}  # stage counts per decider (stages advance separately)
        windows: deque[tuple[Arm, Arm]] = deque(maxlen=window_ticks)
        passed_fixed: dict[int, set[int]] = {}
        cold_left = {m: cand.cold_start for m in done}
        t = 0.0
        while not all(done.values()) and t < sc.horizon:
            t += dt
            # one tick of traffic for each decider's current stage
            for m in ("old", "fixed", "new"):
                if done[m]:
                    continue
                step = plan[stage[m]]
                shadow = step.shadow
                w = step.candidate_weight
                n_c = rng.poisson(rate * (w / 100) * dt)
                n_s = rng.poisson(rate * dt) if shadow else rng.poisson(rate * (1 - w / 100) * dt)
                c = draw_tick(rng, n_c, cand.success, cand.accuracy, cand_hist)
                s = draw_tick(rng, n_s, BASE["success_rate"], BASE["accuracy"], stable_hist)
                c.good = rng.binomial(n_c, cand.custom) if sc.kind == "promql" else c.good
                s.good = rng.binomial(n_s, BASE["promql"]) if sc.kind == "promql" else s.good
                if shadow:
                    c.fb = c.reward = 0
                    c.comparisons = n_c
                    c.disagreements = rng.binomial(n_c, cand.disagreement) if n_c else 0
                if cold_left[m] and n_c:  # the candidate's first requests, 10x slower
                    k = min(cold_left[m], n_c)
                    moved = rng.multivariate_hypergeometric(c.hist.astype(int), k)
                    c.hist = c.hist - moved
                    c.hist[cold_bucket] += k
                    cold_left[m] -= k
                if m == "old":
                    windows.append((c, s))  # the old engine judged windows: no warm-up
                elif t - entered[m] > policy.warmup:  # a stage's first seconds are not judged
                    acc[m][0].add(c)
                    acc[m][1].add(s)
            # deciders
            for m in ("old", "fixed", "new"):
                if done[m]:
                    continue
                step = plan[stage[m]]
                in_stage = t - entered[m]
                if m == "new":
                    r = Rollout(policy.strategy, CAND, STABLE, stage[m], entered[m])
                    layout = expected_layout(policy, r)
                    assert layout is not None
                    state = RolloutState(
                        "sd", tuple(PredictorState(x.name, x.traffic, x.shadow) for x in layout), r
                    )
                    c_arm, s_arm = acc[m]
                    stage_stats = {CAND: c_arm.stats(), STABLE: s_arm.stats()}
                    custom: dict[str, dict[str, float]] = {}
                    if sc.kind == "promql":
                        from rollout.gates import SAMPLE_SUFFIX

                        custom = {
                            "conversion": {
                                CAND: c_arm.good / c_arm.n if c_arm.n else math.nan,
                                STABLE: s_arm.good / s_arm.n if s_arm.n else math.nan,
                            },
                            "conversion" + SAMPLE_SUFFIX: {CAND: c_arm.n, STABLE: s_arm.n},
                        }
                    d = decide(
                        state, policy, Observations(dt, stage_stats, custom=custom, stage=stage_stats), t
                    )
                    if d.action in (Action.ADVANCE, Action.AWAIT_APPROVAL) and d.then != Action.PROMOTE:
                        stage[m] += 1
                        entered[m] = t
                        acc[m] = (Arm(), Arm())
                    elif d.action == Action.PROMOTE or d.then == Action.PROMOTE:
                        out[m].append(Outcome("promoted", t))
                        done[m] = True
                    elif d.action == Action.ROLLBACK:
                        out[m].append(Outcome("rolled-back", t))
                        done[m] = True
                    continue
                c_arm, s_arm = acc[m]
                if m == "old":
                    c_arm, s_arm = Arm(), Arm()
                    for wc, ws in windows:
                        c_arm.add(wc)
                        s_arm.add(ws)
                    verdicts = [
                        old_verdict(g, c_arm, s_arm, step.shadow, old["min_sample"], in_stage) for g in gates
                    ]
                else:  # fixed-n: each gate read once, when its planned sample for this stage is in
                    seen = passed_fixed.setdefault(stage[m], set())
                    verdicts = []
                    for g in gates:
                        if id(g) in seen or not _applies(g, step.shadow):
                            verdicts.append("pass" if id(g) in seen else "skip")
                            continue
                        n_needed = samples[id(g)][stage[m]]
                        n_have = (
                            c_arm.comparisons
                            if g.metric == "disagreement"
                            else (c_arm.fb if g.metric == "accuracy" else c_arm.n)
                        )
                        if n_have >= n_needed:
                            v = fixed_verdict(g, c_arm, s_arm, step.shadow)
                            if v == "pass":
                                seen.add(id(g))
                            verdicts.append(v)
                        else:
                            verdicts.append("hold" if in_stage < g.no_data_deadline else "fail")
                if "fail" in verdicts:
                    out[m].append(Outcome("rolled-back", t))
                    done[m] = True
                elif "hold" not in verdicts and in_stage >= step.bake:
                    if stage[m] + 1 >= len(plan):
                        out[m].append(Outcome("promoted", t))
                        done[m] = True
                    else:
                        stage[m] += 1
                        entered[m] = t
                        acc[m] = (Arm(), Arm())
                        windows.clear()
        for m in done:
            if not done[m]:
                out[m].append(Outcome("undecided", sc.horizon))
    planned = None
    if sc.candidate == "identical":
        # the fixed-sample test as powerful as the new gate turned out to be (a rule of three when it never erred)
        wrong = sum(o.result != "promoted" for o in out["new"]) / sc.runs
        power = 1 - max(wrong, 3 / sc.runs)
        planned = {"power": power, "seconds": planned_seconds(policy, rate, power)}
    return {
        "scenario": asdict(sc),
        "gates": [g.name for g in gates],
        "outcomes": {m: [asdict(o) for o in v] for m, v in out.items()},
        "same_power": planned,
    }


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    sc = raw["scenario"]
    wrong = "promoted" if sc["candidate"] == "worse" else "rolled-back"
    rows = {}
    for m, outs in raw["outcomes"].items():
        times = sorted(o["seconds"] for o in outs if o["result"] != "undecided")
        n = len(outs)
        rows[m] = {
            "runs": n,
            "wrong": sum(o["result"] == wrong for o in outs) / n,
            "undecided": sum(o["result"] == "undecided" for o in outs) / n,
            "median_s": float(np.median(times)) if times else math.nan,
            "p90_s": float(np.percentile(times, 90)) if times else math.nan,
        }
    return {**sc, "gates": raw["gates"], "wrong_is": wrong, "methods": rows, "same_power": raw["same_power"]}


# bandit ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BanditScenario:
    name: str
    p_candidate: float
    p_stable: float
    runs: int
    seed: int
    horizon: float = 3600.0


def simulate_bandit(sc: BanditScenario) -> dict[str, Any]:
    """Thompson sampling by the engine against a 50/50 A/B test of the same length: regret and wrong stops."""
    from rollout.decision import Action, decide, expected_layout
    from rollout.observations import Observations, PredictorStats
    from rollout.policy import parse_policy
    from rollout.state import PredictorState, Rollout, RolloutState

    local = load_policies()["local"]
    policy = parse_policy(
        {**local.model_dump(exclude_unset=True), "strategy": "bandit", "gates": []}, "bandit"
    )
    rate, dt = TRAFFIC["local"], policy.interval
    rng = np.random.default_rng(sc.seed)
    gap = abs(sc.p_candidate - sc.p_stable)
    results = []
    for _ in range(sc.runs):
        r = Rollout("bandit", CAND, STABLE, 0, 0.0)
        counts = {CAND: [0.0, 0.0], STABLE: [0.0, 0.0]}
        regret = 0.0
        served = 0.0
        t, outcome, commits = 0.0, "undecided", 0
        weights_seen = []
        while t < sc.horizon:
            t += dt
            layout = expected_layout(policy, r)
            assert layout is not None
            w = next(x.traffic for x in layout if x.name == CAND)
            weights_seen.append(w)
            n_c, n_s = rng.poisson(rate * w / 100 * dt), rng.poisson(rate * (100 - w) / 100 * dt)
            counts[CAND][0] += n_c
            counts[CAND][1] += rng.binomial(n_c, sc.p_candidate)
            counts[STABLE][0] += n_s
            counts[STABLE][1] += rng.binomial(n_s, sc.p_stable)
            served += n_c + n_s
            worse_n = n_c if sc.p_candidate < sc.p_stable else n_s
            regret += worse_n * gap
            stats = {
                p: PredictorStats(requests=n, feedback=n, reward=good) for p, (n, good) in counts.items()
            }
            state = RolloutState("sd", tuple(PredictorState(x.name, x.traffic) for x in layout), r)
            d = decide(state, policy, Observations(dt, stats, stage=stats), t)
            if d.action == Action.REALLOCATE and d.rollout is not None:
                r = d.rollout
                commits += 1
            elif d.action in (Action.PROMOTE, Action.ROLLBACK):
                outcome = "promoted" if d.action == Action.PROMOTE else "rolled-back"
                break
        ab_regret = served * 0.5 * gap
        results.append(
            {
                "outcome": outcome,
                "seconds": t,
                "regret": regret,
                "ab_regret": ab_regret,
                "commits": commits,
                "mean_weight": float(np.mean(weights_seen)),
            }
        )
    return {"scenario": asdict(sc), "results": results}


def summarise_bandit(raw: dict[str, Any]) -> dict[str, Any]:
    sc, res = raw["scenario"], raw["results"]
    n = len(res)
    # identical arms: concluding the stable model is better by more than the margin is wrong too
    wrong = "promoted" if sc["p_candidate"] < sc["p_stable"] else "rolled-back"
    regret = sum(r["regret"] for r in res)
    ab = sum(r["ab_regret"] for r in res)
    return {
        **sc,
        "runs": n,
        "promoted": sum(r["outcome"] == "promoted" for r in res) / n,
        "rolled_back": sum(r["outcome"] == "rolled-back" for r in res) / n,
        "undecided": sum(r["outcome"] == "undecided" for r in res) / n,
        "wrong_stop": sum(r["outcome"] == wrong for r in res) / n,
        "median_s": float(np.median([r["seconds"] for r in res])),
        "p90_s": float(np.percentile([r["seconds"] for r in res], 90)),
        "regret_per_run": regret / n,
        "ab_regret_per_run": ab / n,
        "regret_ratio": (regret / ab) if ab else None,
        "commits_median": float(np.median([r["commits"] for r in res])),
        "mean_candidate_weight": float(np.mean([r["mean_weight"] for r in res])),
    }


# the whole benchmark -------------------------------------------------------------------------------------------
def scenarios(runs: int) -> list[Scenario]:
    policies = load_policies()
    out = []
    seed = 1000
    horizons = {"local": 3600.0, "demo": 600.0, "staging": 6 * 3600.0, "production": 12 * 3600.0}
    for name, pol in policies.items():
        # the demo's policy is judged as a whole; the shipped ones gate kind by gate kind too
        kinds = ["policy"] if name == "demo" else [*sorted({g.metric for g in pol.gates}), "policy"]
        if name == "local":
            kinds.append("promql")
        for kind in kinds:
            for cand in ("identical", "worse"):
                seed += 1
                out.append(Scenario(name, kind, cand, runs, seed, horizons[name]))
            if kind == "latency" and name in ("local", "production"):
                for cold in ("cold-start", "cold-start-no-warmup"):
                    seed += 1
                    out.append(Scenario(name, kind, cold, runs, seed, horizons[name]))
            if kind == "latency" and name == "production":
                # a margin finer than the 2-2.5x histogram buckets: what interpolation inside a bucket does
                for cand in ("identical", "worse"):
                    seed += 1
                    out.append(Scenario(name, kind, cand, runs, seed, horizons[name], margin=0.2))
    return out


def bandit_scenarios(runs: int) -> list[BanditScenario]:
    return [
        BanditScenario("candidate 2 points better", 0.95, 0.93, runs, 7001),
        BanditScenario("candidate 2 points worse", 0.93, 0.95, runs, 7002),
        BanditScenario("candidate 5 points worse", 0.90, 0.95, runs, 7003),
        BanditScenario("identical", 0.95, 0.95, runs, 7004),
    ]


def run(
    runs: int = 1000,
    workers: int | None = None,
    progress: Callable[[str], None] = print,
    policies: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Every scenario (or those of `policies`), `runs` rollouts each, over a pool of processes."""
    started = time.perf_counter()
    gate_sc = [sc for sc in scenarios(runs) if policies is None or sc.policy in policies]
    bandit_sc = bandit_scenarios(runs)
    workers = workers or max(1, min(os.cpu_count() or 1, 4))
    gate_rows: list[dict[str, Any]] = []
    bandit_rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        gate_futures = [pool.submit(simulate, sc) for sc in gate_sc]
        bandit_futures = [pool.submit(simulate_bandit, sc) for sc in bandit_sc]
        for i, f in enumerate(gate_futures, 1):
            row = summarise(f.result())
            gate_rows.append(row)
            progress(f"[gates] {i}/{len(gate_futures)} {row['policy']} {row['kind']} {row['candidate']}")
        for f in bandit_futures:
            bandit_rows.append(summarise_bandit(f.result()))
    return {
        "runs_per_scenario": runs,
        "seconds": round(time.perf_counter() - started, 1),
        "traffic_rps": TRAFFIC,
        "old": OLD,
        "gates": gate_rows,
        "bandit": bandit_rows,
    }


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} %"


def _secs(x: float) -> str:
    if math.isnan(x):
        return "-"
    return f"{x:.0f} s" if x < 600 else f"{x / 60:.0f} min"


def markdown(data: dict[str, Any]) -> str:
    lines = [
        "# Gates: error rates and time to decide, old point thresholds vs a fixed-n test vs the new gates",
        "",
        f"{data['runs_per_scenario']} simulated rollouts per scenario (seeded; `python -m benchmarks gates`), "
        f"{data['seconds']:.0f} s in all. Traffic: "
        + ", ".join(f"{k} {v:g} requests/s" for k, v in data["traffic_rps"].items())
        + "; each policy's own interval, stages, bake times and deadlines. *identical*: the candidate behaves "
        "as the stable model (a rollback is wrong); *worse*: worse by twice the gate's margin (a promotion is "
        "wrong); *cold-start*: identical, its first 20 requests 10x slower (*no-warmup*: with the policy's "
        "warm-up set to 0). *policy*: every gate of the policy "
        "at once. Goals for the shipped policies: wrong decisions <= 5 %, time to decide no worse than a "
        "fixed-n test of the same power.",
        "",
        "| policy | gate kind | candidate | wrong: old | wrong: fixed-n | wrong: new | undecided (new) "
        "| median time: old / fixed-n / new | p90 time: old / fixed-n / new | fixed-n of the new gate's power |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["gates"]:
        m = r["methods"]
        same = r.get("same_power")
        matched = "" if not same else f"{_secs(same['seconds'])} (power {100 * same['power']:.1f} %)"
        kind = r["kind"] if r.get("margin") is None else f"{r['kind']} (margin {r['margin']:g})"
        lines.append(
            f"| {r['policy']} | {kind} | {r['candidate']} | {_pct(m['old']['wrong'])} | {_pct(m['fixed']['wrong'])} "
            f"| **{_pct(m['new']['wrong'])}** | {_pct(m['new']['undecided'])} "
            f"| {_secs(m['old']['median_s'])} / {_secs(m['fixed']['median_s'])} / {_secs(m['new']['median_s'])} "
            f"| {_secs(m['old']['p90_s'])} / {_secs(m['fixed']['p90_s'])} / {_secs(m['new']['p90_s'])} | {matched} |"
        )
    lines += [
        "",
        "*old*: the margin's limit as a point threshold on the last window, read at every tick (the old "
        "policies' windows and min_sample: "
        + ", ".join(f"{k} {v['window']:g} s / {v['min_sample']}" for k, v in data["old"].items())
        + "). *latency (margin 0.2)*: production's p99 gate with a margin finer than the router's histogram "
        "buckets (2 to 2.5x apart): inside a bucket the seconds are interpolated, so such a margin is not "
        "resolved; the shipped policies use 0.5. *fixed-n*: a one-sided non-inferiority test at the gate's confidence with power = confidence at no "
        "difference, read once per stage at its planned sample (simulated). *fixed-n of the new gate's power*: "
        "how long that test takes to promote when planned with the power the new gate showed on the identical "
        "candidate (its false-rollback rate, or 3/runs when it made none), the power split over the gates and "
        "stages it reads. *new*: `rollout.decision.decide` itself.",
        "",
        "## Bandit (Thompson sampling) against a 50/50 A/B test of the same length",
        "",
        "policies/local.yaml's bandit settings at 50 requests/s, every request with feedback. Regret: rewards "
        "lost to the worse arm while the test ran.",
        "",
        "| scenario | runs | promoted | rolled back | undecided | wrong stop | median / p90 time | commits (median) "
        "| mean candidate weight | regret per run: bandit / A/B 50-50 | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for b in data["bandit"]:
        ratio = "-" if b["regret_ratio"] is None else f"{b['regret_ratio']:.2f}"
        lines.append(
            f"| {b['name']} | {b['runs']} | {_pct(b['promoted'])} | {_pct(b['rolled_back'])} | {_pct(b['undecided'])} "
            f"| {_pct(b['wrong_stop'])} | {_secs(b['median_s'])} / {_secs(b['p90_s'])} | {b['commits_median']:.0f} "
            f"| {b['mean_candidate_weight']:.0f} % | {b['regret_per_run']:.1f} / {b['ab_regret_per_run']:.1f} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def plots(data: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in data["gates"] if r["candidate"] in ("identical", "worse")]
    labels = [
        f"{r['policy']} · {r['kind']}{'' if r.get('margin') is None else ' ' + format(r['margin'], 'g')} · {r['candidate']}"
        for r in rows
    ]
    x = np.arange(len(rows))
    colours = {"old": "tab:red", "fixed": "tab:gray", "new": "tab:blue"}
    names = {"old": "old point threshold", "fixed": "fixed-n test", "new": "new gate"}
    fig, ax = plt.subplots(figsize=(max(12, len(rows) * 0.45), 7.5))
    for i, m in enumerate(("old", "fixed", "new")):
        ax.bar(
            x + (i - 1) * 0.27,
            [100 * r["methods"][m]["wrong"] for r in rows],
            0.27,
            color=colours[m],
            label=names[m],
        )
    ax.axhline(5, color="black", ls="--", lw=1, label="goal: 5 %")
    ax.set_xticks(x, labels, fontsize=7, rotation=60, ha="right")
    ax.set_ylabel("wrong decisions (%)\n(rollback of identical, promotion of worse)")
    ax.set_title(f"Gates over {data['runs_per_scenario']} simulated rollouts per scenario")
    ax.legend(fontsize=8)
    fig.tight_layout()
    errors = out / "gates.png"
    fig.savefig(errors, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(12, len(rows) * 0.45), 7))
    for i, m in enumerate(("old", "fixed", "new")):
        med = [r["methods"][m]["median_s"] / 60 for r in rows]
        p90 = [r["methods"][m]["p90_s"] / 60 for r in rows]
        pos = x + (i - 1) * 0.27
        ax.bar(pos, med, 0.27, color=colours[m], label=f"{names[m]}: median")
        ax.scatter(pos, p90, color=colours[m], marker="_", s=120, label=f"{names[m]}: p90")
    ax.set_yscale("log")
    ax.set_xticks(x, labels, fontsize=7, rotation=60, ha="right")
    ax.set_ylabel("minutes from start to promotion or rollback")
    ax.set_title("Time to decide (bars: median; ticks: p90)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    times = out / "gates_time.png"
    fig.savefig(times, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 4.5))
    b = [r for r in data["bandit"] if r["regret_ratio"] is not None]
    xb = np.arange(len(b))
    ax.bar(
        xb - 0.2, [r["regret_per_run"] for r in b], 0.4, label="bandit (Thompson sampling)", color="tab:blue"
    )
    ax.bar(
        xb + 0.2, [r["ab_regret_per_run"] for r in b], 0.4, label="A/B 50/50, same length", color="tab:gray"
    )
    ax.set_xticks(xb, [r["name"] for r in b])
    ax.set_ylabel("rewards lost to the worse arm per test")
    ax.set_title("Bandit regret against a fixed 50/50 split")
    ax.legend()
    fig.tight_layout()
    bandit = out / "bandit.png"
    fig.savefig(bandit, dpi=110)
    plt.close(fig)
    return [errors, times, bandit]


def main(
    results_dir: Path,
    runs: int | None = None,
    policies: tuple[str, ...] | None = None,
    workers: int | None = None,
) -> None:
    runs = runs or int(os.environ.get("SLUICE_BENCH_GATE_RUNS", "1000"))
    results_dir.mkdir(parents=True, exist_ok=True)
    data = run(runs, workers=workers, policies=policies)
    (results_dir / "gates.json").write_text(json.dumps(data, indent=2) + "\n")
    text = markdown(data)
    (results_dir / "gates.md").write_text(text)
    paths = plots(data, results_dir)
    print(text)
    for p in paths:
        print(f"  {p}")


if __name__ == "__main__":
    main(Path(__file__).resolve().parent / "results")
