"""Test harness: SeldonDeployment files, `sluice up` started in a thread, fake or real predictor commands, and
the fixtures `up` (a running runtime factory) and `fake_uri` (a bundle directory fake predictors never read)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from testkit.services import free_port

from serving.local.spec import PredictorSpec
from serving.local.supervisor import LocalRuntime, RuntimeEvent
from serving.router.listener import bind

FAKE = Path(__file__).with_name("fake_predictor.py")


def digest_of(name: str) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def predictor(
    name: str, traffic: int, uri: str | Path, digest: str | None = None, shadow: bool = False
) -> dict[str, Any]:
    p: dict[str, Any] = {
        "name": name,
        "replicas": 1,
        "traffic": traffic,
        "componentSpecs": [
            {
                "spec": {
                    "containers": [
                        {
                            "name": "classifier",
                            "image": "ghcr.io/sluice-ml/sluice-serving:0.1@sha256:" + "1" * 64,
                        }
                    ]
                }
            }
        ],
        "graph": {
            "name": "classifier",
            "type": "MODEL",
            "parameters": [
                {"name": "model_uri", "type": "STRING", "value": str(uri)},
                {"name": "model_digest", "type": "STRING", "value": digest or digest_of(name)},
            ],
        },
    }
    if shadow:
        p["shadow"] = True
    return p


def write_manifest(
    directory: Path,
    predictors: list[dict[str, Any]],
    name: str = "sd",
    annotations: dict[str, str] | None = None,
    namespace: str = "sluice",
) -> Path:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        metadata["annotations"] = annotations
    doc = {
        "apiVersion": "machinelearning.seldon.io/v1",
        "kind": "SeldonDeployment",
        "metadata": metadata,
        "spec": {"name": name, "protocol": "seldon", "predictors": predictors},
    }
    path = directory / "seldondeployment.yaml"
    tmp = directory / ".seldondeployment.yaml.tmp"
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    tmp.replace(path)  # atomic, as a git checkout is per file
    return path


class FakeCommand:
    """Starts fake_predictor.py for each predictor; `behaviour[name]` adds arguments (--delay, --status ...)."""

    def __init__(self) -> None:
        self.behaviour: dict[str, list[str]] = {}

    def __call__(self, spec: PredictorSpec, host: str, report_fd: int) -> list[str]:
        extra = self.behaviour.get(spec.name, [])
        return [
            sys.executable, str(FAKE), "--port", "0", "--report-fd", str(report_fd), "--host", host,
            "--name", spec.name, "--model", spec.model_name, "--digest", spec.model_digest, *extra,
        ]  # fmt: skip


class RunningRuntime:
    """`sluice up` in a background thread (its own event loop), on a free port."""

    def __init__(self, directory: Path, **kwargs: Any):
        self.events: list[RuntimeEvent] = []
        self.env = directory
        kwargs.setdefault("poll_interval", 0.2)
        self.runtime = LocalRuntime(directory, port=0, admin_port=0, on_event=self.events.append, **kwargs)
        self.sock = bind("127.0.0.1", 0)
        self.admin_sock = bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_sock.getsockname()[1]}"
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            await self.runtime.serve(self.sock, self.admin_sock)

        try:
            asyncio.run(main())
        except BaseException as e:
            self.error = e

    def start(self, timeout: float = 30.0) -> RunningRuntime:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.error is not None:
                raise self.error
            try:
                r = httpx.get(self.admin_url + "/routes", timeout=1.0)
                if r.status_code == 200 and r.json()["predictors"]:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"runtime did not start; events: {[e.message for e in self.events]}")

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.runtime.stop)
        self.thread.join(20)

    def routes(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(self.admin_url + "/routes", timeout=5).json()
        return data

    def metrics(self) -> str:
        return httpx.get(self.admin_url + "/metrics", timeout=5).text

    def wait_for(self, predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise TimeoutError(f"{what} not met; events: {[e.message for e in self.events]}")


def v1_body(values: list[float] | None = None) -> dict[str, Any]:
    return {"data": {"ndarray": [values or [0.0] * 30]}}


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Parse the Prometheus text format with prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out.append((dict(s.labels), s.value))
    return out


@pytest.fixture()
def fake_uri(tmp_path: Path) -> Path:
    """A directory that passes the manifest's URI check; fake predictors never read it."""
    d = tmp_path / "bundle"
    d.mkdir()
    return d


@pytest.fixture()
def up(tmp_path: Path) -> Iterator[Callable[..., RunningRuntime]]:
    """Start a runtime on a manifest (fake predictors unless a command is given); stopped at teardown."""
    started: list[RunningRuntime] = []

    def start(
        predictors: list[dict[str, Any]],
        command: Any = None,
        annotations: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> RunningRuntime:
        env = tmp_path / f"env{len(started)}"
        env.mkdir()
        write_manifest(env, predictors, annotations=annotations)
        rt = RunningRuntime(env, command=command or FakeCommand(), **kwargs)
        started.append(rt)
        rt.env = env
        return rt.start()

    yield start
    leftovers = []
    for rt in started:
        popens = [p.popen for p in list(rt.runtime.processes.values()) if p.popen is not None]
        rt.stop()
        for popen in popens:
            if popen.poll() is None:  # stop() must have ended every predictor
                popen.kill()
                leftovers.append(popen.pid)
    assert not leftovers, f"predictor processes outlived the runtime: {leftovers}"


REPO = Path(__file__).resolve().parents[3]


class SluiceUp:
    """`python -m sluice up DIR` as a user runs it, in a subprocess, on free ports; stopped with Ctrl-C.

    `repo` is the checkout whose code runs (this one by default); `legacy`: one whose `sluice up` has no admin
    port (its routes are at /gateway/routes on the traffic port).
    """

    def __init__(self, env: Path, log: Path, *args: str, repo: Path = REPO, legacy: bool = False):
        import subprocess

        self.port, self.admin_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        self.legacy = legacy
        self.log = log
        argv = [sys.executable, "-m", "sluice", "up", str(env), "--port", str(self.port)]
        argv += [] if legacy else ["--admin-port", str(self.admin_port)]
        argv += ["--log-dir", str(log.parent / "logs"), *args]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(argv, cwd=repo, stdout=out, stderr=subprocess.STDOUT)

    def routes(self) -> dict[str, Any]:
        url = self.url + "/gateway/routes" if self.legacy else self.admin_url + "/routes"
        data: dict[str, Any] = httpx.get(url, timeout=5).json()
        return data

    def metrics(self) -> str:
        return httpx.get(self.admin_url + "/metrics", timeout=5).text

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sluice up exited ({self.proc.returncode}):\n{self.output()}")
            try:
                if predicate():
                    return
            except (httpx.HTTPError, LookupError, ValueError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{what} not met; sluice up said:\n{self.output()}")

    def wait_routed(self, n: int, timeout: float = 90.0) -> SluiceUp:
        self.wait_for(
            lambda: len([p for p in self.routes()["predictors"] if p["alive"]]) == n,
            timeout,
            f"{n} predictors",
        )
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> int:
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def pid_listening_on(port: int) -> int:
    """The predictor process listening on 127.0.0.1:`port` (the runtime does not say its pids)."""
    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if not any("serving.http.server" in part or "fake_predictor" in part for part in cmdline):
            continue
        try:
            if any(
                c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in proc.net_connections("tcp")
            ):
                return int(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    raise LookupError(f"no predictor listening on port {port}")
