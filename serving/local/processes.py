"""Predictor processes on one machine: start one, learn its port from it, check it serves what was asked, stop it.

A predictor binds port 0 itself and writes the port it got to a pipe the runtime gave it (`--report-fd`), so
no other process can take the port between one being picked and being bound. Before it is routed, its
readiness probe must name the model and the digest the manifest pins (`GET /v2/models/NAME/versions/DIGEST/
ready` answering 200 with that name): a process serving anything else is never sent traffic.

A shadow runs at niceness +10 so that on a small machine its copies never take CPU from live answers.
Processes are in their own session (Ctrl-C reaches the runtime only) and get SIGTERM if the runtime dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from serving.local.spec import PredictorSpec
from serving.router.routes import Backend
from serving.router.upstream import UpstreamError

# The argv of a predictor process: (predictor, host to bind, fd to report the bound port on) -> argv.
Command = Callable[[PredictorSpec, str, int], list[str]]
SHADOW_NICENESS = 10


class StartupError(RuntimeError):
    """A predictor process that exited, did not report a port, or did not become ready in time."""


def serving_command(spec: PredictorSpec, host: str, report_fd: int) -> list[str]:
    """The predictor server the runtime starts for one predictor."""
    return [
        sys.executable,
        "-m",
        "serving.http.server",
        "--model",
        spec.model_uri,
        "--port",
        "0",
        "--report-fd",
        str(report_fd),
        "--host",
        host,
        "--name",
        spec.model_name,  # the same v2 model name whichever predictor answers (the manifest's, by kind)
        "--digest",
        spec.model_digest,
    ]


def ready_path(spec: PredictorSpec) -> str:
    """The readiness probe: answers 200 only for this model name and this digest."""
    return f"/v2/models/{spec.model_name}/versions/{spec.model_digest}/ready"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM the predictor if the runtime dies without stopping it (kill -9)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _shadow_child() -> None:  # pragma: no cover - runs in the child between fork and exec
    """A shadow yields the CPU to live predictors: on a small machine it must not slow live answers."""
    _die_with_parent()
    with contextlib.suppress(OSError):
        os.nice(SHADOW_NICENESS)


@dataclass(eq=False)
class PredictorProcess:
    """One predictor's process (restarted in place when it dies) and the backend the router reaches it by."""

    spec: PredictorSpec
    backend: Backend
    log_path: Path
    host: str
    popen: subprocess.Popen[bytes] | None = None
    port: int | None = None
    restarts: int = 0
    stopping: bool = False
    restarting: bool = False
    started_at: float = field(default_factory=time.monotonic)
    _report: int | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").rstrip().splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:]) or "(empty log)"

    def launch(self, command: Command) -> None:
        """Start the process; `wait_port` then learns where it listens."""
        read_end, write_end = os.pipe()
        try:
            argv = command(self.spec, self.host, write_end)
            with self.log_path.open("ab") as out:
                self.popen = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=dict(os.environ, PYTHONUNBUFFERED="1"),
                    pass_fds=(write_end,),
                    start_new_session=True,
                    preexec_fn=_shadow_child if self.spec.shadow else _die_with_parent,
                )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        self._close_report()
        self._report = read_end
        os.set_blocking(read_end, False)
        self.port = None
        self.started_at = time.monotonic()

    async def wait_port(self, deadline: float) -> int:
        """The port the process reports once it listens; StartupError if it exits or the deadline passes."""
        assert self._report is not None and self.popen is not None
        data = b""
        closed = False
        try:
            while b"\n" not in data and not (closed and data):
                try:
                    chunk: bytes | None = os.read(self._report, 64)
                except BlockingIOError:
                    chunk = None
                if chunk:
                    data += chunk
                    continue
                closed = chunk == b""  # the write end is closed: the process reported, or exited
                code = self.popen.poll()
                if code is not None and not data:
                    raise self._exited(code)
                if time.monotonic() > deadline:
                    what = (
                        "closed its report pipe without a port"
                        if closed
                        else "did not report its port in time"
                    )
                    raise StartupError(f"predictor {self.spec.name} {what}:\n{self.log_tail()}")
                if not data:
                    await asyncio.sleep(0.02)
        finally:
            self._close_report()
        try:
            port = int(data.split(b"\n", 1)[0])
        except ValueError:
            raise StartupError(f"predictor {self.spec.name} reported {data[:40]!r}, not a port") from None
        if not 0 < port < 65536:
            raise StartupError(f"predictor {self.spec.name} reported port {port}, out of range")
        self.port = port
        return port

    def _exited(self, code: int) -> StartupError:
        return StartupError(
            f"predictor {self.spec.name} exited with code {code} before it was ready:\n{self.log_tail()}"
        )

    def _close_report(self) -> None:
        if self._report is not None:
            with contextlib.suppress(OSError):
                os.close(self._report)
            self._report = None

    async def probe(self, timeout: float) -> str | None:
        """None when the process serves this predictor's model and digest; otherwise what is wrong."""
        try:
            response = await self.backend.upstream.request("GET", ready_path(self.spec), [], b"", timeout)
        except UpstreamError as e:
            return str(e)
        if response.status != 200:
            return f"readiness probe answered {response.status}"
        try:
            name = orjson.loads(response.body).get("name")
        except (orjson.JSONDecodeError, AttributeError):
            name = None
        if name != self.spec.model_name:
            return f"readiness probe named model {name!r}, expected {self.spec.model_name!r}"
        return None

    async def terminate(self) -> None:
        self.stopping = True
        self.backend.ready = False
        self._close_report()
        await self.backend.upstream.close()
        popen = self.popen
        if popen is None or popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        while popen.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                popen.kill()
            await asyncio.to_thread(popen.wait)
