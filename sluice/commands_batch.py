"""`sluice batch ...`: score files in chunks (resumable), and watch a directory to score each new file once."""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from sluice.console import console, report
from sluice.stopping import saying, stop_on_signals

app = typer.Typer(
    help="Batch predictions: files in, the same rows out with prediction, probabilities and model digest.",
    no_args_is_help=True,
)

ModelOption = Annotated[
    str, typer.Option("--model", help="Bundle path, file:// URI, models:/name@alias or models:/name/version.")
]
ChunkOption = Annotated[
    int, typer.Option("--chunk-size", min=1, help="Rows per chunk: memory follows this, not the file size.")
]
DigestOption = Annotated[
    str | None,
    typer.Option("--model-digest", help="Refuse the model unless its digest is this (sha256:...)."),
]


def _load(model: str, digest: str | None) -> Any:
    from model.bundle import BundleError
    from model.registry import RegistryError
    from serving.core.predictor import Predictor

    try:
        return Predictor.load(model, digest)
    except (BundleError, RegistryError, FileNotFoundError) as e:
        report(e)


@app.command("score")
def score(
    model: ModelOption,
    input: Annotated[
        Path, typer.Option("--input", help="CSV, Parquet or JSON Lines (.csv, .parquet, .jsonl).")
    ],
    output: Annotated[
        Path, typer.Option("--output", help="Where to write the scored rows (format by extension).")
    ],
    chunk_size: ChunkOption = 50_000,
    rejects: Annotated[
        Path | None, typer.Option("--rejects", help="Reject file (default: <output stem>.rejects.jsonl).")
    ] = None,
    model_digest: DigestOption = None,
    engine: Annotated[
        str | None,
        typer.Option(
            "--engine",
            help="local (one process, streaming), dask or spark. Default: local for one worker, dask for more.",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Worker processes for dask (a LocalCluster) or spark (local[N]) when no --cluster is given.",
        ),
    ] = 1,
    summary_json: Annotated[
        Path | None,
        typer.Option(
            "--summary-json", help="Also write the run's summary (counts, files, seconds) as JSON here."
        ),
    ] = None,
    checkpoint_every: Annotated[
        float,
        typer.Option(
            "--checkpoint-every",
            min=0,
            help="Seconds between durable checkpoints (local engine): a crash redoes at most this much work. "
            "0: after every chunk (an fsync per chunk).",
        ),
    ] = 1.0,
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster",
            help="An existing cluster: a Dask scheduler (tcp://host:8786) or a Spark master (spark://host:7077). "
            "Its workers must see the bundle, the input and the output directory under the same paths.",
        ),
    ] = None,
) -> None:
    """Score a file in chunks. Rerun the same command after a crash: finished chunks are kept, not redone.

    Every engine cuts the file into the same chunks and writes the same bytes; dask and spark score runs of
    chunks in parallel workers and then gather them into the output, local streams the file through one
    process (the fastest on one core).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from serving.batch.engines import ENGINES, make_engine
    from serving.batch.formats import BatchError, detect_format
    from serving.batch.score import count_rows, score_file

    name = engine or ("dask" if workers > 1 or cluster else "local")
    if name not in ENGINES:
        report(f"--engine {name}: expected one of {', '.join(ENGINES)}")
    predictor = _load(model, model_digest)
    try:
        runner = make_engine(name, workers, cluster)
        total = count_rows(input, detect_format(input)) if input.is_file() else None
        with Progress(
            TextColumn(f"[bold]scoring ({name})[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rows"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("score", total=total)
            summary = score_file(
                predictor,
                input,
                output,
                chunk_size=chunk_size,
                rejects=rejects,
                progress=lambda rows: bar.update(task, completed=rows),
                engine=runner,
                checkpoint_every=checkpoint_every,
            )
    except BatchError as e:
        report(e)
    if summary_json is not None:
        _write_json(summary_json, asdict(summary))
    console.print(summary.explain(), highlight=False, markup=False)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


@app.command("gather")
def gather(
    shards: Annotated[
        Path,
        typer.Argument(
            help="A directory holding scored shards, each with its <name>.summary.json (any depth)."
        ),
    ],
    output: Annotated[Path, typer.Option("--output", help="The joined output file (format by extension).")],
    rejects: Annotated[
        Path | None, typer.Option("--rejects", help="Joined reject file (default: <output>.rejects.jsonl).")
    ] = None,
    summary_json: Annotated[
        Path | None, typer.Option("--summary-json", help="Also write the totals as JSON here.")
    ] = None,
) -> None:
    """Join shards scored one by one (`sluice batch score --summary-json`) into one output and one reject
    file, in the order of their paths; each reject line says which shard it came from. What the batch-score
    workflow runs after scoring its shards in parallel pods."""
    from serving.batch.formats import BatchError
    from serving.batch.shards import gather as join

    try:
        summary = join(shards, output, rejects)
    except BatchError as e:
        report(e)
    if summary_json is not None:
        _write_json(summary_json, asdict(summary))
    console.print(summary.explain(), highlight=False, markup=False)


@app.command("watch")
def watch(
    directory: Annotated[Path, typer.Argument(help="The inbox: files landing here are scored once each.")],
    model: ModelOption,
    out: Annotated[Path, typer.Option("--out", help="Where scored files, rejects and the ledger go.")],
    interval: Annotated[float, typer.Option("--interval", help="Seconds between scans.")] = 5.0,
    settle: Annotated[
        float, typer.Option("--settle", help="A file must be unchanged this many seconds before it is taken.")
    ] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Scan once and exit (for cron).")] = False,
    chunk_size: ChunkOption = 50_000,
    model_digest: DigestOption = None,
    max_attempts: Annotated[
        int,
        typer.Option(
            "--max-attempts", min=1, help="Tries at a file failing with I/O errors before it is quarantined."
        ),
    ] = 5,
) -> None:
    """Score each new file in DIRECTORY exactly once (a ledger of name + sha256 in OUT).

    Writers should write to a hidden name (`.x.csv.tmp`) and rename into DIRECTORY; otherwise a file is
    taken only after its size and mtime have been stable for --settle seconds.

    A file that cannot be scored (not UTF-8, not CSV, a missing column) is moved to OUT/quarantine/ with a
    .reason.txt beside it, and the scan goes on. I/O errors are retried with back-off. OUT may not be
    inside DIRECTORY.

    Periodic runs on one machine (cron; flock keeps two runs from overlapping):

        */15 * * * * cd /srv/sluice && flock -n /tmp/sluice-batch.lock .venv/bin/sluice batch watch /data/inbox --model models:/sluice-classifier@champion --out /data/scored --once

    In a cluster the same command runs in an Argo CronWorkflow, or is submitted by an Argo Events sensor.
    """
    from serving.batch.formats import BatchError
    from serving.batch.watch import Watcher, WatchEvent

    predictor = _load(model, model_digest)
    try:
        watcher = Watcher(
            predictor, directory, out, settle=settle, chunk_size=chunk_size, max_attempts=max_attempts
        )
    except BatchError as e:
        report(e)

    def show(event: WatchEvent) -> None:
        colour = {"scored": "green", "retrying": "yellow"}.get(event.status, "red")
        console.print(
            f"[{colour}]{event.status}[/] {escape(event.name)}: {escape(event.detail)}", highlight=False
        )

    def trouble(error: OSError, wait: float) -> None:
        console.print(
            f"[yellow]scan failed[/]: {escape(str(error))}; next scan in {wait:g} s", highlight=False
        )

    if once:
        try:
            events = watcher.scan(show)
        except OSError as e:
            report(f"{directory}: scan failed ({e})")
        console.print(f"{len(events)} file(s) handled", highlight=False, markup=False)
        return
    console.print(
        f"watching {directory} every {interval:g} s (Ctrl-C to stop)", highlight=False, markup=False
    )
    # a second Ctrl-C stops at once: a file scored in part resumes from its checkpoint at the next scan
    stopping = saying("the file under way", console.print)
    with contextlib.suppress(KeyboardInterrupt), stop_on_signals(stopping) as stopped:
        watcher.run(interval, stop=stopped.is_set, on_event=show, on_error=trouble)


def register(app_: typer.Typer) -> None:
    """Add this module's commands to the `sluice` app."""
    app_.add_typer(app, name="batch")
