"""`sluice demo`: the main job — the whole loop on one machine, watched live, with a report at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sluice.console import console, report


def demo(
    fast: Annotated[
        bool, typer.Option("--fast", help="Shorter bake times and windows (what CI runs).")
    ] = False,
    out: Annotated[Path, typer.Option(help="Where the scratch repository, logs and report go.")] = Path(
        "reports/demo"
    ),
    rate: Annotated[
        float, typer.Option(help="Client requests per second replayed against the gateway.")
    ] = 50.0,
    repo: Annotated[Path, typer.Option(help="The Sluice repository to clone (its committed state).")] = Path(
        "."
    ),
) -> None:
    """Train a stable model, serve it, promote a better candidate by canary, roll back a broken one, then run
    the broken one through shadow, A/B and blue/green; then drift the client's traffic and let monitoring,
    retraining and the staging -> production chain replace the model, with production's approval the one human
    step (the demo grants it) — every traffic change a Git commit in a scratch clone (reports/demo/work/repo),
    with live traffic and delayed ground truth. Writes reports/demo/summary.json, rollout.png, rollout.html and
    strategies.md."""
    from demo.run import Demo, DemoError, Settings
    from demo.scratch import ScratchError

    try:
        summary = Demo(repo, Settings(fast=fast, out=out, rate=rate), console).run()
    except (DemoError, ScratchError) as e:
        report(e)
    acts = summary["acts"]
    wrong = [a["name"] for a in acts if a["outcome"] != a["expected"]]
    failures = summary["client"]["failures"]
    console.print(
        f"demo finished in {summary['duration_seconds']:.0f} s: {len(acts)} rollouts, "
        f"{summary['traffic_commits']} traffic commits, {summary['client']['requests']} client requests, "
        f"{failures} failed",
        highlight=False,
    )
    act5 = summary.get("act5") or {}
    if act5.get("drift_to_production_seconds") is not None:
        parts = ", ".join(
            f"{k.replace('_', ' ')} {v:.1f} s" for k, v in act5["parts_seconds"].items() if v is not None
        )
        approval = act5.get("approval") or {}
        console.print(
            f"drift onset → {act5['candidate']} serving 100 % of production in "
            f"{act5['drift_to_production_seconds']:.1f} s ({parts}); the one human step, production's "
            f"approval, was granted by {approval.get('approved_by')}",
            highlight=False,
        )
    if wrong or failures:
        report(f"unexpected outcome in {', '.join(wrong) or 'no act'}; {failures} failed client requests")
