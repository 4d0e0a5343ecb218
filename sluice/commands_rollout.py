"""`sluice rollout`: init an environment, start a rollout, reconcile it, see its status, approve or abort.

The GitOps repository (`--repo`, default `.`) holds gitops/environments/<env>/seldondeployment.yaml (or
inferenceservice.yaml: the manifest's kind is the environment's target) and policies/<env>.yaml, both read from
Git (main) on every tick; `--policies` reads the policy from a folder
instead. Metrics come from a gateway's /metrics (`--metrics-url`) or Prometheus (`--prometheus`). This module
only parses options and renders: the wiring and the loop are rollout/run.py's, the rules rollout/'s core.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sluice.console import console, err_console, json_logs, report
from sluice.stopping import saying, stop_on_signals

if TYPE_CHECKING:
    from rollout.reconciler import Environment, TickResult
    from rollout.run import Options, Tick

rollout_app = typer.Typer(
    name="rollout",
    help="Move a candidate model into an environment stage by stage, behind metric gates, through Git.",
    no_args_is_help=True,
)


def _env_name(value: str) -> str:
    """Refuse an environment name before it reaches a path or a ref (`../x`, `main`, `a b`)."""
    from rollout.scm import BadEnvironment, check_env

    try:
        return check_env(value)
    except BadEnvironment as e:
        raise typer.BadParameter(str(e).removeprefix(f"--env {value!r}: ")) from None


Env = Annotated[
    str,
    typer.Option(
        "--env", "-e", callback=_env_name, help="Environment: gitops/environments/<env>/ (a DNS label)."
    ),
]
Repo = Annotated[Path, typer.Option("--repo", help="The GitOps repository (a git checkout).")]


class Target(StrEnum):
    seldon = "seldon"
    kserve = "kserve"


Policies = Annotated[
    Path | None,
    typer.Option("--policies", help="Read <env>.yaml from this folder instead of policies/ in Git."),
]
MetricsUrl = Annotated[
    str, typer.Option("--metrics-url", help="A gateway's /metrics, scraped directly (the embedded default).")
]
PrometheusUrl = Annotated[
    str | None, typer.Option("--prometheus", help="Prometheus base URL; used instead of --metrics-url.")
]
GitHubRepo = Annotated[
    str | None,
    typer.Option(
        "--github",
        help="owner/name: propose through GitHub pull requests (token from GITHUB_TOKEN) instead of --repo's git.",
    ),
]
GitHubAuthor = Annotated[
    str | None,
    typer.Option(
        "--github-author",
        envvar="SLUICE_GITHUB_AUTHOR",
        help="The login the token opens pull requests as, when the token cannot say (GitHub App or Actions "
        "tokens: e.g. github-actions[bot]). Only pull requests by this identity are acted on.",
    ),
]
TrackingUri = Annotated[
    str | None,
    typer.Option(
        "--mlflow-tracking-uri",
        envvar="MLFLOW_TRACKING_URI",
        help="The MLflow registry whose champion alias follows the stable model in Git (default: the "
        "repository's mlflow.db; with --github, none unless given).",
    ),
]
DEFAULT_METRICS = "http://127.0.0.1:8000/metrics"


@contextmanager
def _errors() -> Iterator[None]:
    from model.bundle import BundleError
    from model.registry import RegistryError
    from rollout.metrics import MetricsError
    from rollout.policy import PolicyError
    from rollout.reconciler import RolloutError
    from rollout.scm import SCMError
    from rollout.state import StateError
    from rollout.targets import TargetError

    try:
        yield
    except (
        BundleError,
        RegistryError,
        MetricsError,
        PolicyError,
        RolloutError,
        SCMError,
        StateError,
        TargetError,
    ) as e:
        report(e)


def _options(env: str, repo: Path, policies: Path | None = None, **kw: Any) -> Options:
    from rollout.run import Options

    return Options(env=env, repo=repo, policies=policies, **kw)


def _environment(options: Options) -> Environment:
    from rollout.run import build_environment

    return build_environment(options)


def _gate_table(result: TickResult) -> Any:
    """Each gate's verdict and evidence: sample per predictor, estimate and interval against its limit."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="gates (n: candidate / stable)", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("gate", overflow="fold", min_width=14)
    table.add_column("verdict", no_wrap=True)
    table.add_column("n", no_wrap=True)
    table.add_column("estimate", no_wrap=True)
    table.add_column("interval", overflow="fold")
    table.add_column("limit", no_wrap=True)
    colours = {"pass": "green", "fail": "red", "hold": "yellow", "no-data-pass": "yellow", "skip": "dim"}
    for g in result.decision.gates:
        name, metric, n, estimate, interval, limit, verdict = (escape(str(cell)) for cell in g.row())
        table.add_row(
            f"{name}\n[dim]{metric}[/]",
            f"[{colours.get(g.verdict, 'white')}]{verdict}[/]",
            n,
            estimate,
            interval,
            limit,
        )
    return table


def _show(result: TickResult) -> None:
    from rich.markup import escape

    d = result.decision
    console.print(
        f"[bold]{escape(result.env)}[/]: [cyan]{d.action.value}[/] — {escape(d.reason)}", highlight=False
    )
    if d.gates:
        console.print(_gate_table(result))
    if result.outcome is not None:
        console.print(f"  git: {escape(result.outcome.detail)}", highlight=False)
    for note in result.notes:
        console.print(f"  {escape(note)}", highlight=False)


def _result_json(result: TickResult) -> dict[str, Any]:
    d = result.decision
    state = result.state
    r = state.rollout if state else None
    return {
        "env": result.env,
        "revision": result.revision,
        "deployment": state.deployment if state else None,
        "namespace": state.namespace if state else None,
        "predictors": [
            {
                "name": p.name,
                "traffic": p.traffic,
                "shadow": p.shadow,
                "model_uri": p.model_uri,
                "model_digest": p.model_digest,
            }
            for p in (state.predictors if state else ())
        ],
        "rollout": None if r is None else json.loads(r.to_json()),
        "pending": [
            {"name": p.name, "kind": p.kind, "title": p.title, "action": p.action} for p in result.pending
        ],
        "decision": {
            "action": d.action.value,
            "reason": d.reason,
            "step": d.step,
            "gates": [
                {
                    "gate": g.gate,
                    "metric": g.metric,
                    "value": g.value,
                    "baseline": g.baseline,
                    "threshold": g.threshold,
                    "verdict": g.verdict,
                    "sample": g.sample,
                    "detail": g.detail,
                    **g.evidence(),
                }
                for g in d.gates
            ],
        },
        "notes": list(result.notes),
        "wrote": result.outcome.detail if result.outcome else None,
    }


@rollout_app.command("init")
def init(
    env: Env,
    model: Annotated[
        str, typer.Option("--model", help="The first stable model: bundle path or models:/ URI.")
    ],
    repo: Repo = Path("."),
    image: Annotated[str | None, typer.Option(help="Serving image, pinned by @sha256.")] = None,
    deployment: Annotated[
        str, typer.Option(help="The SeldonDeployment's (or InferenceService's) name.")
    ] = "sluice-classifier",
    target: Annotated[
        Target,
        typer.Option(
            help="What serves the environment: seldon (a SeldonDeployment, Seldon Core v1) or kserve (an "
            "InferenceService, KServe 0.20+ in Standard mode). The manifest's kind is the environment's choice."
        ),
    ] = Target.seldon,
    force: Annotated[
        bool,
        typer.Option(
            help="Replace an existing manifest (of either kind: how an environment changes target)."
        ),
    ] = False,
) -> None:
    """Write an environment's first manifest: one stable predictor at 100 %, committed to main."""
    with _errors():
        from rollout.run import init_environment

        kind = "InferenceService" if target is Target.kserve else "SeldonDeployment"
        done = init_environment(repo, env, model, deployment=deployment, image=image, kind=kind, force=force)
        console.print(f"wrote {done.path} on main ({done.commit[:12]}): {done.name} at 100%", highlight=False)


@rollout_app.command("start")
def start_cmd(
    env: Env,
    candidate: Annotated[str, typer.Option("--candidate", help="Bundle path, file:// or models:/ URI.")],
    strategy: Annotated[
        str | None, typer.Option(help="canary, shadow, ab, bluegreen or bandit (default: policy's).")
    ] = None,
    repo: Repo = Path("."),
    policies: Policies = None,
    github: GitHubRepo = None,
    github_author: GitHubAuthor = None,
    force: Annotated[
        bool, typer.Option("--force", help="Start a model even if an earlier rollout of it was rolled back.")
    ] = False,
) -> None:
    """Add the candidate predictor and open the first step of the rollout (a commit on main, or a branch).

    A model the gates rolled back before is quarantined: refused, with the reason and the rollback commit,
    unless --force."""
    with _errors():
        from rollout.reconciler import start
        from rollout.run import candidate_for

        options = _options(env, repo, policies, github=github, github_author=github_author)
        environment = _environment(options)
        model_uri, digest = candidate_for(environment, candidate, repo)
        _show(start(environment, candidate, model_uri, digest, strategy, force=force))


@rollout_app.command("reconcile")
def reconcile(
    env: Env,
    once: Annotated[bool, typer.Option("--once", help="One tick, then exit (the default).")] = False,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Tick every policy interval and keep running, idle while no rollout is active (what the "
            "in-cluster reconciler runs). A live view on a terminal, JSON-lines logs otherwise.",
        ),
    ] = False,
    until_done: Annotated[
        bool, typer.Option("--until-done", help="With --watch: exit once no rollout is in progress.")
    ] = False,
    repo: Repo = Path("."),
    policies: Policies = None,
    metrics_url: MetricsUrl = DEFAULT_METRICS,
    prometheus: PrometheusUrl = None,
    max_ticks: Annotated[int, typer.Option(help="With --watch: stop after this many ticks (0: never).")] = 0,
    github: GitHubRepo = None,
    github_author: GitHubAuthor = None,
    mlflow_tracking_uri: TrackingUri = None,
    metrics_port: Annotated[
        int,
        typer.Option(
            "--metrics-port",
            help="With --watch: serve the reconciler's own Prometheus metrics on this port (heartbeat, stage, "
            "weights, each gate's verdict and evidence; 0: off). What the Grafana dashboard and the alert rules "
            "in gitops/monitoring/ read.",
        ),
    ] = 0,
    metrics_host: Annotated[
        str, typer.Option("--metrics-host", help="Address for --metrics-port (0.0.0.0 in a pod).")
    ] = "127.0.0.1",
) -> None:
    """Run the reconciler: decide and propose the next step of the rollout in progress."""
    if once and watch:
        report("choose one of --once and --watch")
    if until_done and not watch:
        report("--until-done goes with --watch")
    if metrics_port and not watch:
        report("--metrics-port goes with --watch")
    if not 0 <= metrics_port <= 65535:
        report(f"--metrics-port {metrics_port}: not a port number")
    with _errors():
        from rollout.reconciler import tick
        from rollout.scm import Conflict

        options = _options(
            env,
            repo,
            policies,
            metrics_url=metrics_url,
            prometheus=prometheus,
            github=github,
            github_author=github_author,
            mlflow_tracking_uri=mlflow_tracking_uri,
        )
        environment = _environment(options)
        if not watch:
            try:
                _show(tick(environment))
            except Conflict as e:
                report(f"skipped: {e}", code=3)
            return
        telemetry = _telemetry(env, metrics_port, metrics_host) if metrics_port else None
        # SIGTERM (a pod's end) or Ctrl-C: the tick under way is finished, its commit whole; a second Ctrl-C
        # stops at once (Git stays consistent either way: the next tick carries on).
        stopping = saying("the tick under way", err_console.print)
        with stop_on_signals(stopping) as stopped, contextlib.suppress(KeyboardInterrupt):
            from rollout.run import ended, run

            def watching(on_tick: Callable[[Tick], None] | None) -> None:
                until = ended if until_done else None
                run(environment, max_ticks, stopped.wait, on_tick, until, stop=stopped.is_set)

            if console.is_terminal:
                _live(environment, telemetry, watching)
            else:
                with json_logs():
                    watching(telemetry)
        if stopped.is_set():
            err_console.print("stopped; the rollout goes on with the next `sluice rollout reconcile`")


def _telemetry(env: str, port: int, host: str) -> Callable[[Tick], None]:
    """Serve the reconciler's metrics on host:port; returns the loop's on_tick that feeds them."""
    from rollout.telemetry import ReconcilerMetrics

    metrics = ReconcilerMetrics(env)
    try:
        metrics.serve(port, host)
    except OSError as e:
        report(f"--metrics-port {port}: cannot listen on {host}:{port} ({e.strerror})")
    err_console.print(f"reconciler metrics on http://{host}:{port}/metrics", highlight=False)
    return metrics.record


def _live(
    environment: Environment,
    telemetry: Callable[[Tick], None] | None,
    watching: Callable[[Callable[[Tick], None]], None],
) -> None:
    """The loop with a live view: weights, the gate table and the decisions so far."""
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    history: list[str] = []

    with Live(Text("starting…"), console=console, refresh_per_second=4, transient=False) as live:

        def render(step: Tick) -> None:
            stamp = time.strftime("%H:%M:%S")
            if step.result is None:
                history.append(
                    f"{stamp} {'skipped' if step.skipped else 'error'}: {step.skipped or step.error}"
                )
                live.update(Group(Text(f"tick {step.number}"), Text("\n".join(history[-12:]))))
                return
            result = step.result
            d = result.decision
            if result.wrote or not history or not history[-1].endswith(d.reason):
                history.append(f"{stamp} {d.action.value}: {d.reason}")
            history.extend(f"{stamp}   {note}" for note in result.notes)
            weights = ", ".join(
                f"{p.name}={p.traffic}{' (shadow)' if p.shadow else ''}"
                for p in (result.state.predictors if result.state else ())
            )
            header = Text(
                f"{environment.name} tick {step.number} · weights: {weights} · "
                f"decide {result.decide_seconds * 1000:.2f} ms · observe {result.observe_seconds:.2f} s · "
                f"next in {step.next_in:g} s"
            )
            live.update(Group(header, _gate_table(result), Text("\n".join(history[-12:]))))

        def on_tick(step: Tick) -> None:
            if telemetry is not None:
                telemetry(step)
            render(step)

        watching(on_tick)


@rollout_app.command("status")
def status(
    env: Env,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    repo: Repo = Path("."),
    policies: Policies = None,
    metrics_url: Annotated[
        str | None, typer.Option("--metrics-url", help="Scrape this /metrics to show the gates now.")
    ] = None,
    prometheus: PrometheusUrl = None,
    github: GitHubRepo = None,
    github_author: GitHubAuthor = None,
) -> None:
    """Stage, weights and the gate table of the rollout in progress (a dry run: writes nothing)."""
    with _errors():
        from rich.markup import escape

        from rollout.decision import current_step
        from rollout.reconciler import preview

        options = _options(
            env,
            repo,
            policies,
            metrics_url=metrics_url,
            prometheus=prometheus,
            github=github,
            github_author=github_author,
        )
        environment = _environment(options)
        result = preview(environment)
        observed = environment.metrics is not None
        if as_json:
            out = _result_json(result)
            if not observed:
                out["decision"] = None  # not observed: pass --metrics-url or --prometheus for the gate table
            console.print_json(json.dumps(out))
            return
        state = result.state
        assert state is not None and result.policy is not None
        r = state.rollout
        console.print(
            f"[bold]{escape(env)}[/] at {result.revision[:12]} · deployment {escape(state.deployment)}",
            highlight=False,
        )
        for p in state.predictors:
            role = ""
            if r is not None:
                role = " (candidate)" if p.name == r.candidate else " (stable)" if p.name == r.stable else ""
            console.print(f"  {p.name}{role}: {p.traffic}%{' shadow' if p.shadow else ''}", highlight=False)
        if r is None:
            console.print("no rollout recorded")
        else:
            _, step = current_step(result.policy, r) if r.active else (None, None)
            line = (
                f"rollout: {r.strategy} · {r.status} · stage {r.stage}{f' ({step.name})' if step else ''}"
                f"{' · ' + r.message if r.message else ''}"
            )
            console.print(escape(line), highlight=False)
        for proposal in result.pending:
            console.print(
                escape(f"pending: {proposal.name} ({proposal.kind}, {proposal.action}) {proposal.title}"),
                highlight=False,
            )
        for note in result.notes:
            console.print(f"  {escape(note)}", highlight=False)
        if observed and r is not None and r.active:
            d = result.decision
            console.print(f"next: {d.action.value} — {escape(d.reason)}", highlight=False)
            if d.gates:
                console.print(_gate_table(result))


@rollout_app.command("approve")
def approve_cmd(
    env: Env,
    repo: Repo = Path("."),
    policies: Policies = None,
    github: GitHubRepo = None,
    github_author: GitHubAuthor = None,
    mlflow_tracking_uri: TrackingUri = None,
) -> None:
    """Merge the step that waits for a human (its bake time starts now)."""
    with _errors():
        from rollout.reconciler import approve

        options = _options(
            env,
            repo,
            policies,
            github=github,
            github_author=github_author,
            mlflow_tracking_uri=mlflow_tracking_uri,
        )
        _show(approve(_environment(options)))


@rollout_app.command("abort")
def abort_cmd(
    env: Env,
    repo: Repo = Path("."),
    policies: Policies = None,
    github: GitHubRepo = None,
    github_author: GitHubAuthor = None,
) -> None:
    """Roll back at once: stable to 100 %, candidate removed, pending steps discarded."""
    with _errors():
        from rollout.reconciler import abort

        options = _options(env, repo, policies, github=github, github_author=github_author)
        _show(abort(_environment(options)))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `sluice` app."""
    app.add_typer(rollout_app, name="rollout")
