"""The local runtime behind `sluice up`: one predictor process per predictor, the gateway, and convergence.

It reads the SeldonDeployment in a directory, starts `python -m serving.http.server` for each predictor on a free
port, routes to a predictor only once it answers `/v2/health/ready`, then serves the gateway. It polls the
manifest (every 0.5 s, by content hash) and converges on a change: starts new predictors and waits for them,
swaps the routing table in one assignment, then drains (in-flight requests finish) and stops the removed
ones. A manifest it cannot run (invalid, or a predictor that does not come up) is refused with a message and
the running set stays as it was. A shadow predictor runs at niceness +10, so that on a small machine the
mirrored copies never take CPU from the live answers (its queue drops copies instead, and counts them);
turning a shadow into a live predictor therefore starts a fresh process, routed once ready. A predictor process that dies is restarted on its port; meanwhile its
share of traffic goes to the others and its failed requests are retried there.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.local.spec import DeploymentSpec, ManifestError, PredictorSpec, find_manifest, read_manifest
from serving.router.executor_metrics import PredictorLabels
from serving.router.proxy import Backend, Gateway, Routes
from serving.router.routing import RoutingTable, Target
from serving.router.server import GatewayServer
from serving.router.upstream import Upstream, UpstreamError

log = logging.getLogger("sluice.up")

READY_PATH = "/v2/health/ready"
Command = Callable[[PredictorSpec, str, int], list[str]]


class StartupError(RuntimeError):
    """A predictor process that exited or did not become ready in time; carries the tail of its log."""


def serving_command(spec: PredictorSpec, host: str, port: int) -> list[str]:
    """The predictor server the runtime starts for one predictor."""
    return [
        sys.executable,
        "-m",
        "serving.http.server",
        "--model",
        spec.model_uri,
        "--port",
        str(port),
        "--host",
        host,
        "--name",
        spec.model_name,  # the graph node's name: the same v2 model name whichever predictor answers
        "--digest",
        spec.model_digest,
    ]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RuntimeEvent:
    """Something the CLI shows: a line of text, and whether the routing table changed."""

    level: int
    message: str
    converged: bool = False


@dataclass
class PredictorProcess:
    spec: PredictorSpec
    port: int
    upstream: Upstream
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    stopping: bool = False
    restarting: bool = False
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").rstrip().splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:]) or "(empty log)"


SHADOW_NICENESS = 10


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


class LocalRuntime:
    """Runs one SeldonDeployment on this machine. Use `serve()` (blocks until stopped) or the pieces."""

    def __init__(
        self,
        directory: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        command: Command = serving_command,
        poll_interval: float = 0.5,
        ready_timeout: float = 90.0,
        drain_timeout: float = 15.0,
        health_interval: float = 1.0,
        health_timeout: float = 2.0,
        health_failures: int = 3,
        request_timeout: float = 30.0,
        log_dir: Path | None = None,
        on_event: Callable[[RuntimeEvent], None] | None = None,
    ):
        self.directory = Path(directory)
        self.host = host
        self.port = port
        self.command = command
        self.poll_interval = poll_interval
        self.ready_timeout = ready_timeout
        self.drain_timeout = drain_timeout
        self.health_interval = health_interval
        self.health_timeout = health_timeout
        self.health_failures = health_failures
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="sluice-up-"))
        self.on_event = on_event
        self.gateway = Gateway(timeout=request_timeout)
        self.spec: DeploymentSpec | None = None
        self.processes: dict[tuple[str, str, str, bool], PredictorProcess] = {}
        self.manifest_path: Path | None = None
        self._applied_hash: str | None = None
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
        rows = []
        order = [p.name for p in self.spec.predictors] if self.spec else []
        for proc in sorted(self.processes.values(), key=lambda p: _index(order, p.spec.name)):
            rows.append(
                {
                    "name": proc.spec.name,
                    "traffic": proc.spec.traffic,
                    "shadow": proc.spec.shadow,
                    "port": proc.port,
                    "pid": proc.pid,
                    "alive": proc.upstream.alive,
                    "restarts": proc.restarts,
                    "model_uri": proc.spec.model_uri,
                }
            )
        return rows

    # lifecycle ------------------------------------------------------------------------------------------
    async def serve(self, sock: socket.socket | None = None) -> None:
        """Start predictors, then the gateway on `sock` (or host:port); run until `stop()` or a signal."""
        sock = sock or bind(self.host, self.port)
        self.port = sock.getsockname()[1]
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
            server = GatewayServer(self.gateway)
            await server.start(sock)
            watcher = asyncio.create_task(self._watch())
            supervisor = asyncio.create_task(self._supervise())
            prober = asyncio.create_task(self._probe())
            self._emit(logging.INFO, f"gateway listening on http://{self.host}:{self.port}")
            try:
                await self._stop.wait()
            finally:
                for t in (watcher, supervisor, prober):
                    t.cancel()
                for t in (watcher, supervisor, prober):
                    with contextlib.suppress(asyncio.CancelledError):
                        await t
                await server.shutdown()
        finally:
            await self.shutdown()
            sock.close()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(sig)

    def stop(self) -> None:
        self._stop.set()

    async def start(self) -> None:
        """Read the manifest and bring up its predictors; raises ManifestError or StartupError."""
        self.manifest_path = find_manifest(self.directory)
        content = self.manifest_path.read_bytes()
        spec = read_manifest(self.manifest_path)
        await self.converge(spec)
        self._applied_hash = hashlib.sha256(content).hexdigest()

    async def shutdown(self) -> None:
        """Stop every predictor process (the gateway has stopped taking requests by now)."""
        for t in list(self._background):
            t.cancel()
        self.gateway.swap(None)
        procs = list(self.processes.values()) + self._retiring
        self.processes.clear()
        self._retiring = []
        await asyncio.gather(*(self._terminate(p) for p in procs))
        await self.gateway.mirror.stop()

    # convergence ------------------------------------------------------------------------------------------
    async def converge(self, spec: DeploymentSpec) -> None:
        """Make the running set match `spec`; on StartupError the running set is left as it was."""
        async with self._lock:
            desired = {p.process_key: p for p in spec.predictors}
            new = [p for key, p in desired.items() if key not in self.processes]
            started: list[PredictorProcess] = []
            try:
                for p in new:
                    proc = self._spawn(p)
                    started.append(proc)
                    self._emit(logging.INFO, f"starting {p.name} ({p.model_uri}) on port {proc.port}")
                await asyncio.gather(*(self._wait_ready(proc) for proc in started))
            except BaseException:
                await asyncio.gather(*(self._terminate(proc) for proc in started))
                raise
            for proc in started:
                proc.upstream.ready = True
                self.processes[proc.spec.process_key] = proc
            for key, p in desired.items():
                self.processes[key].spec = p
            removed = [proc for key, proc in self.processes.items() if key not in desired]
            self.gateway.swap(self._routes(spec))
            for proc in removed:
                del self.processes[proc.spec.process_key]
                proc.upstream.ready = False  # not even a retry goes there any more
                self._retiring.append(proc)
                self._in_background(self._retire(proc))
            self.spec = spec
            weights = ", ".join(
                f"{p.name}={'shadow ' if p.shadow else ''}{p.traffic}" for p in spec.predictors
            )
            self._emit(logging.INFO, f"routing {spec.name}: {weights}", converged=True)

    def _routes(self, spec: DeploymentSpec) -> Routes:
        targets = [Target(p.name, p.traffic, p.shadow) for p in spec.predictors]
        backends = {}
        for p in spec.predictors:
            proc = self.processes[p.process_key]
            backends[p.name] = Backend(p.name, PredictorLabels.of(spec.name, p), proc.upstream)
        return Routes(spec.name, RoutingTable(targets), backends)

    async def _retire(self, proc: PredictorProcess) -> None:
        drained = await proc.upstream.drain(self.drain_timeout)
        if proc.spec.shadow:
            await self.gateway.mirror.join(min(self.drain_timeout, 2.0))
        await self._terminate(proc)
        if proc in self._retiring:
            self._retiring.remove(proc)
        note = "" if drained else f" ({proc.upstream.in_flight} requests still in flight after drain timeout)"
        self._emit(logging.INFO, f"stopped {proc.spec.name}{note}")

    # processes ---------------------------------------------------------------------------------------------
    def _spawn(self, spec: PredictorSpec, port: int | None = None) -> PredictorProcess:
        port = port or free_port(self.host)
        log_path = self.log_dir / f"{spec.name}-{port}.log"
        proc = PredictorProcess(spec, port, Upstream(self.host, port), log_path)
        self._launch(proc)
        return proc

    def _launch(self, proc: PredictorProcess) -> None:
        argv = self.command(proc.spec, self.host, proc.port)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with proc.log_path.open("ab") as out:
            proc.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C reaches the runtime only; it stops the predictors itself
                preexec_fn=_shadow_child if proc.spec.shadow else _die_with_parent,
            )
        proc.started_at = time.monotonic()

    async def _wait_ready(self, proc: PredictorProcess) -> None:
        deadline = time.monotonic() + self.ready_timeout
        probe = Upstream(self.host, proc.port, max_idle=1)
        try:
            while True:
                assert proc.popen is not None
                code = proc.popen.poll()
                if code is not None:
                    raise StartupError(
                        f"predictor {proc.spec.name} exited with code {code} before it was ready:\n"
                        f"{proc.log_tail()}"
                    )
                with contextlib.suppress(UpstreamError):
                    response = await probe.request("GET", READY_PATH, [], b"", timeout=2.0)
                    if response.status == 200:
                        return
                if time.monotonic() > deadline:
                    raise StartupError(
                        f"predictor {proc.spec.name} not ready after {self.ready_timeout:g} s "
                        f"(GET {READY_PATH} on port {proc.port}):\n{proc.log_tail()}"
                    )
                await asyncio.sleep(0.05)
        finally:
            probe.close()

    async def _terminate(self, proc: PredictorProcess) -> None:
        proc.stopping = True
        proc.upstream.ready = False
        proc.upstream.close()
        popen = proc.popen
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

    async def _supervise(self) -> None:
        """Restart predictor processes that die (with a growing pause if they keep dying)."""
        while True:
            await asyncio.sleep(0.1)
            for proc in list(self.processes.values()):
                if proc.stopping or proc.restarting or proc.popen is None:
                    continue
                code = proc.popen.poll()
                if code is None:
                    continue
                proc.upstream.ready = False
                proc.upstream.reset()
                proc.restarting = True
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
            results = await asyncio.gather(*(self._answers(p) for p in procs))
            for proc, ok in zip(procs, results, strict=True):
                key = id(proc)
                if self.processes.get(proc.spec.process_key) is not proc:
                    continue  # retired while the probe ran
                if ok:
                    if failures.pop(key, 0) >= self.health_failures and not proc.stopping:
                        proc.upstream.ready = True
                        self._emit(logging.INFO, f"predictor {proc.spec.name} answers again: routed")
                    continue
                failures[key] = failures.get(key, 0) + 1
                if failures[key] == self.health_failures and proc.upstream.ready:
                    proc.upstream.ready = False
                    self._emit(
                        logging.WARNING,
                        f"predictor {proc.spec.name} (pid {proc.pid}) has not answered {READY_PATH} "
                        f"{self.health_failures} times: out of routing until it does",
                    )

    async def _answers(self, proc: PredictorProcess) -> bool:
        probe = Upstream(self.host, proc.port, max_idle=1)
        try:
            response = await probe.request("GET", READY_PATH, [], b"", timeout=self.health_timeout)
            return response.status == 200
        except UpstreamError:
            return False
        finally:
            probe.close()

    async def _restart(self, proc: PredictorProcess) -> None:
        try:
            quick_death = time.monotonic() - proc.started_at < 10.0
            await asyncio.sleep(min(2.0 ** min(proc.restarts, 4), 10.0) if quick_death else 0.0)
            while not proc.stopping:
                proc.restarts += 1
                self._launch(proc)
                try:
                    await self._wait_ready(proc)
                except StartupError as e:
                    self._emit(logging.ERROR, f"restart failed: {e}")
                    await asyncio.sleep(min(2.0 ** min(proc.restarts, 4), 10.0))
                    continue
                if not proc.stopping:
                    proc.upstream.ready = True
                    self._emit(logging.INFO, f"predictor {proc.spec.name} is back (pid {proc.pid})")
                return
        finally:
            proc.restarting = False

    # watching ------------------------------------------------------------------------------------------------
    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            await self.check_manifest()

    async def check_manifest(self) -> None:
        """Converge if the manifest's content changed since it was last applied (or refused)."""
        try:
            path = find_manifest(self.directory)
            content = path.read_bytes()
        except (ManifestError, OSError) as e:
            digest = f"missing:{e}"
            if digest != self._applied_hash:
                self._applied_hash = digest
                self._emit(logging.ERROR, f"manifest refused, still running the previous set: {e}")
            return
        digest = hashlib.sha256(content).hexdigest()
        if digest == self._applied_hash:
            return
        self._applied_hash = digest
        try:
            spec = read_manifest(path)
            self._emit(logging.INFO, f"{path.name} changed: converging")
            await self.converge(spec)
        except (ManifestError, StartupError) as e:
            self._emit(logging.ERROR, f"manifest refused, still running the previous set: {e}")

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def bind(host: str, port: int) -> socket.socket:
    """The gateway's listening socket, bound before any predictor starts so a busy port fails at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when proto says TCP.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _index(order: list[str], name: str) -> int:
    return order.index(name) if name in order else len(order)
