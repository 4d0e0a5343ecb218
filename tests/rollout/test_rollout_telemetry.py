"""The reconciler's own metrics (rollout/telemetry.py): what the Grafana dashboard and the alert rules read.
Ticks of a real reconciler on a real repository and a real exporter, rendered by prometheus_client's own
exposition and read back with its parser; and `sluice rollout reconcile --watch --metrics-port` over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rollout_exporter import Exporter
from rollout_gitops import fast_policy, make_env, make_repo
from testkit.services import free_port

from deployment import metric_names as n
from rollout.policy import parse_policy
from rollout.reconciler import start
from rollout.run import Tick, run
from rollout.state import Rollout
from rollout.telemetry import ReconcilerMetrics, stage_deadline

STABLE, CANDIDATE = "sha256:" + "1" * 64, "sha256:" + "2" * 64
STABLE_NAME, CANDIDATE_NAME = "m-111111111111", "m-222222222222"
REPO = Path(__file__).resolve().parents[2]


def samples(registry: CollectorRegistry) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_a_rollout_and_its_gates_as_metrics(tmp_path: Path, exporter: Exporter) -> None:
    repo = make_repo(tmp_path, STABLE)
    env = make_env(repo, fast_policy("canary"), exporter.url)
    exporter.set(STABLE_NAME, requests=5)
    exporter.set(CANDIDATE_NAME, requests=5, error_ratio=0.5)  # the success gate fails: a rollback
    metrics = ReconcilerMetrics("local", clock=lambda: 1234.5)
    assert samples(metrics.registry) == {}  # nothing before the first tick
    start(env, "file:///c", "file:///c", CANDIDATE)
    seen: list[dict[str, list[tuple[dict[str, str], float]]]] = []

    def on_tick(step: Tick) -> None:
        metrics.record(step)
        seen.append(samples(metrics.registry))

    run(env, max_ticks=20, sleep=lambda _: time.sleep(0.05), on_tick=on_tick, until=lambda r: r.wrote)
    base = {"namespace": "sluice", "environment": "local"}
    rollout = {**base, "deployment_name": "sluice-classifier"}
    for held in seen[:-1]:  # ticks that waited for data: the rollout as Git has it, its stage and deadline
        assert held[n.RECONCILER_LAST_TICK] == [(base, 1234.5)]
        assert held[n.RECONCILER_TICK_INTERVAL] == [(base, 0.1)]
        assert held[n.ROLLOUT_STAGE] == [(rollout, 0.0)]
        assert {lb["predictor_name"]: v for lb, v in held[n.ROLLOUT_WEIGHT]} == {
            STABLE_NAME: 90,
            CANDIDATE_NAME: 10,
        }
        (info,) = held[n.ROLLOUT_INFO]
        assert info[0]["candidate"] == CANDIDATE_NAME and info[0]["strategy"] == "canary"
        assert held[n.ROLLOUT_DEADLINE][0][1] > held[n.ROLLOUT_STAGE_ENTERED][0][1]
    rolled_back = seen[-1]
    # the tick that rolled back shows the gates that made it: a series per gate and verdict, 1 for the verdict
    verdicts = {(lb["gate"], lb["verdict"]): v for lb, v in rolled_back[n.GATE_VERDICT]}
    assert verdicts[("success", "fail")] == 1.0 and verdicts[("success", "pass")] == 0.0
    assert sum(v for (g, _), v in verdicts.items() if g == "success") == 1.0
    estimate = {lb["gate"]: v for lb, v in rolled_back[n.GATE_ESTIMATE]}
    assert estimate["success"] == pytest.approx(0.5, abs=0.15)
    # ... and the stable model alone at 100 %, no rollout in progress, one rollback decision counted
    assert {lb["predictor_name"]: v for lb, v in rolled_back[n.ROLLOUT_WEIGHT]} == {STABLE_NAME: 100.0}
    assert n.ROLLOUT_STAGE not in rolled_back and n.ROLLOUT_DEADLINE not in rolled_back
    decisions = {lb["action"]: v for lb, v in rolled_back[n.total(n.RECONCILER_DECISIONS)]}
    assert decisions == {"rollback": 1.0}
    # the next tick has nothing to judge: no gate series are left behind
    run(env, max_ticks=1, sleep=lambda _: None, on_tick=on_tick)
    assert n.GATE_VERDICT not in seen[-1] and n.ROLLOUT_WEIGHT in seen[-1]


def test_a_failed_tick_counts_and_keeps_the_last_picture(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, STABLE)
    env = make_env(repo, fast_policy("canary"), None)
    clock = iter([10.0, 20.0, 30.0])
    metrics = ReconcilerMetrics("local", clock=lambda: next(clock))
    run(env, max_ticks=1, sleep=lambda _: None, on_tick=metrics.record)
    metrics.record(Tick(2, error="github: 502", next_in=0.2))
    s = samples(metrics.registry)
    base = {"namespace": "sluice", "environment": "local"}
    assert s[n.total(n.RECONCILER_TICK_FAILURES)] == [(base, 1.0)]
    assert s[n.RECONCILER_LAST_TICK] == [(base, 20.0)]  # the loop is alive, though the tick failed
    assert {lb["predictor_name"] for lb, _ in s[n.ROLLOUT_WEIGHT]} == {STABLE_NAME}


def test_the_stage_deadline_is_the_bake_or_the_longest_wait_plus_a_window_and_two_ticks() -> None:
    policy = parse_policy(
        {
            **fast_policy("canary"),
            "interval": 10,
            "window": 30,
            "stages": [{"weight": 10, "bake": 600}, {"weight": 50, "bake": 60}],
            "gates": [
                {
                    "name": "a",
                    "metric": "success_rate",
                    "min": 0.9,
                    "no_data": "hold",
                    "no_data_deadline": 300,
                },
                {"name": "b", "metric": "latency", "max": 1, "no_data": "hold", "no_data_deadline": 900},
                {"name": "c", "metric": "accuracy", "min": 0.9, "no_data": "fail", "no_data_deadline": 5000},
            ],
        }
    )
    r = Rollout("canary", "m-c", "m-s", 0, entered_at=1000.0)
    assert (
        stage_deadline(policy, r) == 1000 + 900 + 30 + 20
    )  # b's wait outlasts the 600 s bake; c fails at once
    assert stage_deadline(policy, r.evolve(stage=7)) is None
    ab = parse_policy({**fast_policy("ab"), "interval": 1, "window": 2})
    assert stage_deadline(ab, Rollout("ab", "m-c", "m-s", 0, entered_at=0.0)) == ab.ab.max_duration + 2 + 2


@pytest.mark.timeout(60)
def test_reconcile_watch_serves_its_metrics(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, STABLE)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    policies = tmp_path / "policies"
    policies.mkdir()
    import yaml

    (policies / "local.yaml").write_text(yaml.safe_dump(fast_policy("canary")))
    cmd = [sys.executable, "-m", "sluice", "rollout", "reconcile", "--env", "local", "--repo", str(repo)]
    cmd += ["--policies", str(policies)]
    refused = subprocess.run([*cmd, "--metrics-port", str(port)], env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and "--metrics-port goes with --watch" in refused.stderr
    proc = subprocess.Popen(
        [*cmd, "--watch", "--metrics-port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        body = ""
        while time.monotonic() < deadline:
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
                if n.RECONCILER_LAST_TICK in body:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        families = {f.name: f for f in text_string_to_metric_families(body)}
        beat = families[n.RECONCILER_LAST_TICK].samples[0]
        assert beat.labels == {"namespace": "sluice", "environment": "local"}
        assert abs(beat.value - time.time()) < 10
        assert families[n.RECONCILER_TICK_INTERVAL].samples[0].value == 0.1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.stdout is not None and b'"action": "hold"' in proc.stdout.read()  # stdout stays JSON lines
