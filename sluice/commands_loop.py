"""`sluice loop`: retrain when live data drifts, live accuracy drops or a schedule says so, and open the new
model's rollout into the first environment; long-running, safe to kill at any moment."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from sluice.console import console, report
from sluice.stopping import saying, stop_on_signals


def loop(
    log_dir: Annotated[
        str,
        typer.Argument(
            metavar="LOG",
            help="the prediction log: a directory (`sluice up --prediction-log DIR`) or a Redis stream "
            "redis://host:port/db?stream=KEY (`sluice router --prediction-log URL`)",
        ),
    ],
    repo: Annotated[
        Path, typer.Option(help="the repository: dvc.yaml, params.yaml, contract.yaml, gitops/")
    ] = Path("."),
    env: Annotated[
        str, typer.Option(help="the first environment a retrained model is promoted into")
    ] = "local",
    policy: Annotated[
        Path | None,
        typer.Option(
            help="the policy whose `monitoring` section sets the triggers (default: policies/<env>.yaml)"
        ),
    ] = None,
    interval: Annotated[
        str, typer.Option(help="how often to check the triggers when idle (e.g. 30s, 5m)")
    ] = "1m",
    min_new_labels: Annotated[
        int, typer.Option(help="a retrain needs at least this many labelled rows not in a data version yet")
    ] = 50,
    chain: Annotated[
        str | None,
        typer.Option(
            help="ordered environments, e.g. local,staging,production: a model promoted in one is proposed to "
            "the next with its gate evidence (never one rolled back there before)"
        ),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(
            help="where the log reader keeps its position and the records it read, so each turn reads only "
            "what is new (default: sluice/log-reader inside the repository's git directory; a cache: deleting "
            "it makes the next turn read the whole log, with the same result)"
        ),
    ] = None,
    collect: Annotated[
        bool,
        typer.Option(
            "--collect",
            help="only check the triggers and, when one fires, commit the data version; then exit (the "
            "cluster's retrain-from-log workflow trains in a step of its own)",
        ),
    ] = False,
    keep_reference: Annotated[
        bool,
        typer.Option(
            "--keep-reference",
            help="leave contract.yaml's reference distributions as they are (by default a data version "
            "re-profiles them from its rows, so the validate stage accepts the drift the retrain learns)",
        ),
    ] = False,
    once: Annotated[
        bool, typer.Option("--once", help="do the next step (or check the triggers) and exit")
    ] = False,
    metrics_port: Annotated[
        int,
        typer.Option(
            "--metrics-port",
            help="serve the loop's own Prometheus metrics on this port (0: off): when its last turn ended, "
            "how many turns in a row failed, its turns by step; what the SluiceLoopFailing alert reads",
        ),
    ] = 0,
    metrics_host: Annotated[
        str, typer.Option("--metrics-host", help="address for --metrics-port (0.0.0.0 in a pod)")
    ] = "127.0.0.1",
) -> None:
    """Close the loop: monitor, retrain, promote, with Git as the only state.

    Each turn does the one step that follows what Git records for the newest retrain: check the triggers (a
    feature's drift over monitoring.drift_threshold, live accuracy under monitoring.accuracy_threshold, or
    monitoring.retrain_every elapsed) and commit the labelled live rows as a new DVC-tracked data version
    (data/source/live.csv), re-profiling contract.yaml's reference distributions from it (types, categories,
    bounds and nulls stay as reviewed, so broken rows are still refused; a refused data version is reverted); run
    `dvc repro` (validate, train, the evaluate gate, package) and commit it; open
    the rollout of the packaged model into --env (`sluice rollout start`), which the reconciler then drives.
    Every commit carries Sluice-Retrain trailers; a step checks whether its effect is already in Git first, so
    killing the loop at any moment and starting it again never duplicates a commit or a promotion.
    """
    from rollout.policy import parse_duration
    from sluice.commands_monitor import thresholds_from

    try:
        seconds = parse_duration(interval)
    except ValueError as e:
        report(f"--interval: {e}")
    repo = repo.resolve()
    for needed in ("dvc.yaml", "params.yaml", "contract.yaml", ".git"):
        if not (repo / needed).exists():
            report(f"--repo {repo}: no {needed} (the loop runs in a Sluice repository)")
    from monitor.sources import SourceError, is_stream, open_source

    try:
        open_source(log_dir)
    except SourceError as e:
        report(e)
    if state is None:
        from monitor.loop import LoopError, git

        try:
            state = Path(git(repo, "rev-parse", "--absolute-git-dir").strip()) / "sluice" / "log-reader"
        except LoopError as e:
            report(f"--repo {repo}: {e}")
    policy = policy or repo / "policies" / f"{env}.yaml"
    if not policy.is_file():
        report(f"--policy {policy}: no such file")
    thresholds, label_window, spec = thresholds_from(policy, None, None)
    if metrics_port and (once or collect):
        report("--metrics-port goes with the long-running loop, not --once or --collect")
    if not 0 <= metrics_port <= 65535:
        report(f"--metrics-port {metrics_port}: not a port number")
    if min_new_labels < 1:
        report(f"--min-new-labels: {min_new_labels} must be at least 1")

    from monitor.loop import LoopError, LoopSettings, Outcome, follow_chain, next_step, run_loop

    settings = LoopSettings(
        repo=repo,
        log_dir=log_dir if is_stream(log_dir) else Path(log_dir).resolve(),
        env=env,
        thresholds=thresholds,
        label_window=label_window,
        retrain_every=spec.retrain_every,
        max_rows=spec.retrain_max_rows,
        min_new_labels=min_new_labels,
        chain=tuple(e.strip() for e in chain.split(",") if e.strip()) if chain else (),
        state_dir=state.resolve(),
        reprofile=not keep_reference,
    )
    if chain and (len(settings.chain) < 2 or settings.chain[0] != env):
        report(f"--chain {chain!r}: name at least two environments, starting with --env {env}")

    def show(outcome: Outcome) -> None:
        style = {"error": "bold red", "rejected": "yellow", "chain-refused": "yellow", "waiting": "dim"}.get(
            outcome.step, "green"
        )
        console.print(f"[{style}]{outcome.step}[/] {outcome.detail}", highlight=False, markup=True)

    if collect:
        import time

        from monitor.loop import maybe_start, progress

        try:
            p = progress(repo)
            if p.open:
                show(Outcome("waiting", f"retrain {p.retrain} is open (step {p.step}): it finishes first"))
            else:
                show(maybe_start(settings, p, time.time()))
        except LoopError as e:
            report(str(e))
        return
    if once:
        try:
            show(next_step(settings))
        except LoopError as e:
            report(str(e))
        for link in follow_chain(settings):
            show(link)
        return

    if metrics_port:
        from monitor.loop_metrics import LoopMetrics, namespace_of

        metrics = LoopMetrics(namespace_of(repo, env), env)
        try:
            metrics.serve(metrics_port, metrics_host)
        except OSError as e:
            report(
                f"--metrics-port {metrics_port}: cannot listen on {metrics_host}:{metrics_port} ({e.strerror})"
            )
        console.print(f"loop metrics on http://{metrics_host}:{metrics_port}/metrics", highlight=False)

    def turned(outcome: Outcome) -> None:
        if metrics_port:
            metrics.record(outcome)
        show(outcome)

    stopping = saying("the step under way", console.print)
    with contextlib.suppress(KeyboardInterrupt), stop_on_signals(stopping) as stopped:
        run_loop(settings, seconds, turned, stopped.is_set, stopped.wait)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `sluice` app."""
    app.command("loop")(loop)
