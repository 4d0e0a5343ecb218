"""Shared terminal output for the CLI: one rich console, the one way an expected error is shown, and JSON-lines
logs for long-running commands whose output is not a terminal."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def problems(error: BaseException) -> list[tuple[str, str, Any]]:
    """(field, what is wrong, value) for each thing an error names: a PolicyError's `problems`, a
    ManifestError's `violations`; [] for an error that is one message."""
    found: list[tuple[str, str, Any]] = []
    for p in getattr(error, "problems", ()) or ():
        found.append((str(getattr(p, "field", "")), str(getattr(p, "message", p)), getattr(p, "value", None)))
    for v in getattr(error, "violations", ()) or ():
        found.append((str(v.path), f"{v.message} [{v.rule}]", None))
    return found


def report(error: BaseException | str, code: int = 1) -> NoReturn:
    """The one error path every command can use: the message with Rich markup escaped (so `[canary 10%]`
    or `[weights]` stay in it), then, when the error names them, one line per problem with the file, the
    field and the value. Exits with `code`."""
    text = str(error)
    found = [] if isinstance(error, str) else problems(error)
    source = "" if isinstance(error, str) else str(getattr(error, "source", "") or "")
    if not found:
        err_console.print(f"[bold red]error:[/] {escape(text)}", highlight=False)
        raise typer.Exit(code)
    where = source or text.split("\n", 1)[0]
    err_console.print(f"[bold red]error:[/] {escape(where)}: {len(found)} problem(s)", highlight=False)
    for field, message, value in found:
        got = "" if value is None else f" (got {value!r})"
        line = f"{source + ': ' if source else ''}{field or '(the whole file)'}: {message}{got}"
        err_console.print(f"  {escape(line)}", highlight=False)
    raise typer.Exit(code)


class JsonLines(logging.Formatter):
    """One JSON object per log record: time, level, logger, message, and the record's `event` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        event = getattr(record, "event", None)
        if isinstance(event, dict):
            out.update(event)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


@contextmanager
def json_logs(stream: IO[str] | None = None, level: int = logging.INFO) -> Iterator[None]:
    """While the block runs, every log record goes to `stream` (stdout by default) as one JSON line: what a
    log collector reads from a pod or a CI job. Per-request logs of HTTP clients stay out (warnings only)."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonLines())
    root = logging.getLogger()
    quiet = [logging.getLogger(name) for name in ("httpx", "httpcore", "urllib3")]
    saved = root.level, [q.level for q in quiet]
    root.addHandler(handler)
    root.setLevel(level)
    for q in quiet:
        q.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        for q, old in zip(quiet, saved[1], strict=True):
            q.setLevel(old)
