"""Two `sluice router` replicas in cluster mode, in front of predictor processes addressed as Services.

Each predictor is reached by the name Seldon Core gives its Service (`<deployment>-<predictor>.<namespace>.
svc.cluster.local:8000`), mapped to a loopback process with `--resolve` (there is no cluster DNS here). What a
replica decides must not depend on what it alone has seen.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from testkit.services import free_port, start_redis
from up_harness import REPO, metric_samples, predictor, write_manifest

from deployment import seldon
from model.bundle import Bundle
from serving.router.cluster import service_name

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@dataclass
class Replica:
    url: str
    admin: str
    proc: subprocess.Popen[bytes]


@dataclass
class Cluster:
    replicas: list[Replica]
    predictors: dict[str, str]  # name -> predictor process URL
    manifest: Path
    log: str  # the replicas' prediction log, one Redis stream


def wait(predicate: object, timeout: float, what: str, logs: list[Path]) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what}; logs:\n" + "\n".join(p.read_text(errors="replace")[-1500:] for p in logs))


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path, rf_bundle_dir: Path
) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("cluster")
    bundles = [Bundle.open(p, verify=False) for p in (bundle_dir, rf_bundle_dir)]
    names = [f"m-{b.short_digest}" for b in bundles]
    env = work / "env"
    env.mkdir()
    write_manifest(env, [predictor(n, 50, b.path, b.digest) for n, b in zip(names, bundles, strict=True)])
    sd = seldon.read(env)
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    predictors, resolve = {}, []
    redis_proc, redis_url = start_redis(work)
    procs.append(redis_proc)
    stream = redis_url + "?stream=sluice:predictions:test"
    try:
        for name, bundle in zip(names, bundles, strict=True):
            port = free_port()
            log = work / f"{name}.log"
            logs.append(log)
            argv = [
                sys.executable, "-m", "serving.http.server", "--model", str(bundle.path), "--port", str(port),
                "--name", "classifier", "--digest", bundle.digest,
            ]  # fmt: skip
            procs.append(subprocess.Popen(argv, cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT))
            predictors[name] = f"http://127.0.0.1:{port}"
            service = service_name(sd, sd.predictor(name))  # type: ignore[arg-type]
            resolve += ["--resolve", f"{service}.sluice.svc.cluster.local:8000=127.0.0.1:{port}"]
        replicas = []
        for i in range(2):
            port, admin = free_port(), free_port()
            log = work / f"router-{i}.log"
            logs.append(log)
            argv = [
                sys.executable, "-m", "sluice", "router", str(env / "seldondeployment.yaml"), "--host", "127.0.0.1",
                "--port", str(port), "--admin-port", str(admin), "--probe-path", "/v2/health/ready", *resolve,
            ]  # fmt: skip
            # As gitops/router/deployment.yaml sets it from the optional Secret sluice-prediction-log.
            environ = {**os.environ, "SLUICE_PREDICTION_LOG": stream}
            procs.append(
                subprocess.Popen(argv, cwd=REPO, env=environ, stdout=log.open("wb"), stderr=subprocess.STDOUT)
            )
            replicas.append(Replica(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}", procs[-1]))
        for r in replicas:
            wait(
                lambda r=r: (
                    httpx.get(r.admin + "/readyz").status_code == 200
                    and all(p["alive"] for p in httpx.get(r.admin + "/routes").json()["predictors"])
                ),
                120,
                "replicas ready",
                logs,
            )
        yield Cluster(replicas, predictors, env / "seldondeployment.yaml", stream)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


ROW = {"data": {"ndarray": [[0.1 * (i % 7) for i in range(30)]]}}


def test_a_key_is_pinned_to_the_same_predictor_whichever_replica_answers(cluster: Cluster) -> None:
    a, b = cluster.replicas
    split: Counter[str] = Counter()
    for i in range(60):
        headers = {"x-sluice-user": f"user-{i}"}
        on_a = {
            httpx.post(a.url + "/api/v1.0/predictions", json=ROW, headers=headers).headers[
                "x-sluice-predictor"
            ]
            for _ in range(2)
        }
        on_b = httpx.post(b.url + "/api/v1.0/predictions", json=ROW, headers=headers).headers[
            "x-sluice-predictor"
        ]
        assert on_a == {on_b}, f"user-{i}: replica A said {on_a}, replica B said {on_b}"
        split[on_b] += 1
    assert set(split) == set(cluster.predictors)  # pinned, yet split


def test_feedback_to_the_other_replica_reaches_the_predictor_that_answered(cluster: Cluster) -> None:
    a, b = cluster.replicas

    def feedback_seen() -> dict[str, float]:
        out = {}
        for name, url in cluster.predictors.items():
            samples = metric_samples(httpx.get(url + "/metrics").text, "seldon_api_model_feedback_total")
            out[name] = sum(v for _, v in samples)
        return out

    before = feedback_seen()
    answered: Counter[str] = Counter()
    for i in range(30):
        answer = httpx.post(a.url + "/api/v1.0/predictions", json=ROW)
        body = answer.json()
        if i % 3 == 1:  # by the puid alone: the router made it, and it names the predictor
            body["meta"].pop("tags")
        headers = {"x-seldon-route": answer.headers["x-seldon-route"]} if i % 3 == 2 else {}
        if i % 3 == 2:  # by the route header alone: the answer's meta is not sent back
            body.pop("meta")
        fb = httpx.post(b.url + "/api/v1.0/feedback", json={"response": body, "reward": 1.0}, headers=headers)
        assert fb.status_code == 200, fb.text
        assert fb.headers["x-sluice-predictor"] == answer.headers["x-sluice-predictor"]
        answered[answer.headers["x-sluice-predictor"]] += 1
    after = feedback_seen()
    assert {n: after[n] - before[n] for n in after} == {n: float(answered[n]) for n in after}
    assert len(answered) == 2
    counted = {
        labels["predictor_name"]: v
        for labels, v in metric_samples(
            httpx.get(b.admin + "/metrics").text, "seldon_api_model_feedback_total"
        )
    }
    assert counted == {n: float(k) for n, k in answered.items()}
    for labels, _ in metric_samples(httpx.get(b.admin + "/metrics").text, "seldon_api_model_feedback_total"):
        assert labels["namespace"] == "sluice" and labels["deployment_name"] == "sd"


def test_both_replicas_follow_a_manifest_change(cluster: Cluster) -> None:
    text = cluster.manifest.read_text()
    names = list(cluster.predictors)
    first, second = names
    doc = seldon.read(cluster.manifest)
    assert doc.weights() == {first: 50, second: 50}
    import yaml

    raw = yaml.safe_load(text)
    for p in raw["spec"]["predictors"]:
        p["traffic"] = 100 if p["name"] == first else 0
    cluster.manifest.write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        for r in cluster.replicas:
            wait(
                lambda r=r: (
                    {p["name"]: p["traffic"] for p in httpx.get(r.admin + "/routes").json()["predictors"]}
                    == {first: 100, second: 0}
                ),
                30,
                "the new weights",
                [],
            )
            seen = {
                httpx.post(r.url + "/api/v1.0/predictions", json=ROW).headers["x-sluice-predictor"]
                for _ in range(10)
            }
            assert seen == {first}
    finally:
        cluster.manifest.write_text(text)


def test_both_replicas_log_to_one_stream_and_feedback_joins_across_them(cluster: Cluster) -> None:
    """The cluster's prediction log: each replica appends to the Redis stream; a prediction answered by one
    replica and its feedback sent to the other are joined when `sluice monitor` reads the stream."""
    import time

    from model.contract import load_contract
    from monitor.records import read_log

    a, b = cluster.replicas
    puids = []
    for i in range(6):
        answer = httpx.post((a if i % 2 else b).url + "/api/v1.0/predictions", json=ROW)
        assert answer.status_code == 200
        puid = answer.json()["meta"]["puid"]
        puids.append(puid)
        body = {"response": answer.json(), "truth": {"data": {"ndarray": [i % 2]}}}
        assert httpx.post((b if i % 2 else a).url + "/api/v1.0/feedback", json=body).status_code == 200
    contract = load_contract(REPO / "contract.yaml")
    deadline = time.monotonic() + 30
    while True:  # each replica's writer thread comes by every quarter second
        log = read_log(cluster.log, contract)
        mine = [i for i, u in enumerate(log.rows.puid) if u in puids]
        if (len(mine) == 6 and log.labels.joined >= 6) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sorted(log.rows.puid[i] for i in mine) == sorted(puids)
    assert {log.rows.puid[i]: log.rows.truth[i] for i in mine} == {u: i % 2 for i, u in enumerate(puids)}
