"""The prediction-log options `sluice up` and `sluice router` share, and the log they open."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sluice.console import report

if TYPE_CHECKING:
    from serving.router.prediction_log import PredictionLog

PredictionLogDir = Annotated[
    str | None,
    typer.Option(
        help="record each answer (inputs, prediction, predictor, model digest, puid, time) and each feedback, "
        "for `sluice monitor` and `sluice loop`: a DIRECTORY of JSON Lines files (one machine), or a Redis "
        "stream redis://host:port/db?stream=KEY (a cluster; KEY defaults to sluice:predictions); off the "
        "request path (a bounded buffer; records that do not fit, or that Redis does not take, are dropped and "
        "counted in sluice_prediction_log_dropped_total)",
        envvar="SLUICE_PREDICTION_LOG",
        rich_help_panel="Prediction log",
    ),
]
LogSample = Annotated[
    float | None,
    typer.Option(
        help="the fraction of predictions recorded, 0-1 (feedback is always recorded) (default: the policy's "
        "monitoring.sample, else 1)",
        rich_help_panel="Prediction log",
    ),
]
LogPolicy = Annotated[
    Path | None,
    typer.Option(
        help="a promotion policy whose `monitoring.sample` sets the sampling rate (policies/<env>.yaml)",
        rich_help_panel="Prediction log",
    ),
]
LogFileMb = Annotated[
    float, typer.Option(help="start a new log file past this size (MiB)", rich_help_panel="Prediction log")
]
LogMaxlen = Annotated[
    int,
    typer.Option(
        help="(a Redis stream) keep about this many entries: XADD MAXLEN ~ (older ones are trimmed)",
        rich_help_panel="Prediction log",
    ),
]
LogKeepFiles = Annotated[
    int | None,
    typer.Option(
        help="delete the oldest log files beyond this many (default: keep all)",
        rich_help_panel="Prediction log",
    ),
]


def open_prediction_log(
    directory: str | Path | None,
    sample: float | None,
    policy: Path | None,
    file_mb: float,
    keep_files: int | None,
    maxlen: int = 1_000_000,
) -> PredictionLog | None:
    """The log the options ask for (None without a destination); a bad option ends the command with its name."""
    # (SLUICE_PREDICTION_LOG set but empty, a Secret without a URL: no log)
    if directory is None or not str(directory).strip():
        if sample is not None or policy is not None:
            report("--log-sample and --log-policy need --prediction-log DIR")
        return None
    if sample is None and policy is not None:
        from rollout.policy import PolicyError, load_policy

        try:
            sample = load_policy(policy).monitoring.sample
        except (PolicyError, OSError) as e:
            report(f"--log-policy {policy}: {e}")
    if sample is None:
        sample = 1.0
    if not 0.0 <= sample <= 1.0:
        report(f"--log-sample: {sample} is not a fraction between 0 and 1")
    if file_mb <= 0:
        report(f"--log-file-mb: {file_mb} must be positive")
    from serving.router.prediction_log import FileSink, LogSink, PredictionLog

    sink: LogSink
    if is_stream(str(directory)):
        from serving.router.log_stream import RedisStreamSink

        try:
            sink = RedisStreamSink(str(directory), maxlen=maxlen)
        except ValueError as e:
            report(f"--prediction-log: {e}")
    else:
        try:
            sink = FileSink(
                Path(directory), max_file_bytes=max(1024, int(file_mb * (1 << 20))), keep_files=keep_files
            )
        except (OSError, ValueError) as e:
            report(f"--prediction-log {directory}: {e}")
    return PredictionLog(sink, sample=sample)


def is_stream(target: str) -> bool:
    """Whether a --prediction-log value names a Redis stream rather than a directory."""
    return target.startswith(("redis://", "rediss://", "unix://"))
