"""Act 5: the client's traffic drifts, and the loop closes itself up to the one approval production asks for.

Two more environments, staging and production, each served by its own `sluice up`, start on the champion. The
client's traffic goes to production (whose router keeps the prediction log, labels joining it as feedback comes
back); staging replays the same traffic. Then one feature of that traffic shifts. The real pieces take over:

- `sluice loop`'s steps (`monitor.loop.next_step`): monitoring reads production's log, finds the feature's drift,
  commits the labelled live rows as a new DVC data version, `dvc repro` trains, judges and packages a candidate,
  and its rollout opens in staging;
- the reconciler promotes it in staging behind its gates;
- the environment chain (`monitor.loop.follow_chain`) proposes it to production with staging's evidence;
- production's reconciler runs its canary and asks for approval of the promotion: the only human step, which the
  demo grants and says so.

Every time is measured, from the drift's onset to the new model serving 100 % of production's traffic.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from demo.report import ActResult
from deployment.names import predictor_name

if TYPE_CHECKING:
    from demo.run import Demo
    from demo.traffic import TrafficGenerator
    from monitor.loop import LoopSettings

CHAIN = ("staging", "production")
DRIFTED = "mean_concave_points"  # the feature that shifts: the client's instrument was recalibrated
SHIFT = 0.08  # about two standard deviations of the feature
APPROVER = "the presenter (sluice demo grants production's approval)"


@dataclass
class Timeline:
    """Wall-clock times (seconds since the epoch) of Act 5's events, in the order they happen."""

    drift_onset: float = 0.0
    detected: float | None = None
    data_committed: float | None = None
    trained: float | None = None
    staging_opened: float | None = None
    staging_promoted: float | None = None
    production_opened: float | None = None
    approval_requested: float | None = None
    approved: float | None = None
    production_promoted: float | None = None
    production_serving: float | None = None  # production's router sends 100 % to the new model

    def parts(self) -> dict[str, float | None]:
        """Drift onset to 100 % in production, in five consecutive parts that add up to the total."""

        def span(a: float | None, b: float | None) -> float | None:
            return round(b - a, 2) if a is not None and b is not None else None

        production = span(self.staging_promoted, self.production_serving)
        wait = span(self.approval_requested, self.approved)
        return {
            "detection": span(self.drift_onset, self.detected),
            "retrain": span(self.detected, self.trained),
            "staging_rollout": span(self.trained, self.staging_promoted),
            "approval_wait": wait,
            "production_rollout": round(production - wait, 2)
            if production is not None and wait is not None
            else production,
        }

    @property
    def total(self) -> float | None:
        end = self.production_serving
        return round(end - self.drift_onset, 2) if end is not None else None

    def events(self) -> list[tuple[float, str]]:
        """(time, label) of each event that happened, for the plot."""
        labels = {
            "drift_onset": "drift onset",
            "detected": "drift detected",
            "data_committed": "data version committed",
            "trained": "retrained",
            "staging_promoted": "promoted in staging",
            "approved": "production approved",
            "production_serving": "100 % in production",
        }
        return [(t, labels[k]) for k, t in asdict(self).items() if k in labels and t is not None]


@dataclass
class Act5Result:
    timeline: Timeline = field(default_factory=Timeline)
    feature: str = DRIFTED
    shift: float = SHIFT
    stable: str = ""
    candidate: str = ""
    digest: str = ""
    loop: list[dict[str, Any]] = field(default_factory=list)  # each step of `sluice loop`, timed
    chain: list[str] = field(default_factory=list)
    approval: dict[str, Any] = field(default_factory=dict)
    offline_accuracy: dict[str, float] = field(default_factory=dict)  # on drifted rows the client never sent
    live_accuracy: dict[str, dict[str, float]] = field(default_factory=dict)  # production, after the drift
    acts: list[ActResult] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "shift": self.shift,
            "stable": self.stable,
            "candidate": self.candidate,
            "digest": self.digest,
            "timeline": asdict(self.timeline),
            "parts_seconds": self.timeline.parts(),
            "drift_to_production_seconds": self.timeline.total,
            "loop": self.loop,
            "chain": self.chain,
            "approval": self.approval,
            "offline_accuracy_on_drifted_rows": self.offline_accuracy,
            "live_accuracy_after_drift": self.live_accuracy,
        }


def demo_policy(demo: Demo, env: str) -> dict[str, Any]:
    """Staging and production: the demo's canary in one stage; production's promotion waits for a person, and its
    `monitoring` section is what the router logs and what starts a retrain."""
    from demo.run import demo_policy as local_policy

    policy = local_policy(demo.s, "canary")
    policy["stages"] = [{"weight": 50, "bake": demo.s.bake}]
    if env == "production":
        policy["approve_promotion"] = True
        policy["monitoring"] = {
            "sample": 0.4,
            "drift_threshold": 0.2,
            "min_records": 100,
            "min_labels": 40,
        }
    return policy


class Act5:
    def __init__(self, demo: Demo):
        self.demo = demo
        self.scratch = demo.scratch
        self.console = demo.console
        self.result = Act5Result()
        # In the work folder, which every run starts afresh: a log left by an earlier run must not count as live.
        self.log_dir = demo.out / "work" / "production-predictions"

    # the act ---------------------------------------------------------------------------------------------
    def run(self) -> Act5Result:
        from demo.run import DemoError

        self.console.rule("Act 5 · drift, retrain, staging → production")
        d, r, t = self.demo, self.result, self.result.timeline
        self._stop_local()
        champion = self._environments()
        staging, production = d.start_gateways(
            ("staging", Path("gitops/environments/staging"), ()),
            ("production", Path("gitops/environments/production"),
             ("--prediction-log", str(self.log_dir), "--log-policy", "policies/production.yaml")),
        )  # fmt: skip
        client = d.start_traffic(self.scratch, production, d.s.rate)
        # Staging replays the client's traffic at half its rate: enough evidence for its gates, less load.
        replay = d.start_traffic(self.scratch, staging, d.s.rate / 2)
        replay.set_act(d.replay_act)
        d.replay = replay
        d.traffic_act("Act 5 · production", 2.0, client)

        # The client replays the test split, so the retrain learns from those rows (drifted). The two models are
        # compared on the training split instead, drifted the same way: rows the client never sent, which both
        # models saw only undrifted. Copied now: the retrain replaces data/prepared/ with the live data version.
        self.eval_rows = d.out / "work" / "act5-eval.csv"
        self.eval_rows.write_bytes((self.scratch.root / "data" / "prepared" / "train.csv").read_bytes())
        column = self._columns().index(DRIFTED)
        t.drift_onset = time.time()
        client.drift = replay.drift = (column, SHIFT)
        self._say(f"drift: the client's {DRIFTED} now reads {SHIFT:+g} higher (the labels do not change)")

        settings = self._loop_settings()
        self._until_data(settings)
        self._loop_step(settings, "trained", "dvc repro: train, judge and package on the new data version")
        t.trained = time.time()
        opened = self._loop_step(settings, "promoted", "open the candidate's rollout in staging")
        t.staging_opened = opened
        if r.digest == "":
            raise DemoError("sluice loop opened a rollout but recorded no model")
        self._offline_accuracy(champion)

        env_s = d.environment(staging)
        act_s = ActResult(d.replay_act, "canary", r.candidate, r.stable, "promoted", env="staging")
        act_s.started = opened
        d.acts.append(act_s)
        r.acts.append(act_s)
        d.reconcile(act_s, env_s, staging, replay)
        if act_s.outcome != "promoted":
            raise DemoError(f"staging: the candidate {r.candidate} was {act_s.outcome}, not promoted")
        t.staging_promoted = next((x.at for x in act_s.decisions if x.action == "promote"), act_s.ended)

        self._chain(settings)
        env_p = d.environment(production)
        act_p = ActResult("Act 5 · production", "canary", r.candidate, r.stable, "promoted", env="production")
        act_p.started = t.production_opened or time.time()
        d.acts.append(act_p)
        r.acts.append(act_p)
        d.reconcile(act_p, env_p, production, client, approve_as=APPROVER)
        t.approval_requested, t.approved = act_p.approval_requested_at, act_p.approved_at
        t.production_promoted = next((x.at for x in act_p.decisions if x.action == "promote"), None)
        t.production_serving = act_p.converged_at if act_p.outcome == "promoted" else None
        promote = next((x for x in act_p.decisions if x.action == "promote"), None)
        r.approval = {
            "environment": "production",
            "requested_at": t.approval_requested,
            "approved_at": t.approved,
            "approved_by": act_p.approved_by,
            "commit": promote.commit if promote else None,
        }
        replay.stop()
        client.stop()
        self._live_accuracy(client)
        if t.total is not None:
            parts = ", ".join(
                f"{k.replace('_', ' ')} {v:.1f} s" for k, v in t.parts().items() if v is not None
            )
            self._say(
                f"[bold]drift onset → the new model serving 100 % of production: {t.total:.1f} s[/] ({parts})"
            )
        return r

    # steps -------------------------------------------------------------------------------------------------
    def _stop_local(self) -> None:
        """Acts 1-4's environment is done: its client and `sluice up` stop (the machine has work to do)."""
        d = self.demo
        if d.traffic is not None:
            d.traffic.stop()
        if d.gateway is not None:
            d.stop_gateway(d.gateway)

    def _environments(self) -> str:
        """Staging and production serve the champion, under the demo's policies; one commit each."""
        from demo.run import DemoError
        from model.registry import CHAMPION, Registry
        from rollout.proposals import RolloutError
        from rollout.run import init_environment

        champion = Registry(self.scratch.root).alias(self.demo.model_name, CHAMPION)
        if champion is None:
            raise DemoError("no champion in the registry after Act 2")
        uri = f"models:/{self.demo.model_name}/{champion.version}"
        for env in CHAIN:
            # What `sluice rollout init --force` writes: the environment's first manifest, committed to main.
            try:
                done = init_environment(
                    self.scratch.root, env, uri, deployment=self.demo.model_name, force=True
                )
            except RolloutError as e:
                raise DemoError(str(e)) from e
            self.result.stable = done.name
            path = self.scratch.root / "policies" / f"{env}.yaml"
            path.write_text(
                f"# The demo's {env} policy: policies/{env}.yaml's schema with bake times of seconds.\n"
                + yaml.safe_dump(demo_policy(self.demo, env), sort_keys=False)
            )
            self.scratch.git("add", str(path.relative_to(self.scratch.root)))
        self.scratch.git("commit", "-qm", "policies: the demo's staging and production policies")
        self._say(f"staging and production serve the champion {uri} ({self.result.stable})")
        return uri

    def _loop_settings(self) -> LoopSettings:
        from monitor.assess import Thresholds
        from monitor.loop import LoopSettings
        from rollout.policy import load_policy

        m = load_policy(self.scratch.root / "policies" / "production.yaml").monitoring
        return LoopSettings(
            repo=self.scratch.root,
            log_dir=self.log_dir,
            env=CHAIN[0],
            thresholds=Thresholds(
                drift=m.drift_threshold, min_records=m.min_records, min_labels=m.min_labels
            ),
            label_window=m.label_window,
            min_new_labels=m.min_labels,
            chain=CHAIN,
        )

    def _until_data(self, settings: LoopSettings) -> None:
        """`sluice loop`'s first step, every half second, until monitoring fires and the data version is in."""
        from demo.run import DemoError
        from monitor.loop import next_step

        t = self.result.timeline
        deadline = time.time() + (90 if self.demo.s.fast else 120)
        with self.console.status("[bold]sluice loop: monitoring production's prediction log[/] …"):
            while time.time() < deadline:
                outcome = next_step(settings)
                now = time.time()
                if t.detected is None and (outcome.step == "data" or outcome.detail.startswith("triggered")):
                    t.detected = now
                    self._say(f"monitoring: {outcome.detail}")
                if outcome.step == "data":
                    t.data_committed = now
                    self._record(outcome, now)
                    return
                if outcome.step not in ("waiting",):
                    raise DemoError(f"sluice loop: {outcome.step}: {outcome.detail}")
                time.sleep(0.5)
        raise DemoError("sluice loop did not start a retrain within its deadline")

    def _loop_step(self, settings: LoopSettings, expected: str, title: str) -> float:
        from demo.run import DemoError
        from monitor.loop import next_step, progress

        outcome = self.demo._step(f"sluice loop: {title}", lambda: next_step(settings))
        now = time.time()
        self._record(outcome, now)
        if outcome.step != expected:
            raise DemoError(f"sluice loop: expected {expected}, got {outcome.step}: {outcome.detail}")
        digest = progress(settings.repo).model or ""
        self.result.digest = digest
        self.result.candidate = predictor_name(digest) if digest else ""
        return now

    def _chain(self, settings: LoopSettings) -> None:
        from demo.run import DemoError
        from monitor.loop import follow_chain

        links = follow_chain(settings)
        self.result.timeline.production_opened = time.time()
        self.result.chain = [x.detail for x in links]
        for x in links:
            self._say(f"environment chain: {x.detail}")
        if not any(x.step == "chain-proposed" for x in links):
            raise DemoError(f"the environment chain proposed nothing to production: {self.result.chain}")

    # measurements -------------------------------------------------------------------------------------------
    def _columns(self) -> list[str]:
        import pandas as pd

        test = pd.read_csv(self.eval_rows, nrows=1)
        return [c for c in test.columns if c != "target"]

    def _offline_accuracy(self, champion_uri: str) -> None:
        """Both models' accuracy on the original training rows with the drift applied (rows the client never
        sent, so not among the live rows the candidate was retrained on)."""
        import pandas as pd

        from model.bundle import Bundle
        from model.registry import resolve_bundle_path

        test = pd.read_csv(self.eval_rows)
        truth = test.pop("target").to_numpy()
        test[DRIFTED] = test[DRIFTED] + SHIFT
        for role, uri in (
            ("stable", champion_uri),
            ("candidate", str(self.scratch.root / "artifacts" / "model")),
        ):
            model = Bundle.open(resolve_bundle_path(uri, self.scratch.root)).load_sklearn()
            self.result.offline_accuracy[role] = round(float((model.predict(test) == truth).mean()), 4)
        acc = self.result.offline_accuracy
        self._say(
            f"on drifted rows the client never sent: stable {acc['stable']:.3f}, candidate {acc['candidate']:.3f} accuracy"
        )

    def _live_accuracy(self, client: TrafficGenerator) -> None:
        """Production's answers after the drift, per predictor: the share the ground truth confirmed."""
        onset = self.result.timeline.drift_onset
        by: dict[str, list[bool]] = {}
        for rec in client.snapshot():
            if rec.at >= onset and rec.predictor and rec.correct is not None:
                by.setdefault(rec.predictor, []).append(rec.correct)
        self.result.live_accuracy = {
            name: {"n": len(xs), "accuracy": round(sum(xs) / len(xs), 4)} for name, xs in by.items() if xs
        }

    # output -------------------------------------------------------------------------------------------------
    def _record(self, outcome: Any, at: float) -> None:
        self.result.loop.append({"at": at, "step": outcome.step, "detail": outcome.detail})
        self._say(f"sluice loop: [cyan]{outcome.step}[/] — {outcome.detail}")

    def _say(self, text: str) -> None:
        self.console.print(f"[dim]{time.time() - self.demo.t0:6.1f}s[/] {text}", highlight=False)
