"""One machine, the KServe target, end to end: `sluice rollout init --target kserve` writes an InferenceService,
`sluice up` runs its stable predictor and its canary as two local predictor processes behind the router,
steady traffic (Seldon v1 with delayed feedback, and Open Inference Protocol v2) flows throughout, and
`sluice rollout reconcile` takes a better candidate to promotion and a worse one back out, every step a commit.

The Seldon target's run of the same story is the demo (tests/e2e/test_demo.py); both read the same metrics.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from testkit.services import free_port

from demo.traffic import TrafficGenerator
from deployment import kserve, metric_names
from deployment.names import predictor_name
from model.bundle import Bundle
from model.data import contract_for, read_split
from model.layout import Layout
from model.params import Params

REPO = Path(__file__).resolve().parents[2]
MANIFEST = "gitops/environments/local/inferenceservice.yaml"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

POLICY = {
    "strategy": "canary",
    "interval": "0.5s",
    "window": "3s",
    "on_failure": "rollback",
    "stages": [{"weight": 30, "bake": "3s"}, {"weight": 60, "bake": "3s"}],
    "warmup": 1.0,
    # the demo's gates (margins wide enough for a few requests a second), in the new gate shape
    "gates": [
        {"name": "success-rate", "metric": "success_rate", "margin": 0.05, "no_data_deadline": "45s"},
        {"name": "accuracy-vs-stable", "metric": "accuracy", "margin": 0.1, "no_data_deadline": "45s"},
    ],
}  # fmt: skip


def sluice(repo: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "HOME": str(repo),
            "PYTHONPATH": str(REPO),
        },
    )


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def wait(predicate: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what}; sluice up log:\n{log.read_text(errors='replace')[-3000:]}")


class Up:
    """`sluice up gitops/environments/local` in the repository, on free ports."""

    def __init__(self, repo: Path, logs: Path):
        self.port, self.admin = free_port(), free_port()
        self.log = logs / "sluice-up.log"
        argv = [sys.executable, "-m", "sluice", "up", "gitops/environments/local", "--port", str(self.port),
                "--admin-port", str(self.admin), "--log-dir", str(logs)]  # fmt: skip
        self.proc = subprocess.Popen(argv, cwd=repo, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"

    def routes(self) -> dict[str, tuple[int, bool, bool]]:
        body = httpx.get(f"http://127.0.0.1:{self.admin}/routes", timeout=2).json()
        return {p["name"]: (p["traffic"], p["shadow"], p["alive"]) for p in body["predictors"]}

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.admin}/metrics", timeout=5).text

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def series(text: str, name: str) -> dict[str, float]:
    """predictor_name -> value of one counter, over the lines whose labels match the environment."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name != name or labels.get(metric_names.SERVICE, "predictions") != "predictions":
                continue
            assert labels[metric_names.NAMESPACE] == "sluice"
            assert labels[metric_names.DEPLOYMENT] == "sluice-classifier"
            out[labels[metric_names.PREDICTOR]] = out.get(labels[metric_names.PREDICTOR], 0.0) + sample.value
    return out


@pytest.fixture
def environment(tmp_path: Path, bundle_dir: Path) -> Iterator[tuple[Path, Up, TrafficGenerator]]:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "test@example.com")
    git(repo, "config", "user.name", "test")
    init = sluice(repo, "rollout", "init", "--env", "local", "--target", "kserve", "--model", str(bundle_dir))
    assert init.returncode == 0, init.stdout + init.stderr
    (repo / "policies").mkdir()
    (repo / "policies" / "local.yaml").write_text(yaml.safe_dump(POLICY, sort_keys=False))
    git(repo, "add", "policies/local.yaml")
    git(repo, "commit", "-qm", "policy: a fast canary")
    git(repo, "checkout", "-q", "main", "--", ".")
    up = Up(repo, tmp_path)
    stable = predictor_name(Bundle.open(bundle_dir).digest)
    wait(
        lambda: up.routes() == {stable: (100, False, True)},
        120,
        "sluice up serving the stable predictor",
        up.log,
    )
    layout = Layout.at(bundle_dir.parent)
    test, truth = read_split(layout.test_csv, contract_for(layout, Params().data))
    traffic = TrafficGenerator(up.url, test.to_numpy(), truth.to_numpy(), list(test.columns), rate=40)
    traffic.start()
    try:
        yield repo, up, traffic
    finally:
        traffic.stop()
        assert up.stop() == 0, up.log.read_text(errors="replace")[-2000:]


def rollout(repo: Path, up: Up, candidate: Path) -> subprocess.CompletedProcess[str]:
    started = sluice(repo, "rollout", "start", "--env", "local", "--candidate", str(candidate))
    assert started.returncode == 0, started.stdout + started.stderr
    return sluice(
        repo,
        "rollout", "reconcile", "--env", "local", "--watch", "--until-done",
        "--metrics-url", f"http://127.0.0.1:{up.admin}/metrics",
        timeout=240,
    )  # fmt: skip


def manifest_commits(repo: Path, since: str) -> list[str]:
    return git(repo, "log", "--first-parent", "--format=%s", f"{since}..main", "--", MANIFEST).splitlines()


def test_a_canary_through_kserves_target_promotes_then_rolls_back_on_one_machine(
    environment: tuple[Path, Up, TrafficGenerator],
    bundle_dir: Path,
    rf_bundle_dir: Path,
    bad_bundle_dir: Path,
) -> None:
    repo, up, traffic = environment
    stable = predictor_name(Bundle.open(bundle_dir).digest)
    better = predictor_name(Bundle.open(rf_bundle_dir).digest)
    worse = predictor_name(Bundle.open(bad_bundle_dir).digest)
    base = git(repo, "rev-parse", "main").strip()

    # A better candidate: a named canary beside the stable predictor, 30 % then 60 %, then promoted.
    traffic.set_act("promote")
    result = rollout(repo, up, rf_bundle_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    view = kserve.loads(git(repo, "show", f"main:{MANIFEST}"))
    assert view.weights() == {better: 100} and view.canaries == ()
    assert view.stable.model_uri == rf_bundle_dir.resolve().as_uri()
    subjects = manifest_commits(repo, base)
    assert any("start canary" in s for s in subjects) and any("promote" in s for s in subjects)
    wait(lambda: up.routes() == {better: (100, False, True)}, 60, "sluice up following the promotion", up.log)
    promoted = traffic.stats(act="promote")
    assert promoted.failures == 0 and promoted.by_predictor[stable] > 0 and promoted.by_predictor[better] > 0

    # The same metrics as the Seldon path: executor names, both predictors, namespace and deployment labels.
    text = up.metrics()
    counted = series(text, metric_names.SERVER_REQUESTS + "_count")
    assert counted[stable] > 10 and counted[better] > 10
    feedback = series(text, metric_names.total(metric_names.FEEDBACK))
    assert feedback[stable] > 0 and feedback[better] > 0

    # Open Inference Protocol v2 under the InferenceService's name, as KServe clients call it.
    row = traffic.rows[0].tolist()
    v2 = {"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP64", "data": row}]}
    answer = httpx.post(f"{up.url}/v2/models/sluice-classifier/infer", json=v2, timeout=10)
    assert answer.status_code == 200 and answer.json()["model_name"] == "sluice-classifier"
    assert answer.headers["x-sluice-predictor"] == better

    # A worse candidate (half its training labels flipped): its accuracy gate fails and the canary goes.
    traffic.set_act("rollback")
    before = git(repo, "rev-parse", "main").strip()
    result = rollout(repo, up, bad_bundle_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    view = kserve.loads(git(repo, "show", f"main:{MANIFEST}"))
    assert view.weights() == {better: 100} and view.canaries == ()
    subjects = manifest_commits(repo, before)
    assert any("rollback" in s for s in subjects), subjects
    wait(lambda: up.routes() == {better: (100, False, True)}, 60, "sluice up following the rollback", up.log)
    rolled_back = traffic.stats(act="rollback")
    assert rolled_back.failures == 0 and rolled_back.by_predictor[worse] > 0
    assert git(repo, "status", "--porcelain").strip() == ""
