"""Test harness: SeldonDeployment files, a runtime started in a thread, and fake or real predictor commands."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import httpx
import yaml

from serving.local.spec import PredictorSpec
from serving.local.supervisor import LocalRuntime, RuntimeEvent, bind

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


def write_manifest(directory: Path, predictors: list[dict[str, Any]], name: str = "sd") -> Path:
    doc = {
        "apiVersion": "machinelearning.seldon.io/v1",
        "kind": "SeldonDeployment",
        "metadata": {"name": name, "namespace": "sluice"},
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

    def __call__(self, spec: PredictorSpec, host: str, port: int) -> list[str]:
        extra = self.behaviour.get(spec.name, [])
        return [sys.executable, str(FAKE), "--port", str(port), "--host", host, "--name", spec.name, *extra]


class RunningRuntime:
    """`sluice up` in a background thread (its own event loop), on a free port."""

    def __init__(self, directory: Path, **kwargs: Any):
        self.events: list[RuntimeEvent] = []
        kwargs.setdefault("poll_interval", 0.2)
        self.runtime = LocalRuntime(directory, port=0, on_event=self.events.append, **kwargs)
        self.sock = bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            await self.runtime.serve(self.sock)

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
                r = httpx.get(self.url + "/gateway/routes", timeout=1.0)
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
        data: dict[str, Any] = httpx.get(self.url + "/gateway/routes", timeout=5).json()
        return data

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
