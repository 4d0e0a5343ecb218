"""`sluice router` in front of KServe: the Services KServe makes per named predictor, probed for the pinned model.

Each predictor is reached by KServe's Service name (`<isvc>-<predictor>-predictor.<namespace>.svc.cluster.
local:80`), mapped to a loopback process with `--resolve`. The router is given only the InferenceService file:
ports and readiness paths follow its kind. A Service answering for another digest is never routed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from testkit.services import free_port
from up_harness import FAKE, REPO

from rollout.state import Slot
from rollout.targets.kserve import InferenceServiceV1Beta1, initial_manifest

T = InferenceServiceV1Beta1()
A, B = "m-aaaaaaaaaaaa", "m-bbbbbbbbbbbb"
DA, DB, DX = ("sha256:" + c * 64 for c in "abe")
ROW = {"data": {"ndarray": [[0.1 * (i % 7) for i in range(30)]]}}


def wait(predicate: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what}; router log:\n{log.read_text(errors='replace')[-2000:]}")


@pytest.fixture
def kserve_cluster(tmp_path: Path) -> Iterator[tuple[Path, str, str, Path]]:
    """A router following an InferenceService (stable A, canary B at 20 %) whose predictor Services resolve to
    fake predictors: A and B serve their pinned digests; a third Service, for a canary C, serves another."""
    manifest = tmp_path / "inferenceservice.yaml"
    text = T.add_candidate(
        initial_manifest("staging", "s3://m/a", DA, namespace="sluice-staging"), B, "s3://m/b", DB
    )
    manifest.write_text(T.apply(text, (Slot(A, 80), Slot(B, 20)), None))
    procs: list[subprocess.Popen[bytes]] = []
    resolve: list[str] = []
    for name, digest in ((A, DA), (B, DB), ("m-cccccccccccc", DX)):
        port = free_port()
        argv = [sys.executable, str(FAKE), "--port", str(port), "--name", name, "--model", "sluice-classifier",
                "--digest", digest]  # fmt: skip
        procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        service = f"sluice-classifier-{name}-predictor.sluice-staging.svc.cluster.local:80"
        resolve += ["--resolve", f"{service}=127.0.0.1:{port}"]
    port, admin = free_port(), free_port()
    log = tmp_path / "router.log"
    argv = [sys.executable, "-m", "sluice", "router", str(tmp_path), "--host", "127.0.0.1", "--port", str(port),
            "--admin-port", str(admin), *resolve]  # fmt: skip
    procs.append(subprocess.Popen(argv, cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT))
    try:
        yield manifest, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}", log
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def routes(admin: str) -> dict[str, tuple[int, bool]]:
    return {p["name"]: (p["traffic"], p["alive"]) for p in httpx.get(admin + "/routes").json()["predictors"]}


def served(
    client: httpx.Client, n: int, path: str = "/api/v1.0/predictions", body: object = ROW
) -> Counter[str]:
    """Which predictor answered each of `n` requests."""
    return Counter(client.post(path, json=body).headers["x-sluice-predictor"] for _ in range(n))


@pytest.mark.timeout(90)
def test_the_router_splits_promotes_and_never_routes_another_digest(
    kserve_cluster: tuple[Path, str, str, Path],
) -> None:
    manifest, url, admin, log = kserve_cluster
    client = httpx.Client(base_url=url, timeout=10)
    wait(lambda: routes(admin) == {A: (80, True), B: (20, True)}, 60, "stable and canary routed", log)
    answered = served(client, 200)
    assert set(answered) == {A, B} and 10 <= answered[B] <= 70, answered  # 20 % of 200, give or take

    # A canary whose Service answers for another digest: in the routing table, never alive, never served.
    c = "m-cccccccccccc"
    three = T.add_candidate(manifest.read_text(), c, "s3://m/c", "sha256:" + "c" * 64)
    manifest.write_text(T.apply(three, (Slot(A, 70), Slot(B, 20), Slot(c, 10)), None))
    wait(lambda: c in routes(admin), 30, "the third canary read", log)
    time.sleep(1.5)  # more than a probe interval: it stays out
    assert routes(admin)[c] == (10, False)
    assert c not in served(client, 100)

    # Promotion: B becomes spec.predictor, the canaries go; the router follows the file.
    manifest.write_text(T.apply(manifest.read_text(), (Slot(B, 100),), None))
    wait(lambda: routes(admin) == {B: (100, True)}, 30, "the promotion", log)
    assert served(client, 20, "/v2/models/sluice-classifier/infer", {"inputs": []}) == {B: 20}
    client.close()
