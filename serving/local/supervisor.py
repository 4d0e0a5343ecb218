"""The local runtime behind `sluice up`: one predictor process per predictor, the router, and convergence.

It reads the deployment manifest in a directory (a SeldonDeployment's predictors, or an InferenceService's
stable predictor and canaries), starts a predictor process for each predictor (see
`processes`: each reports its own port and must prove it serves the pinned model and digest), routes to a
predictor only once it is ready, then serves the router: traffic on one port, admin (metrics, routes) on
another, bound to loopback by default. It follows the manifest as a file (`serving.router.watch`, the same
watcher the cluster router uses) and converges on a change: starts new predictors and waits for them, swaps
the routing in one assignment, then drains (in-flight requests finish) and stops the removed ones. A
manifest it cannot run (invalid, or a predictor that does not come up) is refused with a message and the
running set stays as it was. A predictor process that dies is restarted (on a new port it reports);
meanwhile its share of traffic goes to the others and its failed requests are retried there. One that stops
answering its readiness probe is taken out of routing until it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.local.processes import Command, PredictorProcess, StartupError, serving_command
from serving.local.spec import DeploymentSpec, ManifestError, read_manifest
from serving.router.admin import Admin
from serving.router.executor_metrics import PredictorLabels
from serving.router.http_upstream import HttpUpstream
from serving.router.listener import Limits, bind, serve_until
from serving.router.mirroring import MAX_BYTES as MIRROR_BYTES
from serving.router.prediction_log import PredictionLog
from serving.router.proxy import Router
from serving.router.routes import Backend, routes_for
from serving.router.watch import ManifestWatch

log = logging.getLogger("sluice.up")

__all__ = ["LocalRuntime", "RuntimeEvent", "StartupError", "bind", "serving_command"]


@dataclass
class RuntimeEvent:
    """Something the CLI shows: a line of text, and whether the routing table changed."""

    level: int
    message: str
    converged: bool = False


class LocalRuntime:
    """Runs one deployment manifest on this machine. Use `serve()` (blocks until stopped) or the pieces."""

    def __init__(
        self,
        directory: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        admin_host: str = "127.0.0.1",
        admin_port: int = 8001,
        command: Command = serving_command,
        poll_interval: float = 0.5,
        ready_timeout: float = 90.0,
        drain_timeout: float = 15.0,
        health_interval: float = 1.0,
        health_timeout: float = 2.0,
        health_failures: int = 3,
        request_timeout: float = 30.0,
        mirror_bytes: int = MIRROR_BYTES,
        limits: Limits | None = None,
        log_dir: Path | None = None,
        on_event: Callable[[RuntimeEvent], None] | None = None,
        prediction_log: PredictionLog | None = None,
    ):
        self.directory = Path(directory)
        self.host = host
        self.port = port
        self.admin_host = admin_host
        self.admin_port = admin_port
        self.command = command
        self.ready_timeout = ready_timeout
        self.drain_timeout = drain_timeout
        self.health_interval = health_interval
        self.health_timeout = health_timeout
        self.health_failures = health_failures
        self.limits = limits or Limits()
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="sluice-up-"))
        self.on_event = on_event
        self.router = Router(
            timeout=request_timeout,
            mirror_bytes=mirror_bytes,
            mirror_process=True,
            prediction_log=prediction_log,
        )
        self.admin = Admin(self.router)
        self.spec: DeploymentSpec | None = None
        self.processes: dict[tuple[str, str, str, bool], PredictorProcess] = {}
        self.watch = ManifestWatch(
            self.directory,
            self._apply,
            interval=poll_interval,
            report=self._emit,
            refusals=(ManifestError, StartupError),
        )
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self._retiring: list[PredictorProcess] = []  # removed from routing, draining, not yet stopped

    # events --------------------------------------------------------------------------------------------
    def _emit(self, level: int, message: str, converged: bool = False) -> None:
        log.log(level, message)
        if self.on_event is not None:
            self.on_event(RuntimeEvent(level, message, converged))

    def snapshot(self) -> list[dict[str, object]]:
        """The running predictors in manifest order: name, traffic, shadow, port, pid, alive, restarts."""
        order = [p.name for p in self.spec.predictors] if self.spec else []
        rows = []
        for proc in sorted(self.processes.values(), key=lambda p: _index(order, p.spec.name)):
            rows.append(
                {
                    "name": proc.spec.name,
                    "traffic": proc.spec.traffic,
                    "shadow": proc.spec.shadow,
                    "port": proc.port,
                    "pid": proc.pid,
                    "alive": proc.backend.alive,
                    "restarts": proc.restarts,
                    "model_uri": proc.spec.model_uri,
                }
            )
        return rows

    # lifecycle ------------------------------------------------------------------------------------------
    async def serve(self, sock: socket.socket | None = None, admin_sock: socket.socket | None = None) -> None:
        """Start predictors, then the router on `sock` and its admin endpoint on `admin_sock` (or the
        configured addresses); run until `stop()` or SIGINT/SIGTERM."""
        sock = sock or bind(self.host, self.port)
        try:
            admin_sock = admin_sock or bind(self.admin_host, self.admin_port)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self.admin_port = admin_sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.stop)
        try:
            startup = asyncio.create_task(self.start())
            stopper = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait({startup, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if startup not in done:
                startup.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await startup
                return
            stopper.cancel()
            startup.result()
            await serve_until(
                self._stop,
                self.router,
                self.admin,
                sock,
                admin_sock,
                self.limits,
                [self.watch.run(), self._supervise(), self._probe()],
                on_started=lambda: self._emit(
                    logging.INFO,
                    f"router listening on http://{self.host}:{self.port} "
                    f"(admin: metrics and routes on http://{self.admin_host}:{self.admin_port})",
                ),
            )
        finally:
            await self.shutdown()
            sock.close()
            admin_sock.close()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(sig)

    def stop(self) -> None:
        self._stop.set()

    async def start(self) -> None:
        """Read the manifest and bring up its predictors; raises ManifestError or StartupError."""
        path, content = self.watch.read()
        await self.converge(read_manifest(path))
        self.watch.mark(content)

    async def shutdown(self) -> None:
        """Stop every predictor process (the router has stopped taking requests by now)."""
        for t in list(self._background):
            t.cancel()
        self.router.swap(None)
        procs = list(self.processes.values()) + self._retiring
        self.processes.clear()
        self._retiring = []
        await asyncio.gather(*(p.terminate() for p in procs))
        await self.router.mirror.stop()

    # convergence ------------------------------------------------------------------------------------------
    async def _apply(self, path: Path, content: bytes) -> None:
        spec = read_manifest(path)
        self._emit(logging.INFO, f"{path.name} changed: converging")
        await self.converge(spec)

    async def converge(self, spec: DeploymentSpec) -> None:
        """Make the running set match `spec`; on StartupError the running set is left as it was."""
        async with self._lock:
            desired = {p.process_key: p for p in spec.predictors}
            labels = {
                p.name: PredictorLabels.of(spec.view.namespace, spec.name, p) for p in spec.view.predictors
            }
            new = [p for key, p in desired.items() if key not in self.processes]
            started: list[PredictorProcess] = []
            try:
                for p in new:
                    proc = PredictorProcess(
                        p,
                        Backend(p.name, labels[p.name], HttpUpstream(self.host, 0)),
                        self.log_dir / f"{p.name}-{len(self.processes) + len(started)}.log",
                        self.host,
                    )
                    started.append(proc)
                    self._emit(logging.INFO, f"starting {p.name} ({p.model_uri})")
                    proc.launch(self.command)
                await asyncio.gather(*(self._wait_ready(proc) for proc in started))
            except BaseException:
                await asyncio.gather(*(proc.terminate() for proc in started))
                raise
            for proc in started:
                proc.backend.ready = True
                self.processes[proc.spec.process_key] = proc
            for key, p in desired.items():
                proc = self.processes[key]
                proc.spec = p
                proc.backend.labels = labels[p.name]
            removed = [proc for key, proc in self.processes.items() if key not in desired]
            backends = {p.name: self.processes[p.process_key].backend for p in spec.predictors}
            self.router.swap(routes_for(spec.view, backends))
            for proc in removed:
                del self.processes[proc.spec.process_key]
                proc.backend.ready = False  # not even a retry goes there any more
                self._retiring.append(proc)
                self._in_background(self._retire(proc))
            self.spec = spec
            weights = ", ".join(
                f"{p.name}={'shadow ' if p.shadow else ''}{p.traffic}" for p in spec.predictors
            )
            self._emit(logging.INFO, f"routing {spec.name}: {weights}", converged=True)

    async def _retire(self, proc: PredictorProcess) -> None:
        drained = await _drain(proc.backend, self.drain_timeout)
        if proc.spec.shadow:
            await self.router.mirror.join(min(self.drain_timeout, 2.0))
        await proc.terminate()
        if proc in self._retiring:
            self._retiring.remove(proc)
        note = "" if drained else f" ({proc.backend.in_flight} requests still in flight after drain timeout)"
        self._emit(logging.INFO, f"stopped {proc.spec.name}{note}")

    # processes ---------------------------------------------------------------------------------------------
    async def _wait_ready(self, proc: PredictorProcess) -> None:
        """Learn the process's port, then wait until its probe names the pinned model and digest."""
        deadline = time.monotonic() + self.ready_timeout
        port = await proc.wait_port(deadline)
        old = proc.backend.upstream
        proc.backend.upstream = HttpUpstream(self.host, port)
        await old.close()
        problem: str | None = "not probed"
        while True:
            assert proc.popen is not None
            code = proc.popen.poll()
            if code is not None:
                raise StartupError(
                    f"predictor {proc.spec.name} exited with code {code} before it was ready:\n{proc.log_tail()}"
                )
            problem = await proc.probe(timeout=2.0)
            if problem is None:
                return
            if time.monotonic() > deadline:
                raise StartupError(
                    f"predictor {proc.spec.name} not ready after {self.ready_timeout:g} s "
                    f"(port {port}: {problem}):\n{proc.log_tail()}"
                )
            await asyncio.sleep(0.05)

    async def _supervise(self) -> None:
        """Restart predictor processes that die (with a growing pause if they keep dying)."""
        while True:
            await asyncio.sleep(0.05)
            for proc in list(self.processes.values()):
                if proc.stopping or proc.restarting or proc.popen is None:
                    continue
                code = proc.popen.poll()
                if code is None:
                    continue
                proc.backend.ready = False
                proc.restarting = True
                await proc.backend.upstream.close()  # requests in flight there fail now, and are retried
                self._emit(
                    logging.WARNING,
                    f"predictor {proc.spec.name} (pid {proc.popen.pid}) exited with code {code}; restarting",
                )
                self._in_background(self._restart(proc))

    async def _probe(self) -> None:
        """Take a predictor that stops answering its readiness probe out of routing until it answers again.

        A hung process (alive, not answering) would otherwise hold each request it gets until the request
        timeout; a crashed one is handled by `_supervise`. Conservative on purpose: `health_failures`
        probes in a row, each allowed `health_timeout` seconds, so that a busy machine is not mistaken
        for a hung predictor.
        """
        failures: dict[int, int] = {}
        while True:
            await asyncio.sleep(self.health_interval)
            procs = [
                p
                for p in self.processes.values()
                if not (p.stopping or p.restarting or p.popen is None or p.popen.poll() is not None)
            ]
            results = await asyncio.gather(*(p.probe(self.health_timeout) for p in procs))
            for proc, problem in zip(procs, results, strict=True):
                key = id(proc)
                if self.processes.get(proc.spec.process_key) is not proc or proc.restarting:
                    continue  # retired or restarted while the probe ran
                if problem is None:
                    if failures.pop(key, 0) >= self.health_failures and not proc.stopping:
                        proc.backend.ready = True
                        self._emit(logging.INFO, f"predictor {proc.spec.name} answers again: routed")
                    continue
                failures[key] = failures.get(key, 0) + 1
                if failures[key] == self.health_failures and proc.backend.ready:
                    proc.backend.ready = False
                    self._emit(
                        logging.WARNING,
                        f"predictor {proc.spec.name} (pid {proc.pid}) failed its readiness probe "
                        f"{self.health_failures} times ({problem}): out of routing until it answers",
                    )

    async def _restart(self, proc: PredictorProcess) -> None:
        try:
            quick_death = time.monotonic() - proc.started_at < 10.0
            await asyncio.sleep(min(2.0 ** min(proc.restarts, 4), 10.0) if quick_death else 0.0)
            while not proc.stopping:
                proc.restarts += 1
                proc.launch(self.command)
                try:
                    await self._wait_ready(proc)
                except StartupError as e:
                    self._emit(logging.ERROR, f"restart failed: {e}")
                    await asyncio.sleep(min(2.0 ** min(proc.restarts, 4), 10.0))
                    continue
                if not proc.stopping:
                    proc.backend.ready = True
                    self._emit(
                        logging.INFO, f"predictor {proc.spec.name} is back (pid {proc.pid}, port {proc.port})"
                    )
                return
        finally:
            proc.restarting = False

    async def check_manifest(self) -> None:
        """Converge if the manifest's content changed since it was last applied (or refused)."""
        await self.watch.check()

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


async def _drain(backend: Backend, timeout: float) -> bool:
    """Wait until no request is in flight on `backend` (True), or `timeout` seconds (False)."""
    deadline = time.monotonic() + timeout
    while backend.in_flight > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return backend.in_flight == 0


def _index(order: list[str], name: str) -> int:
    return order.index(name) if name in order else len(order)
