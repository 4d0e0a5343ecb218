"""`sluice ui`: the live dashboard of every environment, next to the reconciler (its own process).

It runs beside `sluice rollout reconcile`, not inside it: one dashboard shows every environment in promotion
order while each environment has its own reconciler; a slow page or a crash of the web server never delays a
tick; and since both read Git, which is the only state, they never disagree. The gate table is worked out
the way the reconciler's next tick would (`sluice rollout status`'s preview), from the same metrics.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sluice.console import console, err_console, report

if TYPE_CHECKING:
    from dashboard.board import Lookup, Source

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
# Conventional promotion order of environment names; unknown names go between the first and last groups.
RANK = (("local", "dev", "development", "test", "ci"), ("qa", "uat", "staging", "stage", "preprod"))
LAST = ("canary", "production", "prod", "live")


def promotion_order(names: list[str]) -> list[str]:
    """Environments in the usual promotion order: local/dev, then staging-like, then unknown, then production."""

    def rank(name: str) -> tuple[int, str]:
        for i, group in enumerate(RANK):
            if name in group or any(name.startswith(g + "-") for g in group):
                return i, name
        if name in LAST or any(name.startswith(g) for g in LAST):
            return 4, name
        return 3, name

    return sorted(names, key=rank)


def _environments(repo: Path) -> list[str]:
    from rollout.scm import BadEnvironment, check_env
    from rollout.scm.local import LocalGit

    out = LocalGit(repo).git("ls-tree", "-r", "--name-only", "refs/heads/main", "gitops/environments/")
    found = []
    for path in out.splitlines():
        m = re.fullmatch(r"gitops/environments/([^/]+)/seldondeployment\.yaml", path)
        if m:
            try:
                found.append(check_env(m[1]))
            except BadEnvironment:
                continue
    return promotion_order(found)


def _metrics_urls(values: list[str], envs: list[str]) -> dict[str, str]:
    """`URL` (every environment) or `ENV=URL` per environment."""
    out: dict[str, str] = {}
    for value in values:
        env, sep, url = value.partition("=")
        if sep and not env.startswith(("http://", "https://")):
            if env not in envs:
                raise typer.BadParameter(f"{value!r}: no environment {env!r} (shown: {', '.join(envs)})")
            out[env] = url
        else:
            out.update({e: value for e in envs if e not in out})
    for url in out.values():
        if not url.startswith(("http://", "https://")):
            raise typer.BadParameter(f"{url!r} is not an http(s) URL")
    return out


def _sources(
    envs: list[str],
    repo: Path,
    policies: Path | None,
    metrics: dict[str, str],
    prometheus: str | None,
    github: str | None,
    github_author: str | None,
    mlflow_tracking_uri: str | None,
    figures_window: float,
    monitors: dict[str, str] | None = None,
    drift_threshold: float | None = None,
) -> list[Source]:
    from dashboard.board import Source
    from dashboard.drift import DriftSource, PrometheusDrift, ScrapeDrift
    from dashboard.figures import FigureSource, PrometheusFigures, ScrapeFigures
    from dashboard.history import LocalHistory
    from rollout.run import Options, build_environment
    from rollout.scm import branch_prefix
    from rollout.scm.local import LocalGit

    lookup = None
    if mlflow_tracking_uri or (not github and (repo / "mlflow.db").exists()):
        lookup = _registry_lookup(repo, mlflow_tracking_uri)
    sources = []
    for name in envs:
        environment = build_environment(
            Options(
                env=name,
                repo=repo,
                policies=policies,
                metrics_url=metrics.get(name),
                prometheus=prometheus,
                github=github,
                github_author=github_author,
                mlflow_tracking_uri=mlflow_tracking_uri,
            )
        )
        figures: FigureSource | None = None
        if prometheus:
            figures = PrometheusFigures(prometheus, window=figures_window)
        elif name in metrics:
            figures = ScrapeFigures(metrics[name], window=figures_window)
        drift: DriftSource | None = None
        if monitors and name in monitors:
            drift = ScrapeDrift(monitors[name], drift_threshold)
        elif prometheus:
            drift = PrometheusDrift(prometheus, drift_threshold)
        scm = environment.scm
        if isinstance(scm, LocalGit):
            refs = (f"refs/heads/{scm.main}", f"refs/heads/{branch_prefix(name)}")
            sources.append(
                Source(
                    name,
                    environment,
                    history=LocalHistory(scm, environment.target.state),
                    figures=figures,
                    drift=drift,
                    registry=lookup,
                    fingerprint=functools.partial(
                        scm.git, "for-each-ref", "--format=%(refname) %(objectname)", *refs
                    ),
                )
            )
        else:
            sources.append(
                Source(
                    name,
                    environment,
                    figures=figures,
                    drift=drift,
                    registry=lookup,
                    link=f"https://github.com/{github}/commit/{{sha}}",
                )
            )
    return sources


def _registry_lookup(repo: Path, tracking_uri: str | None) -> Lookup:
    """(model_uri, digest, model name) -> the registered version holding that digest, cached."""
    cache: dict[tuple[str | None, str | None], str | None] = {}

    def lookup(uri: str | None, digest: str | None, deployment: str) -> str | None:
        key = (uri, digest)
        if key in cache:
            return cache[key]
        m = re.match(r"^models:/([^/@]+)", uri or "")
        name = m[1] if m else deployment
        version = None
        if digest:
            try:
                from model.registry import Registry

                version = Registry(repo, tracking_uri).by_digest(name, digest).version
            except Exception:  # not registered, or the registry is down: the page shows the URI alone
                version = None
        cache[key] = version
        return version

    return lookup


def ui(
    env: Annotated[
        list[str] | None,
        typer.Option(
            "--env",
            "-e",
            help="An environment to show; repeat it, in promotion order. Default: every environment on main "
            "(gitops/environments/*), local and dev first, production last.",
        ),
    ] = None,
    repo: Annotated[Path, typer.Option("--repo", help="The GitOps repository (a git checkout).")] = Path("."),
    policies: Annotated[
        Path | None,
        typer.Option("--policies", help="Read <env>.yaml from this folder instead of policies/ in Git."),
    ] = None,
    metrics_url: Annotated[
        list[str] | None,
        typer.Option(
            "--metrics-url",
            help="A router's /metrics for the live figures and the gates: URL (every environment) or ENV=URL.",
        ),
    ] = None,
    prometheus: Annotated[
        str | None,
        typer.Option(
            "--prometheus",
            help="Prometheus base URL (used instead of --metrics-url; also for drift without --monitor-url).",
        ),
    ] = None,
    monitor_url: Annotated[
        list[str] | None,
        typer.Option(
            "--monitor-url",
            help="A `sluice monitor --watch --metrics-port` /metrics for the drift panel: URL (every "
            "environment) or ENV=URL.",
        ),
    ] = None,
    drift_threshold: Annotated[
        float | None,
        typer.Option(
            help="A feature's drift score (PSI) over this is highlighted [default: each environment policy's "
            "monitoring.drift_threshold, what `sluice monitor` alerts and `sluice loop` retrains on]."
        ),
    ] = None,
    github: Annotated[
        str | None,
        typer.Option("--github", help="owner/name: read (and act) through GitHub; token from GITHUB_TOKEN."),
    ] = None,
    github_author: Annotated[
        str | None,
        typer.Option(
            "--github-author", envvar="SLUICE_GITHUB_AUTHOR", help="The login the reconciler's PRs carry."
        ),
    ] = None,
    mlflow_tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--mlflow-tracking-uri",
            envvar="MLFLOW_TRACKING_URI",
            help="The MLflow registry, to show each stable model's registered version (default: the repository's "
            "mlflow.db when there is one).",
        ),
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on. Loopback by default: reach it from elsewhere through a tunnel."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            help="Enables approve and abort: a file of `identity token` lines (tokens of 24+ characters). The "
            "identity of the token presented is written in the commit. Without it the dashboard is read-only.",
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host", help="A Host header to accept besides the loopback names (repeatable)."
        ),
    ] = None,
    poll: Annotated[
        float | None,
        typer.Option(help="Seconds between looks at Git (default 0.5 locally, 15 with --github)."),
    ] = None,
    history: Annotated[int, typer.Option(help="Commits of the manifest's history to chart.")] = 60,
    figures_window: Annotated[float, typer.Option(help="Seconds each live figure is computed over.")] = 30.0,
) -> None:
    """Serve the live dashboard: environments in promotion order, each with its stable model and quarantine, the
    rollout in progress (stage, weights, gates with their evidence, what happens next), the manifest's Git history
    as a chart, live figures per predictor, and model monitoring's drift per feature. Updates arrive by server-sent events; the JSON API is at /docs."""
    from rollout.scm import BadEnvironment, SCMError, check_env

    if not 1 <= port <= 65535:
        report(f"--port {port}: not a port number")
    if history < 1:
        report(f"--history {history}: chart at least one commit")
    try:
        envs = [check_env(e) for e in env] if env else ([] if github else _environments(repo))
    except (BadEnvironment, SCMError) as e:
        report(e)
    if not envs:
        report("no environment to show: pass --env (with --github, --env is required)")
    if len(set(envs)) != len(envs):
        report(f"--env: an environment is named twice ({', '.join(envs)})")
    tokens = None
    if token_file is not None:
        from dashboard.board import TokenError, Tokens

        try:
            tokens = Tokens.load(token_file)
        except TokenError as e:
            report(e)
    from dashboard.app import create_app
    from dashboard.board import Board
    from rollout.metrics import MetricsError
    from rollout.policy import PolicyError

    if drift_threshold is not None and not (math.isfinite(drift_threshold) and drift_threshold > 0):
        report(f"--drift-threshold {drift_threshold}: must be a positive number")
    try:
        monitors = _metrics_urls(monitor_url or [], envs)
    except typer.BadParameter as e:
        report(f"--monitor-url: {e}")
    try:
        metrics = _metrics_urls(metrics_url or [], envs)
        sources = _sources(
            envs,
            repo,
            policies,
            metrics,
            prometheus,
            github,
            github_author,
            mlflow_tracking_uri,
            figures_window,
            monitors,
            drift_threshold,
        )
    except typer.BadParameter as e:
        report(f"--metrics-url: {e}")
    except (SCMError, PolicyError, MetricsError) as e:
        report(e)
    board = Board(
        sources, tokens, poll=poll if poll is not None else (15.0 if github else 0.5), history_limit=history
    )
    loopback = host in LOOPBACK or _is_loopback(host)
    hosts: list[str] | None = [*LOOPBACK, *(allowed_host or [])]
    if not loopback:
        if allowed_host:
            hosts = list(allowed_host)
        else:
            hosts = None
            err_console.print(
                f"[yellow]listening on {host}: any Host header is accepted; pass --allowed-host NAME to restrict[/]",
                highlight=False,
            )
        if tokens is not None:
            err_console.print(
                "[yellow]approve and abort are reachable beyond this machine: serve it behind TLS[/]",
                highlight=False,
            )
    app = create_app(board, hosts)
    shown = f"[{host}]" if ":" in host else host
    console.print(
        f"sluice ui on http://{shown}:{port} · {', '.join(envs)} · "
        f"actions {'on (token required)' if tokens else 'off (read-only)'} · API at /docs",
        highlight=False,
    )
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def register(app: typer.Typer) -> None:
    """Add this module's command to the `sluice` app."""
    app.command("ui")(ui)
