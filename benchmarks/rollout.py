"""Rollout engine benchmark: decision latency, tick latency against a real git repository, and the time from
the start of a failing window to the rollback commit on main (scraping a real exporter on 127.0.0.1).

`python -m benchmarks rollout` writes results/rollout.json and results/rollout.md.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

STABLE_DIGEST = "sha256:" + "1" * 64
CAND_DIGEST = "sha256:" + "2" * 64
STABLE, CAND = "m-111111111111", "m-222222222222"


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def bench_decide(n: int = 20000) -> dict[str, float]:
    from rollout.decision import decide
    from rollout.observations import Observations, PredictorStats
    from rollout.policy import parse_policy
    from rollout.state import PredictorState, Rollout, RolloutState

    policy = parse_policy(
        {
            "strategy": "canary",
            "stages": [{"weight": 10, "bake": 60}, {"weight": 50, "bake": 60}],
            "gates": [
                {"name": "success", "metric": "success_rate", "margin": 0.01},
                {"name": "p95", "metric": "latency", "quantile": 0.95, "margin": 0.5},
                {"name": "acc", "metric": "accuracy", "margin": 0.02},
            ],
        }
    )
    buckets = tuple((le, 1000.0 * min(1.0, le * 20)) for le in (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
    stats = PredictorStats(1000, 2, (*buckets, (float("inf"), 1000.0)), 200, 180)
    obs = Observations(60, {STABLE: stats, CAND: stats})
    state = RolloutState(
        "sd",
        (PredictorState(STABLE, 90), PredictorState(CAND, 10)),
        Rollout("canary", CAND, STABLE, 0, 1000.0),
    )
    times = []
    for i in range(n):
        t = time.perf_counter()
        decide(state, policy, obs, 1000.0 + 120 + i)
        times.append(time.perf_counter() - t)
    return {"n": n, "p50_us": _pct(times, 0.5) * 1e6, "p99_us": _pct(times, 0.99) * 1e6}


class _Exporter:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Histogram, start_http_server

        self.reg = CollectorRegistry()
        self.hist = Histogram(
            "seldon_api_executor_server_requests_seconds",
            "requests",
            ["deployment_name", "predictor_name", "model_name", "code"],
            registry=self.reg,
        )
        self.server, self.thread = start_http_server(0, addr="127.0.0.1", registry=self.reg)
        self.url = f"http://127.0.0.1:{self.server.server_port}/metrics"
        self.error_ratio = {STABLE: 0.0, CAND: 0.0}
        self.stop = threading.Event()
        self.driver = threading.Thread(target=self._drive, daemon=True)
        self.driver.start()

    def _drive(self) -> None:
        i = 0
        while not self.stop.wait(0.01):  # ~5 requests per predictor every 10 ms
            for name, ratio in list(self.error_ratio.items()):
                for _ in range(5):
                    i += 1
                    code = "500" if (i % 100) < ratio * 100 else "200"
                    self.hist.labels("sluice-classifier", name, "classifier", code).observe(0.004)

    def close(self) -> None:
        self.stop.set()
        self.driver.join(2)
        self.server.shutdown()
        self.server.server_close()


def _repo(tmp: Path) -> Path:
    from rollout.scm.local import LocalGit
    from rollout.targets.seldon import initial_manifest

    repo = tmp / "gitops"
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    LocalGit(repo).write_initial("local", initial_manifest("local", "models:/m/1", STABLE_DIGEST), "init")
    return repo


def _env(repo: Path, window: float, metrics_url: str | None, bake: float = 3600) -> Any:
    from rollout.metrics.scrape import ScrapeProvider
    from rollout.policy import parse_policy
    from rollout.reconciler import Environment
    from rollout.scm.local import LocalGit
    from rollout.targets.seldon import SeldonDeploymentV1

    policy = parse_policy(
        {
            "strategy": "canary",
            "interval": 0.5,
            "window": window,
            "stages": [{"weight": 10, "bake": bake}, {"weight": 50, "bake": bake}],
            "gates": [{"name": "success", "metric": "success_rate", "min": 0.98, "min_sample": 50}],
        }
    )
    return Environment(
        "local",
        LocalGit(repo),
        SeldonDeploymentV1(),
        policy,
        ScrapeProvider(metrics_url) if metrics_url else None,
    )


def bench_ticks(tmp: Path, n: int = 30) -> dict[str, float]:
    """A hold tick (read, parse, decide; no metrics) and an advancing tick (plus branch, commit, merge)."""
    from rollout.reconciler import start, tick

    repo = _repo(tmp)
    env = _env(repo, 0, None)
    start(env, "models:/m/2", "models:/m/2", CAND_DIGEST)
    holds, decides = [], []
    for _ in range(n):
        t = time.perf_counter()
        res = tick(env)
        holds.append(time.perf_counter() - t)
        decides.append(res.decide_seconds)
    writes = []
    for i in range(n):
        # a start (branch + commit + CAS merge) then an abort: two writes per round
        t = time.perf_counter()
        from rollout.reconciler import abort

        abort(env)
        writes.append(time.perf_counter() - t)
        start(env, f"models:/m/{i + 3}", f"models:/m/{i + 3}", "sha256:" + f"{i + 3:064x}")
    return {
        "hold_tick_p50_ms": statistics.median(holds) * 1e3,
        "hold_tick_p99_ms": _pct(holds, 0.99) * 1e3,
        "decide_in_tick_p50_us": statistics.median(decides) * 1e6,
        "write_tick_p50_ms": statistics.median(writes) * 1e3,
        "write_tick_p99_ms": _pct(writes, 0.99) * 1e3,
        "commits_on_main": int(
            subprocess.run(
                ["git", "rev-list", "--count", "main"], cwd=repo, capture_output=True, text=True, check=True
            ).stdout
        ),
    }


def bench_rollback(tmp: Path, window: float, interval: float, rounds: int = 4) -> dict[str, float]:
    """Candidate turns bad at t0 (20 % errors); time until the rollback commit is on main, with a reconciler
    ticking every `interval` s over a `window` s scrape."""
    from rollout.reconciler import start, tick

    results = []
    exporter = _Exporter()
    try:
        for r in range(rounds):
            repo = _repo(tmp / f"rb{window}-{r}")
            env = _env(repo, window, exporter.url)
            exporter.error_ratio[CAND] = 0.0
            start(env, "models:/m/2", "models:/m/2", CAND_DIGEST)
            stop = threading.Event()
            rolled: list[float] = []

            def loop(env: Any = env, stop: threading.Event = stop, rolled: list[float] = rolled) -> None:
                while not stop.is_set():
                    res = tick(env)
                    if res.wrote and res.decision.action.value == "rollback":
                        rolled.append(time.perf_counter())
                        return
                    stop.wait(interval)

            th = threading.Thread(target=loop)
            th.start()
            # a healthy period, ending at a different point of the tick cycle (window + interval) each round
            time.sleep((window + interval) * (1.2 + r / rounds))
            t0 = time.perf_counter()
            exporter.error_ratio[CAND] = 0.2
            th.join(30)
            stop.set()
            if rolled:
                results.append(rolled[0] - t0)
    finally:
        exporter.close()
    return {
        "window_s": window,
        "interval_s": interval,
        "rounds": len(results),
        "mean_s": statistics.mean(results) if results else float("nan"),
        "max_s": max(results) if results else float("nan"),
    }


def main(results_dir: Path) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        out: dict[str, Any] = {
            "decide": bench_decide(),
            "ticks": bench_ticks(tmp),
            "rollback": [bench_rollback(tmp, 1.0, 1.0), bench_rollback(tmp, 2.0, 5.0)],
        }
    (results_dir / "rollout.json").write_text(json.dumps(out, indent=2))
    dec, ticks = out["decide"], out["ticks"]
    lines = [
        "# Rollout engine",
        "",
        "| measure | value |",
        "|---|---|",
        f"| decide() p50 / p99 (pure, 3 gates) | {dec['p50_us']:.1f} us / {dec['p99_us']:.1f} us |",
        f"| hold tick (git read + parse + decide) p50 / p99 | {ticks['hold_tick_p50_ms']:.1f} ms / {ticks['hold_tick_p99_ms']:.1f} ms |",
        f"| writing step (branch, commit, CAS merge) p50 / p99 | {ticks['write_tick_p50_ms']:.1f} ms / {ticks['write_tick_p99_ms']:.1f} ms |",
    ]
    for rb in out["rollback"]:
        lines.append(
            f"| failing window -> rollback commit (window {rb['window_s']:g} s, interval {rb['interval_s']:g} s) "
            f"mean / max of {rb['rounds']} | {rb['mean_s']:.2f} s / {rb['max_s']:.2f} s |"
        )
    lines += [
        "",
        "Flagger for comparison (documented): rollback after interval x threshold, default 60 s x 1, minimum "
        "interval 10 s; its rollback is not written to Git.",
    ]
    (results_dir / "rollout.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(__file__).resolve().parent / "results")
