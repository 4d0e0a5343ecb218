"""The router in a cluster (`sluice router`): the same Router, in front of the per-predictor Services that Seldon
Core or KServe creates.

It reads the environment's deployment manifest from a file (a ConfigMap generated from the manifest in Git and
mounted as a directory, so kubelet updates it in place) and follows it with the same watcher `sluice up` uses.
Each predictor is reached through the Service its platform makes for it, in the manifest's namespace:

    SeldonDeployment  `<deployment>-<predictor>` (or the predictor's `seldon.io/svc-name` annotation; names over
                      63 characters become `seldon-<md5>`, as the operator does) on the executor's HTTP port
                      8000; routed while `GET /ready` (the executor's) answers 200.
    InferenceService  `<isvc>-<predictor>-predictor` (KServe's Standard mode, one per named predictor and
                      canary) on port 80; routed while the model server answers 200 to
                      `GET /v2/models/<isvc>/versions/<digest>/ready`: the pinned model, nothing else.

Nothing is kept between requests that another replica would need: a sticky key is hashed to its predictor,
feedback is routed by what the answer carried (see `attribution`), and every metric names its namespace and
deployment. So replicas scale out behind one Service, and any replica can answer any request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from deployment import kinds, kserve, seldon
from serving.router.admin import Admin
from serving.router.executor_metrics import DEFAULT_NAMESPACE
from serving.router.http_upstream import HttpUpstream
from serving.router.listener import Limits, bind, serve_until
from serving.router.prediction_log import PredictionLog
from serving.router.proxy import Router
from serving.router.routes import Backend, labels_for, routes_for
from serving.router.watch import ManifestWatch

log = logging.getLogger("sluice.router")

SELDON_HTTP_PORT = 8000
SELDON_PROBE = "/ready"
SVC_NAME_ANNOTATION = "seldon.io/svc-name"


def service_name(sd: seldon.SeldonDeployment, p: seldon.Predictor) -> str:
    """The Service Seldon Core v1 creates for a predictor (its operator's GetPredictorKey)."""
    custom = p.annotations.get(SVC_NAME_ANNOTATION)
    if custom:
        return custom
    name = f"{sd.name}-{p.name}"
    return name if len(name) <= 63 else "seldon-" + hashlib.md5(name.encode()).hexdigest()


@dataclass(frozen=True)
class Address:
    """Where a predictor is reached in the cluster, and the path that says it may take traffic."""

    service: str
    port: int
    probe: str


def address(d: kinds.Deployment, p: kinds.Predictor) -> Address:
    """A predictor's Service, port and readiness path, as its platform names them (ports and paths may be
    overridden by ClusterSettings)."""
    if isinstance(d, kserve.InferenceService):
        assert isinstance(p, kserve.Predictor)
        probe = f"/v2/models/{p.model_name}/versions/{p.model_digest}/ready"
        return Address(kserve.service_name(d, p), kserve.SERVICE_PORT, probe)
    assert isinstance(p, seldon.Predictor)
    return Address(service_name(d, p), SELDON_HTTP_PORT, SELDON_PROBE)


@dataclass
class ClusterSettings:
    """How the cluster router finds predictors and serves traffic."""

    manifest: Path
    host: str = "0.0.0.0"
    port: int = 8000
    admin_host: str = (
        "127.0.0.1"  # loopback unless told: in a pod, 0.0.0.0 for Prometheus (not on the Service)
    )
    admin_port: int = 8001
    domain: str = "svc.cluster.local"
    predictor_port: int | None = None  # None: the platform's (Seldon's executor 8000, KServe's Service 80)
    probe_path: str | None = None  # None: the platform's (see `address`)
    probe_interval: float = 1.0
    poll_interval: float = 0.5
    request_timeout: float = 30.0
    limits: Limits = field(default_factory=Limits)
    # "service.namespace.svc.cluster.local:8000" -> "10.0.0.7:8000": connect there, keep the Host header.
    resolve: Mapping[str, str] = field(default_factory=dict)
    prediction_log: PredictionLog | None = None  # record answers (see serving.router.prediction_log)


class ClusterRouter:
    """Routes one deployment's traffic to its predictors' Services; follows the manifest file."""

    def __init__(self, settings: ClusterSettings):
        self.settings = settings
        self.router = Router(
            timeout=settings.request_timeout, mirror_process=True, prediction_log=settings.prediction_log
        )
        self.admin = Admin(self.router)
        self.backends: dict[str, Backend] = {}  # by authority (service host:port), reused across changes
        self.probes: dict[Backend, str] = {}  # each backend's readiness path
        self.watch = ManifestWatch(settings.manifest, self._apply, interval=settings.poll_interval)
        self._stop = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()

    def authority(self, sd: kinds.Deployment, p: kinds.Predictor) -> str:
        namespace = sd.namespace or DEFAULT_NAMESPACE
        where = address(sd, p)
        host = f"{where.service}.{namespace}.{self.settings.domain}"
        return f"{host}:{self.settings.predictor_port or where.port}"

    async def _apply(self, path: Path, content: bytes) -> None:
        sd = kinds.loads(content.decode("utf-8", errors="replace"), path)
        kinds.check(sd, path)
        labels = labels_for(sd)
        wanted: dict[str, Backend] = {}
        by_name: dict[str, Backend] = {}
        probes: dict[Backend, str] = {}
        for p in sd.predictors:
            authority = self.authority(sd, p)
            backend = self.backends.get(authority)
            if backend is None:
                target = self.settings.resolve.get(authority, authority)
                host, _, port = target.rpartition(":")
                upstream = HttpUpstream(host, int(port), authority=authority)
                backend = Backend(p.name, labels[p.name], upstream)
            backend.name, backend.labels = p.name, labels[p.name]
            wanted[authority] = by_name[p.name] = backend
            probes[backend] = self.settings.probe_path or address(sd, p).probe
        self.probes.update(probes)
        await asyncio.gather(*(self._probe_one(b) for b in wanted.values() if not b.ready))
        self.router.swap(routes_for(sd, by_name))
        gone = [b for a, b in self.backends.items() if a not in wanted]
        self.backends = wanted
        self.probes = probes
        for backend in gone:
            backend.ready = False
            task = asyncio.create_task(self._retire(backend))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        weights = ", ".join(f"{p.name}={'shadow ' if p.shadow else ''}{p.traffic}" for p in sd.predictors)
        log.warning("routing %s/%s: %s", sd.namespace or DEFAULT_NAMESPACE, sd.name, weights)

    async def _retire(self, backend: Backend) -> None:
        """Close a removed predictor's pool once requests still in flight there have had their time."""
        await asyncio.sleep(self.settings.request_timeout)
        await backend.upstream.close()

    async def _probe_one(self, backend: Backend) -> None:
        path = self.probes.get(backend, self.settings.probe_path or SELDON_PROBE)
        try:
            response = await backend.upstream.request("GET", path, [], b"", 2.0)
            ready = response.status == 200
        except Exception:
            ready = False
        if ready != backend.ready:
            log.warning(
                "predictor %s %s", backend.name, "ready: routed" if ready else "not ready: out of routing"
            )
        backend.ready = ready

    async def _probe(self) -> None:
        while True:
            await asyncio.sleep(self.settings.probe_interval)
            await asyncio.gather(*(self._probe_one(b) for b in list(self.backends.values())))

    def stop(self) -> None:
        self._stop.set()

    async def serve(self, sock: socket.socket | None = None, admin_sock: socket.socket | None = None) -> None:
        s = self.settings
        sock = sock or bind(s.host, s.port)
        admin_sock = admin_sock or bind(s.admin_host, s.admin_port)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.stop)
        await self.watch.check()  # a manifest it cannot read yet leaves it unready, not stopped
        try:
            await serve_until(
                self._stop,
                self.router,
                self.admin,
                sock,
                admin_sock,
                s.limits,
                [self.watch.run(), self._probe()],
                on_started=lambda: log.warning(
                    "sluice router on %s:%d (admin on %s:%d), following %s",
                    s.host,
                    sock.getsockname()[1],
                    s.admin_host,
                    admin_sock.getsockname()[1],
                    s.manifest,
                ),
            )
        finally:
            await asyncio.gather(*(b.upstream.close() for b in self.backends.values()))
