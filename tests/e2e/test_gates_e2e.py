"""The gates through `sluice up` with real traffic and ground-truth feedback, under policies/local.yaml:
a candidate identical to the stable model (the same model under a new digest) is promoted, and a candidate
five accuracy points worse is rolled back, by canary, by A/B test and by shadow.

One `sluice up` serves the whole module (a SeldonDeployment of real predictor processes behind the gateway);
the reconciler runs in this process and reads the gateway's /metrics. How often each outcome happens over
many runs is measured by `python -m benchmarks gates` (simulated), not here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from deployment import seldon
from model.bundle import Bundle, compute_digest

REPO = Path(__file__).resolve().parents[2]
ENV = "local"
MANIFEST = f"gitops/environments/{ENV}/seldondeployment.yaml"
RATE = 80.0  # client requests per second, each followed by its feedback

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500), pytest.mark.xdist_group("gates-e2e")]


def identical_copy(bundle: Path, out: Path, note: str) -> Path:
    """The same model under a new digest: the bundle's files plus one note, the digest recomputed."""
    shutil.copytree(bundle, out)
    (out / "REBUILD.txt").write_text(f"the same model, rebuilt: {note}\n")
    meta = json.loads((out / "metadata.json").read_text())
    meta["digest"] = compute_digest(out)
    (out / "metadata.json").write_text(json.dumps(meta, indent=2))
    Bundle.open(out)  # verifies the digest
    return out


@dataclass
class World:
    repo: Path
    port: int
    admin_port: int
    stable: Path
    worse: Path
    rows: np.ndarray
    truth: np.ndarray
    names: list[str]
    gateway: subprocess.Popen[bytes]
    traffic: object
    copies: int = 0

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}/metrics"

    def identical(self) -> Path:
        self.copies += 1
        return identical_copy(self.stable, self.repo.parent / f"identical-{self.copies}", str(self.copies))


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def _routes(admin_port: int) -> list[dict]:
    try:
        r = httpx.get(f"http://127.0.0.1:{admin_port}/routes", timeout=2)
        return list(r.json().get("predictors", [])) if r.status_code == 200 else []
    except (httpx.HTTPError, ValueError):
        return []


def wait_converged(world: World, timeout: float = 120.0) -> None:
    """Until the gateway routes exactly what the manifest on disk says, every predictor alive."""
    path = world.repo / MANIFEST
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert world.gateway.poll() is None, "sluice up exited"
        want = {p.name: (p.traffic, p.shadow) for p in seldon.read(path).predictors}
        have = {
            p["name"]: (int(p["traffic"]), bool(p["shadow"]))
            for p in _routes(world.admin_port)
            if p.get("alive")
        }
        if have == want:
            return
        time.sleep(0.2)
    raise AssertionError(f"the gateway did not converge on {path}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path) -> Iterator[World]:
    from demo.run import free_port
    from demo.traffic import TrafficGenerator
    from model.data import contract_for, prepare, read_split
    from model.layout import Layout
    from model.params import Params
    from model.pipeline import train_bundle

    root = tmp_path_factory.mktemp("gates-e2e")
    # five accuracy points worse on the held-out rows the traffic replays (0.937 against 0.986)
    worse = train_bundle(
        root / "worse-work",
        root / "worse",
        Params.model_validate({"train": {"logistic_regression": {"C": 0.01}}}),
    ).path
    data = Layout.at(root / "data-work")
    prepare(data, Params().data)
    X, y = read_split(data.test_csv, contract_for(data, Params().data))

    repo = root / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "e2e@sluice.invalid")
    _git(repo, "config", "user.name", "e2e")
    (repo / "policies").mkdir()
    shutil.copy(REPO / "policies" / f"{ENV}.yaml", repo / "policies" / f"{ENV}.yaml")
    stable = identical_copy(bundle_dir, root / "stable", "stable")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "sluice",
            "rollout",
            "init",
            "--env",
            ENV,
            "--model",
            str(stable),
            "--repo",
            str(repo),
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "the local environment and its policy")
    port, admin_port = free_port(), free_port()
    log = (root / "sluice-up.log").open("wb")
    gateway = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sluice",
            "up",
            f"gitops/environments/{ENV}",
            "--port",
            str(port),
            "--admin-port",
            str(admin_port),
        ],
        cwd=repo,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    # independent draws from the held-out rows (a long random order, not a short cycle)
    order = np.random.default_rng(17).integers(0, len(X), size=60_000)
    traffic = TrafficGenerator(
        f"http://127.0.0.1:{port}",
        X.to_numpy()[order],
        y.to_numpy()[order],
        list(X.columns),
        rate=RATE,
        feedback_delay=0.2,
    )
    w = World(
        repo, port, admin_port, stable, worse, X.to_numpy(), y.to_numpy(), list(X.columns), gateway, traffic
    )
    try:
        wait_converged(w)
        traffic.start()
        yield w
    finally:
        traffic.stop()
        if gateway.poll() is None:
            os.killpg(gateway.pid, signal.SIGINT)
            try:
                gateway.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(gateway.pid, signal.SIGKILL)
                gateway.wait()
        log.close()


@dataclass
class Outcome:
    status: str
    seconds: float
    reason: str
    gates: list[tuple[str, ...]]


def rollout(
    world: World, candidate: Path, strategy: str, force: bool = False, timeout: float = 420
) -> Outcome:
    """Start a rollout of `candidate` and tick the reconciler until it promotes or rolls back."""
    from rollout.reconciler import start, tick
    from rollout.run import Options, build_environment, candidate_model

    env = build_environment(Options(env=ENV, repo=world.repo, metrics_url=world.metrics_url))
    model_uri, digest = candidate_model(str(candidate), world.repo)
    began = time.monotonic()
    start(env, str(candidate), model_uri, digest, strategy, force=force)
    wait_converged(world)
    last = None
    while time.monotonic() - began < timeout:
        res = tick(env)
        last = res.decision
        if os.environ.get("SLUICE_E2E_TRACE"):
            print(
                f"{time.monotonic() - began:6.1f}s {res.decision.action.value}: {res.decision.reason[:150]}"
            )
            for g in res.decision.gates:
                print("        ", g.row())
        if res.wrote:
            wait_converged(world)
            state = env.target.state(env.scm.read(ENV).text)
            assert state.rollout is not None
            if not state.rollout.active:
                return Outcome(
                    state.rollout.status,
                    time.monotonic() - began,
                    res.decision.reason,
                    [g.row() for g in res.decision.gates],
                )
    raise AssertionError(f"{strategy} of {candidate.name}: no decision in {timeout:.0f}s; last: {last}")


def check(world: World, strategy: str) -> None:
    same = rollout(world, world.identical(), strategy)
    assert same.status == "promoted", same
    quarantined = Bundle.open(world.worse).digest in _git(world.repo, "show", f"main:{MANIFEST}")
    worse = rollout(world, world.worse, strategy, force=quarantined)  # rolled back by an earlier strategy
    assert worse.status == "rolled-back", worse
    assert "accuracy" in worse.reason or "agreement" in worse.reason or "A/B" in worse.reason, worse
    print(
        f"\n{strategy}: identical promoted in {same.seconds:.0f}s, worse rolled back in {worse.seconds:.0f}s"
    )


def test_canary_promotes_an_identical_candidate_and_rolls_back_a_worse_one(world: World) -> None:
    check(world, "canary")
    # the worse model is now quarantined: starting it again must be forced, and the record says why
    text = _git(world.repo, "show", f"main:{MANIFEST}")
    assert Bundle.open(world.worse).digest in text and "sluice.dev/quarantine" in text


def test_ab_test_behaves_the_same(world: World) -> None:
    check(world, "ab")


def test_shadow_behaves_the_same(world: World) -> None:
    check(world, "shadow")
