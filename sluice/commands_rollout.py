"""`sluice rollout`: init an environment, start a rollout, reconcile it, see its status, approve or abort.

The GitOps repository (`--repo`, default `.`) holds gitops/environments/<env>/seldondeployment.yaml and
policies/<env>.yaml. Metrics come from a gateway's /metrics (`--metrics-url`) or Prometheus (`--prometheus`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sluice.console import console, fail

if TYPE_CHECKING:
    from rollout.reconciler import Environment, TickResult

rollout_app = typer.Typer(
    name="rollout",
    help="Move a candidate model into an environment stage by stage, behind metric gates, through Git.",
    no_args_is_help=True,
)

Env = Annotated[str, typer.Option("--env", "-e", help="Environment: gitops/environments/<env>/.")]
Repo = Annotated[Path, typer.Option("--repo", help="The GitOps repository (a git checkout).")]
Policies = Annotated[Path | None, typer.Option("--policies", help="Policy folder (default <repo>/policies).")]
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
        fail(str(e))


def build_environment(
    env: str,
    repo: Path,
    policies: Path | None,
    metrics_url: str | None,
    prometheus: str | None,
    github: str | None = None,
) -> Environment:
    """Wire one environment's adapters (SCM, Seldon target, metric provider, registry hook) from CLI options.

    Also used by `sluice demo`, which runs the reconciler in its own process.
    """
    from rollout.metrics import MetricProvider
    from rollout.policy import load_policy
    from rollout.reconciler import Environment, registry_hook
    from rollout.scm import SCM
    from rollout.targets.seldon import SeldonDeploymentV1

    scm: SCM
    if github:
        from rollout.scm.github import GitHub

        scm = GitHub(github)
    else:
        from rollout.scm.local import LocalGit

        scm = LocalGit(repo)
    policy = load_policy((policies or repo / "policies") / f"{env}.yaml")
    metrics: MetricProvider | None = None
    if prometheus:
        from rollout.metrics.prometheus import PrometheusProvider

        metrics = PrometheusProvider(prometheus)
    elif metrics_url:
        from rollout.metrics.scrape import ScrapeProvider

        metrics = ScrapeProvider(metrics_url, history=scrape_history(repo, env))
    return Environment(
        name=env,
        scm=scm,
        target=SeldonDeploymentV1(),
        policy=policy,
        metrics=metrics,
        on_promote=registry_hook(repo),
    )


def scrape_history(repo: Path, env: str) -> Path | None:
    """Where a scrape provider keeps its scrapes between runs (so `reconcile --once` ticks add up): in the
    repository's .git, never in its files."""
    git = repo / ".git"
    if git.is_file():  # a worktree: .git names the real directory
        text = git.read_text().strip()
        git = (repo / text.removeprefix("gitdir:").strip()).resolve() if text.startswith("gitdir:") else git
    return git / f"sluice-scrapes-{env}.json" if git.is_dir() else None


def candidate_model(uri: str, repo: Path) -> tuple[str, str]:
    """(model_uri to write in the manifest, bundle digest) of a bundle path, file:// or models:/ URI."""
    from model.bundle import Bundle
    from model.registry import resolve_bundle_path

    bundle = Bundle.open(resolve_bundle_path(uri, repo))
    model_uri = uri if uri.startswith(("models:/", "file://")) else Path(uri).resolve().as_uri()
    return model_uri, bundle.digest


def _gate_table(result: TickResult) -> Any:
    """Each gate's verdict and evidence: sample per predictor, estimate and interval against its limit."""
    from rich import box
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
        name, metric, n, estimate, interval, limit, verdict = g.row()
        table.add_row(
            f"{name}\n[dim]{metric}[/]",
            f"[{colours.get(verdict, 'white')}]{verdict}[/]",
            n,
            estimate,
            interval,
            limit,
        )
    return table


def _show(result: TickResult) -> None:
    d = result.decision
    line = f"[bold]{result.env}[/]: [cyan]{d.action.value}[/] — {d.reason}"
    console.print(line, highlight=False)
    if d.gates:
        console.print(_gate_table(result))
    if result.outcome is not None:
        console.print(f"  git: {result.outcome.detail}", highlight=False)
    for note in result.notes:
        console.print(f"  {note}", highlight=False)


def _result_json(result: TickResult) -> dict[str, Any]:
    d = result.decision
    state = result.state
    r = state.rollout if state else None
    return {
        "env": result.env,
        "revision": result.revision,
        "deployment": state.deployment if state else None,
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
        "pending": [{"name": p.name, "kind": p.kind, "title": p.title} for p in result.pending],
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
    deployment: Annotated[str, typer.Option(help="SeldonDeployment name.")] = "sluice-classifier",
    force: Annotated[bool, typer.Option(help="Replace an existing manifest.")] = False,
) -> None:
    """Write an environment's first manifest: one stable predictor at 100 %, committed to main."""
    with _errors():
        from rollout.guardrails import check_manifest
        from rollout.scm import manifest_path
        from rollout.scm.local import LocalGit
        from rollout.targets.seldon import DEFAULT_IMAGE, initial_manifest

        model_uri, digest = candidate_model(model, repo)
        text = initial_manifest(env, model_uri, digest, deployment=deployment, image=image or DEFAULT_IMAGE)
        problems = check_manifest(text)
        if problems:
            fail("; ".join(str(p) for p in problems))
        commit = LocalGit(repo).write_initial(
            env,
            text,
            f"rollout({env}): init with m-{digest.split(':')[1][:12]} at 100%\n\nmodel: {model_uri}",
            force=force,
        )
        console.print(
            f"wrote {manifest_path(env)} on main ({commit[:12]}): m-{digest.split(':')[1][:12]} at 100%"
        )


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
    force: Annotated[
        bool, typer.Option("--force", help="Start a model even if an earlier rollout of it was rolled back.")
    ] = False,
) -> None:
    """Add the candidate predictor and open the first step of the rollout (a commit on main, or a branch).

    A model the gates rolled back before is quarantined: refused, with the reason and the rollback commit,
    unless --force."""
    with _errors():
        from rollout.reconciler import start

        environment = build_environment(env, repo, policies, None, None, github)
        model_uri, digest = candidate_model(candidate, repo)
        _show(start(environment, candidate, model_uri, digest, strategy, force=force))


@rollout_app.command("reconcile")
def reconcile(
    env: Env,
    once: Annotated[bool, typer.Option("--once", help="One tick, then exit (the default).")] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Tick every policy interval, with a live view.")
    ] = False,
    repo: Repo = Path("."),
    policies: Policies = None,
    metrics_url: MetricsUrl = DEFAULT_METRICS,
    prometheus: PrometheusUrl = None,
    max_ticks: Annotated[int, typer.Option(help="With --watch: stop after this many ticks (0: never).")] = 0,
    github: GitHubRepo = None,
) -> None:
    """Run the reconciler: decide and propose the next step of the rollout in progress."""
    if once and watch:
        fail("choose one of --once and --watch")
    with _errors():
        from rollout.reconciler import tick
        from rollout.scm import Conflict

        environment = build_environment(env, repo, policies, metrics_url, prometheus, github)
        if not watch:
            try:
                _show(tick(environment))
            except Conflict as e:
                fail(f"skipped: {e}", code=3)
            return
        try:
            _watch(environment, max_ticks)
        except KeyboardInterrupt:
            console.print("stopped; the rollout goes on with the next `sluice rollout reconcile`")


def _watch(environment: Environment, max_ticks: int) -> None:
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    from rollout.reconciler import tick
    from rollout.scm import Conflict

    history: list[str] = []
    n = 0
    with Live(Text("starting…"), console=console, refresh_per_second=4, transient=False) as live:
        while max_ticks == 0 or n < max_ticks:
            n += 1
            try:
                result = tick(environment)
            except Conflict as e:
                history.append(f"{time.strftime('%H:%M:%S')} skipped: {e}")
                time.sleep(environment.policy.interval)
                continue
            d = result.decision
            stamp = time.strftime("%H:%M:%S")
            if result.wrote or not history or not history[-1].endswith(d.reason):
                history.append(f"{stamp} {d.action.value}: {d.reason}")
            weights = ", ".join(
                f"{p.name}={p.traffic}{' (shadow)' if p.shadow else ''}"
                for p in (result.state.predictors if result.state else ())
            )
            header = Text.from_markup(
                f"[bold]{environment.name}[/] tick {n} · weights: {weights} · "
                f"decide {result.decide_seconds * 1000:.2f} ms · observe {result.observe_seconds:.2f} s"
            )
            live.update(Group(header, _gate_table(result), Text("\n".join(history[-12:]))))
            r = result.state.rollout if result.state else None
            if (r is None or not r.active) and not result.wrote:
                break
            if result.wrote and result.decision.rollout is not None and not result.decision.rollout.active:
                break
            time.sleep(environment.policy.interval)


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
) -> None:
    """Stage, weights and the gate table of the rollout in progress (a dry run: writes nothing)."""
    with _errors():
        from rollout.decision import current_step, decide
        from rollout.observations import Observations
        from rollout.reconciler import TickResult, observe

        environment = build_environment(env, repo, policies, metrics_url, prometheus, github)
        snap = environment.scm.read(env)
        state = environment.target.state(snap.text)
        now = environment.clock()
        obs = (
            observe(environment, state, environment.policy, now) if environment.metrics else Observations(0.0)
        )
        decision = decide(state, environment.policy, obs, environment.clock())
        result = TickResult(env, decision, None, snap.revision, state, tuple(environment.scm.pending(env)))
        if as_json:
            out = _result_json(result)
            if environment.metrics is None:
                out["decision"] = None  # not observed: pass --metrics-url or --prometheus for the gate table
            console.print_json(json.dumps(out))
            return
        r = state.rollout
        console.print(
            f"[bold]{env}[/] at {snap.revision[:12]} · deployment {state.deployment}", highlight=False
        )
        for p in state.predictors:
            role = ""
            if r is not None:
                role = " (candidate)" if p.name == r.candidate else " (stable)" if p.name == r.stable else ""
            console.print(f"  {p.name}{role}: {p.traffic}%{' shadow' if p.shadow else ''}", highlight=False)
        if r is None:
            console.print("no rollout recorded")
        else:
            _, step = current_step(environment.policy, r) if r.active else (None, None)
            console.print(
                f"rollout: {r.strategy} · {r.status} · stage {r.stage}{f' ({step.name})' if step else ''}"
                f"{' · ' + r.message if r.message else ''}",
                highlight=False,
            )
        for proposal in result.pending:
            console.print(f"pending: {proposal.name} ({proposal.kind}) {proposal.title}", highlight=False)
        if environment.metrics is not None and r is not None and r.active:
            console.print(f"next: {decision.action.value} — {decision.reason}", highlight=False)
            if decision.gates:
                console.print(_gate_table(result))


@rollout_app.command("approve")
def approve_cmd(
    env: Env, repo: Repo = Path("."), policies: Policies = None, github: GitHubRepo = None
) -> None:
    """Merge the step that waits for a human (its bake time starts now)."""
    with _errors():
        from rollout.reconciler import approve

        _show(approve(build_environment(env, repo, policies, None, None, github)))


@rollout_app.command("abort")
def abort_cmd(env: Env, repo: Repo = Path("."), policies: Policies = None, github: GitHubRepo = None) -> None:
    """Roll back at once: stable to 100 %, candidate removed, pending steps discarded."""
    with _errors():
        from rollout.reconciler import abort

        _show(abort(build_environment(env, repo, policies, None, None, github)))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `sluice` app."""
    app.add_typer(rollout_app, name="rollout")
