"""The reconciler's shell against a real git repository: it observes before it locks (so an abort is never
kept waiting for a window), a recovered step is merged for what its trailer says, the policy comes from Git
at each tick's commit, the working-tree manifest is replaced whole, and the loop idles and rides out faults."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from rollout_gitops import fast_policy, git, log, make_repo, weights

from rollout import evidence
from rollout.decision import Action
from rollout.observations import Observations, PredictorStats
from rollout.policy import PolicyError, parse_policy
from rollout.reconciler import Environment, abort, preview, start, tick
from rollout.run import MAX_BACKOFF, PolicyInGit, Tick, run
from rollout.scm import SCMError
from rollout.scm.local import LocalGit
from rollout.targets.seldon import SeldonDeploymentV1

STABLE_DIGEST, CAND_DIGEST = "sha256:" + "a" * 64, "sha256:" + "b" * 64
STABLE, CAND = "m-aaaaaaaaaaaa", "m-bbbbbbbbbbbb"
MANIFEST = "gitops/environments/local/seldondeployment.yaml"


class Healthy:
    """Both predictors healthy; optionally blocks inside observe() until released (a long window)."""

    def __init__(self, block: bool = False) -> None:
        self.inside, self.release = threading.Event(), threading.Event()
        if not block:
            self.release.set()

    def observe(self, deployment, predictors, window, custom=None, since=None, namespace=None):  # type: ignore[no-untyped-def]
        self.inside.set()
        assert self.release.wait(10)
        stats = PredictorStats(requests=100, buckets=((0.01, 100.0), (float("inf"), 100.0)))
        return Observations(window, {p: stats for p in predictors})


def env_for(repo: Path, metrics: Any = None, **policy: Any) -> Environment:
    return Environment(
        "local", LocalGit(repo), SeldonDeploymentV1(), parse_policy(fast_policy("canary", **policy)), metrics
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path, STABLE_DIGEST)


def begin(env: Environment) -> None:
    start(env, "models:/m/2", "models:/m/2", CAND_DIGEST)


@pytest.mark.timeout(30)
def test_abort_is_not_refused_while_a_tick_observes(repo: Path) -> None:
    slow = Healthy(block=True)
    env = env_for(repo, slow)
    begin(env)
    results: list[Any] = []
    ticking = threading.Thread(target=lambda: results.append(tick(env)))
    ticking.start()
    try:
        assert slow.inside.wait(10)  # the tick is in its observation window...
        abort(env_for(repo), "oncall")  # ...and a human rolls back: not refused for the window's length
    finally:
        slow.release.set()
        ticking.join(10)
    assert weights(repo) == {STABLE: (100, False)}
    (result,) = results
    assert (
        result.decision.action == Action.HOLD
        and "changed on main while metrics were observed" in result.decision.reason
    )
    assert not result.wrote and weights(repo) == {STABLE: (100, False)}  # the stale observation wrote nothing


@pytest.mark.timeout(30)
def test_a_recovered_step_does_what_its_trailer_says_whatever_its_title(repo: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    env = env_for(repo, Healthy())
    begin(env)
    monkeypatch.setattr(LocalGit, "merge", lambda self, p: (_ for _ in ()).throw(SystemExit("killed")))
    with pytest.raises(SystemExit):
        tick(env)  # wrote the 50 % step, died before merging it
    monkeypatch.undo()
    (branch,) = git(repo, "branch", "--list", "sluice/local/auto/*").split()
    message = git(repo, "log", "-1", "--format=%B", branch)
    parsed = git(repo, "interpret-trailers", "--parse", input_text=message)  # git itself reads them
    assert (
        "Sluice-Action: advance" in parsed
        and f"Sluice-Base: {git(repo, 'rev-parse', 'main').strip()}" in parsed
    )
    # someone rewords the step's title: its behaviour must not change
    reworded = message.replace(
        message.split("\n", 1)[0], "rollout(local): promote m-bbbbbbbbbbbb [promotion]"
    )
    tree = git(repo, "rev-parse", f"{branch}^{{tree}}").strip()
    commit = git(repo, "commit-tree", tree, "-p", f"{branch}^", input_text=reworded).strip()
    git(repo, "update-ref", f"refs/heads/{branch}", commit)
    res = tick(env)
    assert res.decision.action == Action.ADVANCE and any("repaired" in n for n in res.notes)
    assert weights(repo) == {STABLE: (50, False), CAND: (50, False)}


@pytest.mark.timeout(30)
def test_a_pending_step_without_trailers_is_never_merged(repo: Path) -> None:
    env = env_for(repo, Healthy())
    begin(env)
    snap = env.scm.read("local")
    forged = snap.text.replace("traffic: 90", "traffic: 0").replace("traffic: 10", "traffic: 100")
    env.scm.propose(
        "local", forged, "rollout(local): advance", "no trailers here", snap.revision, "auto", merge=False
    )
    res = tick(env)
    assert not any("repaired" in n for n in res.notes) and any(
        "no Sluice-Action trailer" in n for n in res.notes
    )
    assert weights(repo) == {STABLE: (50, False), CAND: (50, False)}  # the reconciler's own decision instead


def _commit_policy(repo: Path, **policy: Any) -> None:
    path = repo / "policies" / "local.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(fast_policy("canary", **policy)))
    git(repo, "add", "policies/local.yaml")
    git(repo, "commit", "-qm", "policy")


@pytest.mark.timeout(30)
def test_the_policy_is_read_from_git_on_every_tick(repo: Path) -> None:
    _commit_policy(repo, interval=7)
    env = Environment(
        "local", LocalGit(repo), SeldonDeploymentV1(), metrics=Healthy(), policies=PolicyInGit()
    )
    assert tick(env).policy.interval == 7  # type: ignore[union-attr]
    _commit_policy(repo, interval=9, on_failure="freeze")  # merged while the reconciler runs
    assert tick(env).policy.interval == 9  # type: ignore[union-attr]  # no restart, no checkout to refresh
    (repo / "policies" / "local.yaml").write_text("interval: 1\n")  # not committed: not the policy
    assert tick(env).policy.interval == 9  # type: ignore[union-attr]


@pytest.mark.timeout(30)
def test_a_broken_policy_merged_mid_rollout_keeps_the_last_valid_one_and_says_so(repo: Path) -> None:
    _commit_policy(repo)
    env = Environment(
        "local", LocalGit(repo), SeldonDeploymentV1(), metrics=Healthy(), policies=PolicyInGit()
    )
    begin(env)
    (repo / "policies" / "local.yaml").write_text("strategy: canary\nstages: [{weight: 500}]\n")
    git(repo, "commit", "-qam", "a typo")
    res = tick(env)
    assert (
        res.wrote and res.decision.action == Action.ADVANCE
    )  # the rollout goes on under its last valid gates
    assert any("stages.0.weight" in n and "last valid policy" in n for n in res.notes)
    fresh = Environment("local", LocalGit(repo), SeldonDeploymentV1(), policies=PolicyInGit())
    with pytest.raises(PolicyError, match=r"policies/local.yaml@[0-9a-f]{12}: stages.0.weight"):
        preview(fresh)  # with no valid policy seen yet, it is an error naming file, field and value
    abort(fresh)  # and an abort needs no policy at all
    assert weights(repo) == {STABLE: (100, False)}


def test_the_working_tree_manifest_is_replaced_whole_never_rewritten_in_place(repo: Path) -> None:
    path = repo / MANIFEST
    env = env_for(repo, Healthy())
    with path.open() as reader:  # what `sluice up` holds while it polls the file
        before = reader.read()
        inode = os.stat(path).st_ino
        begin(env)
        reader.seek(0)
        assert reader.read() == before  # the file it had open was not truncated under it
    assert os.stat(path).st_ino != inode and path.read_text() == git(repo, "show", f"main:{MANIFEST}")
    assert not [p.name for p in path.parent.iterdir() if p.name != path.name]  # no temporary file left
    assert git(repo, "status", "--porcelain").strip() == ""


# the loop ------------------------------------------------------------------------------------------------
def test_the_loop_idles_while_no_rollout_is_active(repo: Path) -> None:
    env = env_for(repo, Healthy(), interval=2)
    slept: list[float] = []
    seen: list[Tick] = []
    assert run(env, max_ticks=5, sleep=slept.append, on_tick=seen.append) == 5  # not 1: it does not exit
    assert slept == [2.0] * 4 and all(
        t.result and t.result.decision.reason == "no rollout in progress" for t in seen
    )


def test_a_stop_asked_for_during_a_tick_ends_the_loop_after_that_tick_without_sleeping(repo: Path) -> None:
    env = env_for(repo, Healthy(), interval=2)
    slept: list[float] = []
    seen: list[Tick] = []
    asked = lambda: len(seen) >= 2  # noqa: E731 (SIGTERM arrived during the second tick)
    assert run(env, sleep=slept.append, on_tick=seen.append, stop=asked) == 2
    assert slept == [2.0] and [t.number for t in seen] == [1, 2]


class Flaky(LocalGit):
    """GitHub or the network failing for a while."""

    failures = 3

    def read(self, env: str):  # type: ignore[no-untyped-def]
        if Flaky.failures:
            Flaky.failures -= 1
            raise SCMError("GitHub GET /git/ref/heads/main: HTTP 502: Bad Gateway")
        return super().read(env)


def test_the_loop_rides_out_failures_with_a_back_off(repo: Path) -> None:
    env = Environment(
        "local", Flaky(repo), SeldonDeploymentV1(), parse_policy(fast_policy("canary", interval=10))
    )
    slept: list[float] = []
    seen: list[Tick] = []
    run(env, max_ticks=5, sleep=slept.append, on_tick=seen.append)
    assert [bool(t.error) for t in seen] == [True, True, True, False, False]
    assert slept == [10, 20, 40, 10] and "502" in seen[0].error
    assert MAX_BACKOFF >= 40


def test_the_loop_lets_a_bug_end_the_process(repo: Path) -> None:
    env = env_for(repo)
    env.target = None  # type: ignore[assignment]
    with pytest.raises(AttributeError):
        run(env, max_ticks=3, sleep=lambda s: None)


@pytest.mark.timeout(60)
def test_a_rollout_runs_to_its_end_and_the_loop_can_stop_there(repo: Path) -> None:
    from rollout.run import ended

    env = env_for(repo, Healthy())
    begin(env)
    n = run(env, max_ticks=20, sleep=lambda s: None, until=ended)
    assert n < 20 and weights(repo) == {CAND: (100, False)}
    assert [s.split(" ")[1] for s in log(repo) if s.startswith("rollout(local):")][:3] == [
        "promote",
        "advance",
        "start",
    ]
    body = git(repo, "log", "-1", "--format=%B", "main^2")
    assert evidence.trailer(body, evidence.ACTION) == "promote"


def test_git_reads_the_trailers_of_a_start(repo: Path) -> None:
    begin(env_for(repo))
    message = git(repo, "log", "-1", "--format=%B", "main^2")
    parsed = subprocess.run(
        ["git", "interpret-trailers", "--parse"], input=message, capture_output=True, text=True, check=True
    ).stdout
    assert parsed.splitlines()[-2:] == [
        "Sluice-Action: advance",
        f"Sluice-Base: {git(repo, 'rev-parse', 'main^1').strip()}",
    ]
