"""The demo's four acts against a scratch clone, with live traffic, and the report at the end.

Act 1  the stable model: `dvc repro` trains it, it becomes `champion`, `sluice up` serves it, traffic starts.
Act 2  a better candidate (a params change and a new `dvc repro`) is promoted by a canary, stage by stage.
Act 3  a broken candidate (trained on half-flipped labels: it passes no offline gate, so it is packaged
       straight from the Python API, as a bad artifact would slip in) starts a canary and is rolled back.
Act 4  the same broken candidate (quarantined by Act 3's rollback, so started with --force) through shadow,
       A/B and blue/green in turn: each is caught by its gates.
Act 5  the client's traffic drifts; `sluice loop`'s steps retrain on the labelled live data, and the candidate goes
       through staging and production, each with its own `sluice up` (demo/act5.py); production's approval is
       the one human step, which the demo grants.
Every traffic change is a commit in the scratch repository; the reconciler runs in this process, ticking on
the policy's interval and observing the router's /metrics (on its admin port).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from demo.act5 import Act5, Act5Result
from demo.report import (
    GATE_COLUMNS,
    ActResult,
    DecisionRecord,
    Step,
    commit_rows,
    gate_record,
    manifest_history,
    measure,
    plot,
    retime,
    strategies_table,
    write_html,
    write_requests,
    write_summary,
)
from demo.scratch import Scratch, make_scratch
from demo.traffic import TrafficGenerator, TrafficStats
from deployment import seldon, wire
from deployment.names import predictor_name

if TYPE_CHECKING:
    from rollout.reconciler import TickResult

ENV = "local"
MANIFEST_DIR = Path("gitops/environments/local")


class DemoError(RuntimeError):
    """The demo could not go on; the message says at which step and why."""


@dataclass
class Settings:
    fast: bool = False
    out: Path = Path("reports/demo")
    rate: float = 50.0

    @property
    def bake(self) -> float:
        return 3.0 if self.fast else 4.0

    @property
    def window(self) -> float:
        return 2.5 if self.fast else 3.0

    @property
    def act_timeout(self) -> float:
        # a promotion needs enough evidence at every stage: about a minute at 50 requests/s (fast)
        return 150.0 if self.fast else 240.0


def demo_policy(s: Settings, strategy: str = "canary") -> dict[str, Any]:
    """The local policy for one act: policies/local.yaml's schema, with bake times of seconds.

    Every gate asks whether the candidate is worse than the stable model by more than its margin, from every
    observation since the stage began. Health gates (success rate, latency) guard every strategy. Accuracy
    against the stable model judges a canary and a blue/green warm-up; disagreement with the live answers
    judges a shadow; an A/B test is judged by its own sequential test on accuracy, so it carries no accuracy
    gate. The margins are wide (the demo's traffic is small and its acts short); benchmarks/results/gates.md
    gives their error rates at the demo's 50 requests/s.
    """
    hold = {"no_data": "hold", "no_data_deadline": "60s", "confidence": 0.95}
    health = [
        {"name": "success-rate", "metric": "success_rate", "margin": 0.05, **hold},
        {"name": "p90-latency-vs-stable", "metric": "latency", "quantile": 0.9, "margin": 1.0, **hold},
    ]
    accuracy = [{"name": "accuracy-vs-stable", "metric": "accuracy", "margin": 0.1, **hold}]
    judges = {
        "canary": accuracy,
        "bluegreen": accuracy,
        "shadow": [{"name": "shadow-agreement", "metric": "disagreement", "margin": 0.1, **hold}],
        "ab": [],
    }
    return {
        "strategy": strategy,
        "interval": 0.5,
        "window": s.window,
        "warmup": 1.0,
        "on_failure": "rollback",
        "stages": [{"weight": 20, "bake": s.bake}, {"weight": 50, "bake": s.bake}],
        "gates": health + judges[strategy],
        "shadow": {"mirror": 100, "duration": 2 * s.bake, "then": "promote"},
        "ab": {
            "split": 50,
            "metric": "accuracy",
            "margin": 0.05,
            "min_sample": 40,
            "significance": 0.05,
            "test": "msprt",
            "msprt_tau": 0.05,
            "max_duration": "60s",
            "sticky_key": wire.STICKY_HEADER,
        },
        "bluegreen": {"warmup": s.bake, "switch": [100], "step_bake": s.bake, "blue_bake": s.bake},
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Gateway:
    """One environment's `sluice up`: its process, ports, manifest folder and log."""

    env: str
    manifest_dir: Path
    process: subprocess.Popen[bytes]
    port: int
    admin_port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}/metrics"


@dataclass
class LiveState:
    act: str = "starting"
    strategy: str = ""
    step: str = ""
    weights: dict[str, str] = field(default_factory=dict)
    decision: str = ""
    gates: list[tuple[str, ...]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)


class Demo:
    def __init__(self, source: Path, settings: Settings, console: Console | None = None):
        self.source = source.resolve()
        self.s = settings
        self.out = settings.out.resolve()
        self.console = console or Console(soft_wrap=True)
        self.live = LiveState()
        self.acts: list[ActResult] = []
        self.t0 = time.time()
        self.gateway: Gateway | None = None  # the local environment's, Acts 1-4
        self.gateways: list[Gateway] = []  # every `sluice up` started, stopped at the end
        self.traffic: TrafficGenerator | None = None
        self.generators: list[TrafficGenerator] = []
        self.watching: tuple[Gateway, TrafficGenerator] | None = None  # what the live view shows
        self.act5: Act5Result | None = None
        self.replay: TrafficGenerator | None = None  # staging's copy of the client's traffic (Act 5)
        self.replay_act = "Act 5 · staging"
        self.model_name = "sluice-classifier"

    # the whole run -----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        scratch = self._step(
            "scratch clone of the repository", lambda: make_scratch(self.source, self.out / "work")
        )
        self.scratch = scratch
        base = scratch.head()
        try:
            stable_uri = self.act1(scratch)
            self.act2(scratch, stable_uri)
            broken = self.broken_candidate()
            self.rollout_act("Act 3", "canary", broken, expected="rolled back")
            for strategy in ("shadow", "ab", "bluegreen"):
                # Act 3 quarantined the broken model: the demo starts it again on purpose, with --force
                self.rollout_act(f"Act 4 · {strategy}", strategy, broken, expected="rolled back", force=True)
            self.act5 = Act5(self).run()
        finally:
            self.shutdown()
        scratch.git("push", "-q", "origin", "--all", check=False)
        return self.report(scratch, base)

    def _step(self, title: str, fn: Callable[[], Any]) -> Any:
        started = time.time()
        with self.console.status(f"[bold]{title}[/] …"):
            result = fn()
        self.console.print(f"[green]✓[/] {title} ({time.time() - started:.1f} s)", highlight=False)
        return result

    # act 1 -----------------------------------------------------------------------------------------------
    def act1(self, scratch: Scratch) -> str:
        self.console.rule("Act 1 · the stable model")
        self._set_params(
            scratch, {"train": {"logistic_regression": {"C": 0.05}}}, "params: a baseline model (C=0.05)"
        )
        self._step("dvc repro: prepare, validate, train, evaluate, package", lambda: scratch.dvc("repro"))
        from model.registry import CHALLENGER, Registry

        registry = Registry(scratch.root)
        v1 = registry.alias(self.model_name, CHALLENGER)
        if v1 is None:
            raise DemoError("dvc repro registered no challenger")
        registry.promote(self.model_name, v1.version)
        uri = f"models:/{self.model_name}/{v1.version}"
        scratch.sluice("rollout", "init", "--env", ENV, "--model", uri, "--force", check=False)
        self._write_policy(scratch, "canary")
        scratch.git("add", "-A", str(MANIFEST_DIR))
        scratch.git(
            "commit", "-qm", "demo: the local environment serves the champion; a fast policy", check=False
        )
        self.console.print(f"champion: {uri} ({v1.digest})", highlight=False)
        self.gateway = self.start_gateway(ENV, MANIFEST_DIR)
        self.traffic = self.start_traffic(scratch, self.gateway, self.s.rate)
        self.traffic_act("Act 1", 2.0 if self.s.fast else 3.0)
        return uri

    def traffic_act(self, name: str, seconds: float, traffic: TrafficGenerator | None = None) -> None:
        traffic = traffic or self.traffic
        assert traffic is not None
        traffic.set_act(name)
        started = time.time()
        time.sleep(seconds)
        stats = traffic.stats(act=name)
        self.console.print(
            f"steady traffic: {stats.requests} requests in {time.time() - started:.1f} s, "
            f"{stats.failures} failed",
            highlight=False,
        )

    # act 2 -----------------------------------------------------------------------------------------------
    def act2(self, scratch: Scratch, stable_uri: str) -> None:
        self.console.rule("Act 2 · a better candidate, by canary")
        self._set_params(
            scratch, {"train": {"logistic_regression": {"C": 1.0}}}, "params: C=1.0 (a better model)"
        )
        self._step("dvc repro: the candidate", lambda: scratch.dvc("repro"))
        from model.registry import CHALLENGER, CHAMPION, Registry

        registry = Registry(scratch.root)
        v2 = registry.alias(self.model_name, CHALLENGER)
        if v2 is None:
            raise DemoError("dvc repro registered no challenger for Act 2")
        act = self.rollout_act(
            "Act 2", "canary", f"models:/{self.model_name}/{v2.version}", expected="promoted"
        )
        champion = registry.alias(self.model_name, CHAMPION)
        act.decided_by.append(f"MLflow champion -> version {champion.version if champion else '?'}")

    def broken_candidate(self) -> str:
        from model.params import Params
        from model.pipeline import train_bundle

        work = self.out / "work" / "candidates" / "broken"
        params = Params.model_validate({"data": {"label_noise": 0.5}})
        bundle = self._step(
            "a broken candidate: trained on half-flipped labels",
            lambda: train_bundle(work, work / "bundle", params),
        )
        return str(bundle.path)

    # one rollout, reconciled in this process ---------------------------------------------------------------
    def environment(self, gw: Gateway) -> Any:
        from rollout.run import Options, build_environment

        return build_environment(Options(env=gw.env, repo=self.scratch.root, metrics_url=gw.metrics_url))

    def rollout_act(
        self, name: str, strategy: str, candidate_uri: str, expected: str, force: bool = False
    ) -> ActResult:
        from rollout.reconciler import start
        from rollout.run import candidate_model

        assert self.traffic is not None and self.gateway is not None
        gw, traffic = self.gateway, self.traffic
        self.console.rule(f"{name} · {strategy}")
        if self._write_policy(self.scratch, strategy):
            self.scratch.git("commit", "-qm", f"policies/{ENV}.yaml: the demo's {strategy} policy")
        env = self.environment(gw)
        model_uri, digest = candidate_model(candidate_uri, self.scratch.root)
        stable = env.target.state(env.scm.read(ENV).text).stable_name()
        act = ActResult(name, strategy, predictor_name(digest), stable, expected)
        self.acts.append(act)
        traffic.set_act(name)
        act.started = time.time()
        self.live = LiveState(act=name, strategy=strategy)
        result = start(env, candidate_uri, model_uri, digest, strategy, force=force)
        self._note(result, act, act.started)
        if strategy == "bluegreen":
            # Smoke traffic pinned to green (at 0 %) once the gateway routes to it.
            self._wait_converged(gw)
            traffic.smoke_target = act.candidate
        return self.reconcile(act, env, gw, traffic)

    def reconcile(
        self,
        act: ActResult,
        env: Any,
        gw: Gateway,
        traffic: TrafficGenerator,
        approve_as: str | None = None,
    ) -> ActResult:
        """Tick `env` until its rollout ends (or the act times out: then abort). A step that waits for a human is
        approved at once by `approve_as` (the demo says so); without it, the act ends there."""
        from rollout.decision import Action
        from rollout.reconciler import RolloutError, abort, approve
        from rollout.run import Tick, ended, rollout_after, run

        deadline = act.started + self.s.act_timeout
        timed_out = False
        self.watching = (gw, traffic)

        def on_tick(step: Tick) -> None:
            result = step.result
            if result is None:
                self.live.decision = step.skipped or step.error
                return
            self._note(result, act, result.decided_at)
            action = result.decision.action
            if result.wrote and action == Action.AWAIT_APPROVAL and approve_as is not None:
                act.approval_requested_at = time.time()
                self.console.print(
                    f"[bold yellow]human step[/] {env.name} asks for approval of its promotion: "
                    f"{approve_as} approves it now",
                    highlight=False,
                )
                approved = approve(env, approve_as)
                act.approved_at = time.time()
                act.approved_by = approve_as
                self._note(approved, act, act.approved_at)
                result, action = approved, approved.decision.action
            if result.wrote and action in (Action.ROLLBACK, Action.PROMOTE):
                traffic.smoke_target = None
                if action == Action.ROLLBACK:
                    act.stable_at = self._wait_gone(act.candidate, gw)
                # The reason names the failing gate or the A/B test's verdict; a promotion lists its gates.
                passed = [g.gate for g in result.decision.gates if g.verdict == "pass"]
                act.decided_by.append(
                    result.decision.reason
                    + (f" (passing: {', '.join(passed)})" if action == Action.PROMOTE and passed else "")
                )

        def until(result: TickResult) -> bool:
            nonlocal timed_out
            r = rollout_after(result)
            if ended(result):
                act.outcome = {"promoted": "promoted", "rolled-back": "rolled back"}.get(
                    r.status if r is not None else "", r.status if r is not None else "ended"
                )
                return True
            if r is not None and r.status in ("frozen", "paused"):
                act.outcome = r.status
                return True
            timed_out = time.time() > deadline
            return timed_out

        with Live(get_renderable=self._render, console=self.console, refresh_per_second=4, transient=True):
            run(env, on_tick=on_tick, until=until)
            if timed_out:
                with contextlib.suppress(RolloutError):
                    self._note(abort(env, "sluice demo (act timed out)"), act, time.time())
                act.outcome = "timed out (aborted)"
        traffic.smoke_target = None
        act.converged_at = self._wait_converged(gw)
        act.ended = time.time()
        mark = "[green]✓[/]" if act.outcome == act.expected else "[red]✗[/]"
        self.console.print(
            f"{mark} {act.name}: {act.strategy} of {act.candidate} {act.outcome} "
            f"(expected: {act.expected}) in {act.ended - act.started:.1f} s",
            highlight=False,
        )
        return act

    def _note(self, result: Any, act: ActResult, decided_at: float) -> None:
        d = result.decision
        self.live.decision = f"{d.action.value}: {d.reason}"
        self.live.step = d.step or self.live.step
        self.live.gates = [g.row() for g in d.gates]
        if result.wrote:
            gates = [gate_record(g) for g in d.gates]
            act.decisions.append(
                DecisionRecord(
                    at=time.time(),
                    decided_at=decided_at,
                    act=act.name,
                    action=d.action.value,
                    step=d.step,
                    reason=d.reason,
                    commit=result.outcome.revision,
                    gates=gates,
                )
            )
            line = f"[dim]{time.time() - self.t0:6.1f}s[/] commit [cyan]{d.action.value}[/] {d.step} — {d.reason}"
            self.console.print(line, highlight=False)

    def _render(self) -> Group:
        table = Table(title=f"{self.live.act} · {self.live.strategy} · {self.live.step}", expand=False)
        table.add_column("predictor")
        table.add_column("weight", justify="right")
        table.add_column("answered (last 5 s)", justify="right")
        gw, traffic = self.watching or (self.gateway, self.traffic)
        assert traffic is not None
        recent = traffic.stats(since=time.time() - 5)
        routes = self._routes(gw)
        for p in routes:
            weight = "shadow" if p.get("shadow") else f"{p.get('traffic')}%"
            table.add_row(p["name"], weight, str(recent.by_predictor.get(p["name"], 0)))
        gates = Table(*GATE_COLUMNS, title="gates (last tick)")
        for row in self.live.gates:
            gates.add_row(*row)
        total = traffic.stats()
        footer = (
            f"client requests {total.requests}, failed {total.failures}, feedback {total.feedback_sent} · "
            f"last decision: {self.live.decision[:140]}"
        )
        return Group(Panel(table), gates, footer)

    # processes -------------------------------------------------------------------------------------------
    def start_gateway(self, env: str, manifest_dir: Path, *extra: str) -> Gateway:
        """`sluice up` for one environment's manifest folder, waited for until it routes what the manifest says."""
        (gw,) = self.start_gateways((env, manifest_dir, extra))
        return gw

    def start_gateways(self, *specs: tuple[str, Path, tuple[str, ...]]) -> list[Gateway]:
        """`sluice up` for each (environment, manifest folder, extra flags), started together, then waited for."""
        logs = self.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        started = []
        for env, manifest_dir, extra in specs:
            port, admin_port = free_port(), free_port()
            log = logs / ("sluice-up.log" if env == ENV else f"sluice-up-{env}.log")
            cmd = [sys.executable, "-m", "sluice", "up", str(manifest_dir), "--port", str(port),
                   "--admin-port", str(admin_port), "--log-dir", str(logs / env), *extra]  # fmt: skip
            with log.open("wb") as f:
                process = subprocess.Popen(
                    cmd,
                    cwd=self.scratch.root,
                    env=self.scratch.env,
                    stdout=f,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            gw = Gateway(env, manifest_dir, process, port, admin_port, log)
            self.gateways.append(gw)
            started.append(gw)
        for gw in started:
            self._step(
                f"sluice up {gw.manifest_dir} on 127.0.0.1:{gw.port}", partial(self._wait_converged, gw)
            )
        return started

    def _routes(self, gw: Gateway | None = None) -> list[dict[str, Any]]:
        gw = gw or self.gateway
        if gw is None:
            return []
        try:
            resp = httpx.get(f"http://127.0.0.1:{gw.admin_port}/routes", timeout=2)
            return list(resp.json().get("predictors", [])) if resp.status_code == 200 else []
        except (httpx.HTTPError, ValueError):
            return []

    def _wait_gone(self, predictor: str, gw: Gateway, timeout: float = 30.0) -> float | None:
        """When the gateway stopped routing live traffic to `predictor` (polled every 20 ms)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            routes = self._routes(gw)
            if (
                routes
                and not any(p["name"] == predictor and p["traffic"] and not p["shadow"] for p in routes)
                and not any(p["name"] == predictor and p["shadow"] for p in routes)
            ):
                return time.time()
            time.sleep(0.02)
        return None

    def _wait_converged(self, gw: Gateway, timeout: float = 90.0) -> float:
        """Until the gateway routes exactly the predictors the manifest on disk names, all alive; when it did."""
        path = self.scratch.root / gw.manifest_dir / "seldondeployment.yaml"
        deadline = time.time() + timeout
        while time.time() < deadline:
            if gw.process.poll() is not None:
                raise DemoError(f"sluice up exited ({gw.process.returncode}); see {gw.log}")
            want = {p.name: (p.traffic, p.shadow) for p in seldon.read(path).predictors}
            routes = self._routes(gw)
            have = {p["name"]: (int(p["traffic"]), bool(p["shadow"])) for p in routes if p.get("alive")}
            if routes and have == want and len(routes) == len(want):
                return time.time()
            time.sleep(0.05)
        raise DemoError(f"the gateway did not converge on {path} within {timeout:.0f} s")

    def start_traffic(self, scratch: Scratch, gw: Gateway, rate: float) -> TrafficGenerator:
        import pandas as pd

        test = pd.read_csv(scratch.root / "data" / "prepared" / "test.csv")
        truth = test.pop("target").to_numpy()
        traffic = TrafficGenerator(gw.url, test.to_numpy(), truth, list(test.columns), rate=rate)
        self.generators.append(traffic)
        traffic.start()
        return traffic

    def stop_gateway(self, gw: Gateway) -> None:
        if gw.process.poll() is None:
            os.killpg(gw.process.pid, signal.SIGINT)
            try:
                gw.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(gw.process.pid, signal.SIGKILL)
                gw.process.wait()

    def shutdown(self) -> None:
        for traffic in self.generators:
            traffic.stop()
        for gw in self.gateways:
            self.stop_gateway(gw)

    def _write_policy(self, scratch: Scratch, strategy: str) -> bool:
        """Write the demo policy for `strategy`; True when the file changed (and was staged)."""
        path = scratch.root / "policies" / f"{ENV}.yaml"
        text = (
            "# The demo's policy: policies/local.yaml's schema with bake times of seconds (sluice demo writes it).\n"
            + yaml.safe_dump(demo_policy(self.s, strategy), sort_keys=False)
        )
        if path.exists() and path.read_text() == text:
            return False
        path.write_text(text)
        scratch.git("add", str(path.relative_to(scratch.root)))
        return True

    # helpers -----------------------------------------------------------------------------------------
    def _set_params(self, scratch: Scratch, changes: dict[str, Any], message: str) -> None:
        path = scratch.root / "params.yaml"
        params = yaml.safe_load(path.read_text())
        _merge(params, changes)
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        scratch.git("add", "params.yaml")
        scratch.git("commit", "-qm", message, check=False)

    def report(self, scratch: Scratch, base: str) -> dict[str, Any]:
        steps = manifest_history(scratch.root, base)
        decisions = [d for act in self.acts for d in act.decisions]
        retime(steps, decisions)
        lanes: dict[str, list[Step]] = {}
        for env in sorted({a.env for a in self.acts} - {ENV}):
            lanes[env] = manifest_history(
                scratch.root, base, path=f"gitops/environments/{env}/seldondeployment.yaml"
            )
            retime(lanes[env], decisions)
        # The client's requests (local, then production), and staging's replay of them, in one log.
        clients = [g for g in self.generators if g is not self.replay]
        records = sorted((r for g in self.generators for r in g.snapshot()), key=lambda r: r.at)
        write_requests(self.out, records)
        for act in self.acts:
            measure(act, lanes.get(act.env, steps), records)
        total = TrafficStats()
        for g in clients:
            stats = g.stats()
            total.requests += stats.requests
            total.failures += stats.failures
            total.feedback_sent += stats.feedback_sent
            total.feedback_failed += stats.feedback_failed
        replayed = self.replay.stats() if self.replay is not None else TrafficStats()
        extra: dict[str, Any] = {
            "started_at": self.t0,
            "duration_seconds": round(time.time() - self.t0, 1),
            "fast": self.s.fast,
            "repository": str(scratch.root),
            "base_commit": base,
            "client": {
                "requests": total.requests,
                "failures": total.failures,
                "feedback": total.feedback_sent,
                "feedback_failed": total.feedback_failed,
                "rate": self.s.rate,
            },
            "staging_replay": {"requests": replayed.requests, "failures": replayed.failures},
            "traffic_commits": len([s for s in steps if s.kind != "init"]),
        }
        if self.act5 is not None:
            extra["act5"] = {
                **self.act5.summary(),
                "commits": {env: commit_rows(lane) for env, lane in lanes.items()},
            }
        client_records = [r for r in records if r.act != self.replay_act]
        events = self.act5.timeline.events() if self.act5 is not None else []
        summary = write_summary(self.out, self.acts, steps, extra)
        png = plot(self.out, self.acts, steps, client_records, self.t0, events, lanes)
        html = write_html(self.out, png, self.acts, steps, self.t0, extra.get("act5"))
        (self.out / "strategies.md").write_text(strategies_table(self.acts))
        self.console.rule("report")
        self.console.print(strategies_table(self.acts), highlight=False)
        for path in (summary, png, html, self.out / "strategies.md"):
            self.console.print(f"  {path}", highlight=False)
        data: dict[str, Any] = json.loads(summary.read_text())
        return data


def _merge(into: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
