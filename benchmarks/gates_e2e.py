"""End-to-end gate benchmark: real rollouts through `sluice up`, repeated, with their outcomes counted.

One `sluice up` serves a SeldonDeployment of real predictor processes behind the gateway, in a throwaway Git
repository holding the local environment and policies/local.yaml. A traffic generator replays held-out rows
at `RATE` requests per second, each answer followed by its ground-truth feedback. The reconciler runs in this
process, reads the gateway's /metrics and writes every step to Git. Two candidates:

- identical: the stable model under a new digest (a rollback is wrong);
- worse: a logistic regression five accuracy points worse on the rows the traffic replays (a promotion is
  wrong); after its first rollback it is quarantined, so later runs force it.

For each strategy (canary, A/B test, shadow) and candidate, `runs` rollouts one after another (the env var
BENCH_GATES_E2E_RUNS, default 5) are counted: promoted, rolled back, undecided (no decision within the
timeout: the rollout is aborted so the next one can start), the median and max time to decide, and the
commits each rollout wrote to the environment's branch. `python -m benchmarks gates_e2e` writes
results/gates_e2e.json and gates_e2e.md. The simulated counterpart, over thousands of rollouts, is
`python -m benchmarks gates`.

tests/e2e/test_gates_e2e.py drives the same world and the same rollouts and asserts each outcome.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from deployment import seldon
from model.bundle import Bundle, compute_digest

REPO = Path(__file__).resolve().parents[1]
ENV = "local"
MANIFEST = f"gitops/environments/{ENV}/seldondeployment.yaml"
RATE = 80.0  # client requests per second, each followed by its feedback
TIMEOUT = 420.0  # seconds a rollout may take to decide before it counts as undecided
STRATEGIES = ("canary", "ab", "shadow")
CANDIDATES = ("identical", "worse")
EXPECTED = {"identical": "promoted", "worse": "rolled-back"}
RUNS_VAR = "BENCH_GATES_E2E_RUNS"


def identical_copy(bundle: Path, out: Path, note: str) -> Path:
    """The same model under a new digest: the bundle's files plus one note, the digest recomputed."""
    shutil.copytree(bundle, out)
    (out / "REBUILD.txt").write_text(f"the same model, rebuilt: {note}\n")
    meta = json.loads((out / "metadata.json").read_text())
    meta["digest"] = compute_digest(out)
    (out / "metadata.json").write_text(json.dumps(meta, indent=2))
    Bundle.open(out)  # verifies the digest
    return out


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def _routes(admin_port: int) -> list[dict[str, Any]]:
    try:
        r = httpx.get(f"http://127.0.0.1:{admin_port}/routes", timeout=2)
        return list(r.json().get("predictors", [])) if r.status_code == 200 else []
    except (httpx.HTTPError, ValueError):
        return []


@dataclass
class World:
    """A running `sluice up` of the local environment, its Git repository, the two models and the traffic."""

    repo: Path
    port: int
    admin_port: int
    stable: Path
    worse: Path
    gateway: subprocess.Popen[bytes]
    traffic: Any  # demo.traffic.TrafficGenerator
    copies: int = 0

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}/metrics"

    def identical(self) -> Path:
        """A fresh copy of the stable model under a new digest (never quarantined)."""
        self.copies += 1
        return identical_copy(self.stable, self.repo.parent / f"identical-{self.copies}", str(self.copies))

    def candidate(self, kind: str) -> Path:
        if kind not in EXPECTED:
            raise ValueError(f"candidate kind {kind!r}: expected one of {', '.join(EXPECTED)}")
        return self.identical() if kind == "identical" else self.worse

    def manifest(self) -> str:
        """The environment's manifest as committed on main."""
        return git(self.repo, "show", f"main:{MANIFEST}")

    def quarantined(self, candidate: Path) -> bool:
        return Bundle.open(candidate).digest in self.manifest()

    def commits(self) -> int:
        return int(git(self.repo, "rev-list", "--count", "main").strip())

    def wait_converged(self, timeout: float = 120.0) -> None:
        """Until the gateway routes exactly what the manifest on disk says, every predictor alive."""
        path = self.repo / MANIFEST
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.gateway.poll() is not None:
                raise RuntimeError(f"sluice up exited with {self.gateway.returncode}")
            want = {p.name: (p.traffic, p.shadow) for p in seldon.read(path).predictors}
            have = {
                p["name"]: (int(p["traffic"]), bool(p["shadow"]))
                for p in _routes(self.admin_port)
                if p.get("alive")
            }
            if have == want:
                return
            time.sleep(0.2)
        raise TimeoutError(f"the gateway did not converge on {path} in {timeout:.0f}s")

    @classmethod
    @contextmanager
    def up(cls, root: Path, bundle: Path) -> Iterator[World]:
        """Build the world under `root` around the stable `bundle`, run it, and stop it on exit."""
        from demo.run import free_port
        from demo.traffic import TrafficGenerator
        from model.data import contract_for, prepare, read_split
        from model.layout import Layout
        from model.params import Params
        from model.pipeline import train_bundle

        root.mkdir(parents=True, exist_ok=True)
        # five accuracy points worse on the held-out rows the traffic replays (0.937 against 0.986)
        worse = train_bundle(
            root / "worse-work",
            root / "worse",
            Params.model_validate({"train": {"logistic_regression": {"C": 0.01}}}),
        ).path
        data = Layout.at(root / "data-work")
        prepare(data, Params().data)
        X, y = read_split(data.test_csv, contract_for(data, Params().data))

        repo = root / "repo"
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        git(repo, "config", "user.email", "e2e@sluice.invalid")
        git(repo, "config", "user.name", "e2e")
        (repo / "policies").mkdir()
        shutil.copy(REPO / "policies" / f"{ENV}.yaml", repo / "policies" / f"{ENV}.yaml")
        stable = identical_copy(bundle, root / "stable", "stable")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        init = [sys.executable, "-m", "sluice", "rollout", "init", "--env", ENV]
        subprocess.run(
            [*init, "--model", str(stable), "--repo", str(repo)], check=True, env=env, capture_output=True
        )
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "the local environment and its policy")
        port, admin_port = free_port(), free_port()
        up = [sys.executable, "-m", "sluice", "up", f"gitops/environments/{ENV}"]
        with (root / "sluice-up.log").open("wb") as log:
            gateway = subprocess.Popen(
                [*up, "--port", str(port), "--admin-port", str(admin_port)],
                cwd=repo,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            # independent draws from the held-out rows (a long random order, not a short cycle)
            order = np.random.default_rng(17).integers(0, len(X), size=60_000)
            traffic = TrafficGenerator(
                f"http://127.0.0.1:{port}",
                X.to_numpy()[order],
                y.to_numpy()[order],
                list(X.columns),
                rate=RATE,
                feedback_delay=0.2,
            )
            world = cls(repo, port, admin_port, stable, worse, gateway, traffic)
            try:
                world.wait_converged()
                traffic.start()
                yield world
            finally:
                traffic.stop()
                if gateway.poll() is None:
                    os.killpg(gateway.pid, signal.SIGINT)
                    try:
                        gateway.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        os.killpg(gateway.pid, signal.SIGKILL)
                        gateway.wait()


@dataclass
class Outcome:
    status: str  # promoted, rolled-back or undecided
    seconds: float
    reason: str
    gates: list[tuple[str, ...]] = field(default_factory=list)
    commits: int = 0  # commits the rollout wrote to main, from its start to its decision


def rollout(world: World, strategy: str, candidate: Path, timeout: float = TIMEOUT) -> Outcome:
    """Start a rollout of `candidate` (forced if it is quarantined) and tick the reconciler until it promotes
    or rolls back. Undecided after `timeout` seconds: the rollout is aborted, so the next one can start."""
    from rollout.reconciler import abort, start, tick
    from rollout.run import Options, build_environment, candidate_model

    env = build_environment(Options(env=ENV, repo=world.repo, metrics_url=world.metrics_url))
    model_uri, digest = candidate_model(str(candidate), world.repo)
    force = world.quarantined(candidate)  # a candidate rolled back once must be forced
    before = world.commits()
    began = time.monotonic()
    start(env, str(candidate), model_uri, digest, strategy, force=force)
    world.wait_converged()
    last = None
    while time.monotonic() - began < timeout:
        res = tick(env)
        last = res.decision
        if os.environ.get("SLUICE_E2E_TRACE"):
            print(
                f"{time.monotonic() - began:6.1f}s {res.decision.action.value}: {res.decision.reason[:150]}"
            )
            for g in res.decision.gates:
                print("        ", g.row())
        if res.wrote:
            world.wait_converged()
            state = env.target.state(env.scm.read(ENV).text)
            assert state.rollout is not None
            if not state.rollout.active:
                return Outcome(
                    state.rollout.status,
                    time.monotonic() - began,
                    res.decision.reason,
                    [g.row() for g in res.decision.gates],
                    world.commits() - before,
                )
    seconds = time.monotonic() - began
    abort(env, "gates_e2e: no decision in time")
    world.wait_converged()
    reason = f"{strategy} of {candidate.name}: no decision in {timeout:.0f}s; last: {last}"
    return Outcome("undecided", seconds, reason, [], world.commits() - before)


# the benchmark -------------------------------------------------------------------------------------------------
def summarize(strategy: str, candidate: str, outcomes: list[Outcome]) -> dict[str, Any]:
    decided = [o.seconds for o in outcomes if o.status != "undecided"]
    commits = [o.commits for o in outcomes]
    return {
        "strategy": strategy,
        "candidate": candidate,
        "expected": EXPECTED[candidate],
        "runs": len(outcomes),
        "promoted": sum(o.status == "promoted" for o in outcomes),
        "rolled_back": sum(o.status == "rolled-back" for o in outcomes),
        "undecided": sum(o.status == "undecided" for o in outcomes),
        "median_s": statistics.median(decided) if decided else None,
        "max_s": max(decided) if decided else None,
        "commits": sum(commits),
        "commits_per_rollout_median": statistics.median(commits) if commits else None,
        "outcomes": [{k: v for k, v in asdict(o).items() if k != "gates"} for o in outcomes],
    }


def runs_from_env() -> int:
    raw = os.environ.get(RUNS_VAR, "5")
    try:
        runs = int(raw)
    except ValueError:
        raise ValueError(f"{RUNS_VAR}={raw!r}: expected a whole number of runs") from None
    if runs < 1:
        raise ValueError(f"{RUNS_VAR}={raw!r}: expected at least 1 run")
    return runs


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} s"


def markdown(data: dict[str, Any]) -> str:
    load = data["load_average_1m"]
    lines = [
        "# Gates end to end: real rollouts through `sluice up`, counted",
        "",
        f"{data['runs']} run(s) per strategy and candidate (`{RUNS_VAR}={data['runs']}`, "
        f"`python -m benchmarks gates_e2e`), one after another through one `sluice up`, "
        f"{data['seconds'] / 60:.0f} min in all, on {data['cpus']} CPUs, 1-minute load average "
        f"{load['before']:.1f} before and {load['after']:.1f} after (other work on the machine slows the "
        f"predictors and the reconciler). Policy: {data['policy']}; traffic {data['rate']:g} requests/s of "
        "held-out rows, each followed by its ground-truth feedback. *identical*: the stable model under a new "
        "digest (a rollback is wrong); *worse*: five accuracy points worse (a promotion is wrong). "
        f"*undecided*: no decision in {data['timeout_s']:.0f} s (aborted). Time to decide: from the start "
        "commit until the gateway routes the final manifest. Commits: written to main by the rollouts.",
        "",
        "| strategy | candidate | runs | promoted | rolled back | undecided | wrong | median time | max time "
        "| commits (median per rollout) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["results"]:
        wrong = (
            r["runs"] - r["undecided"] - (r["promoted"] if r["expected"] == "promoted" else r["rolled_back"])
        )
        lines.append(
            f"| {r['strategy']} | {r['candidate']} | {r['runs']} | {r['promoted']} | {r['rolled_back']} "
            f"| {r['undecided']} | **{wrong}** | {_seconds(r['median_s'])} | {_seconds(r['max_s'])} "
            f"| {r['commits']} ({r['commits_per_rollout_median']:g}) |"
        )
    return "\n".join(lines) + "\n"


def main(
    results_dir: Path,
    runs: int | None = None,
    pairs: Iterable[tuple[str, str]] | None = None,
    bundle: Path | None = None,
) -> dict[str, Any]:
    """Run `runs` rollouts (default: BENCH_GATES_E2E_RUNS, else 5) of each (strategy, candidate) pair (default:
    every strategy with both candidates) through one `sluice up`; write gates_e2e.json and gates_e2e.md."""
    runs = runs_from_env() if runs is None else runs
    todo = list(pairs) if pairs is not None else [(s, c) for s in STRATEGIES for c in CANDIDATES]
    for strategy, candidate in todo:
        if strategy not in STRATEGIES or candidate not in CANDIDATES:
            raise ValueError(
                f"({strategy!r}, {candidate!r}): expected a strategy of {STRATEGIES}, a candidate of {CANDIDATES}"
            )
    load_before, began = os.getloadavg()[0], time.monotonic()
    outcomes: dict[tuple[str, str], list[Outcome]] = {pair: [] for pair in todo}
    with tempfile.TemporaryDirectory(prefix="gates-e2e-") as d:
        root = Path(d)
        if bundle is None:
            from model.pipeline import train_bundle

            bundle = train_bundle(root / "stable-work", root / "stable-bundle").path
        with World.up(root / "world", bundle) as world:
            total, done = runs * len(todo), 0
            for run in range(runs):
                for strategy, candidate in todo:
                    o = rollout(world, strategy, world.candidate(candidate))
                    outcomes[(strategy, candidate)].append(o)
                    done += 1
                    print(
                        f"[gates_e2e] {done}/{total} run {run + 1} {strategy} {candidate}: {o.status} "
                        f"in {o.seconds:.0f}s, {o.commits} commits",
                        flush=True,
                    )
    data = {
        "runs": runs,
        "policy": f"policies/{ENV}.yaml",
        "rate": RATE,
        "timeout_s": TIMEOUT,
        "seconds": time.monotonic() - began,
        "cpus": os.cpu_count(),
        "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
        "results": [summarize(s, c, outcomes[(s, c)]) for s, c in todo],
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "gates_e2e.json").write_text(json.dumps(data, indent=2) + "\n")
    text = markdown(data)
    (results_dir / "gates_e2e.md").write_text(text)
    print(text)
    return data
