"""Faults and concurrency: locks and optimistic writes, a crash between writing and merging, a manifest
edited by hand mid-rollout, missing data, and freeze instead of rollback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from rollout_exporter import Exporter
from rollout_gitops import fast_policy, git, log, make_env, make_repo, weights

from model.bundle import Bundle
from rollout.decision import Action
from rollout.reconciler import Environment, abort, start, tick
from rollout.scm import Conflict, SCMError
from rollout.scm.local import LocalGit


@pytest.fixture
def setup(tmp_path: Path, bundle_dir: Path, rf_bundle_dir: Path) -> tuple[Path, str, str, str, str]:
    stable = Bundle.open(bundle_dir)
    cand = Bundle.open(rf_bundle_dir)
    repo = make_repo(tmp_path, stable.digest)
    return repo, "m-" + stable.short_digest, "m-" + cand.short_digest, rf_bundle_dir.as_uri(), cand.digest


def begin(env: Environment, setup: tuple[Path, str, str, str, str]) -> None:
    _, _, _, uri, digest = setup
    start(env, uri, uri, digest)


@pytest.mark.timeout(30)
def test_lock_keeps_a_second_reconciler_out(setup, exporter: Exporter) -> None:  # type: ignore[no-untyped-def]
    repo, _stable, _cand, *_ = setup
    env = make_env(repo, fast_policy("canary"), exporter.url)
    begin(env, setup)
    before = git(repo, "rev-parse", "main")
    other = make_env(repo, fast_policy("canary"), exporter.url)
    with env.scm.lock("local"), pytest.raises(Conflict, match="another reconciler"):
        tick(other)
    assert git(repo, "rev-parse", "main") == before


def dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)  # reaped: surely dead now
    return pid


def test_stale_lock_of_a_dead_process_is_taken_over(setup) -> None:  # type: ignore[no-untyped-def]
    repo, *_ = setup
    lock = repo / ".git" / "sluice-rollout-local.lock"
    lock.write_text(f"{dead_pid()} {__import__('time').time()}\n")
    with LocalGit(repo).lock("local"):
        assert lock.exists() and lock.read_text().split()[0] == str(os.getpid())
    assert not lock.exists()


@pytest.mark.timeout(30)
def test_lock_held_by_another_process_until_it_is_killed(setup) -> None:  # type: ignore[no-untyped-def]
    import signal
    import subprocess
    import sys
    import time

    repo, *_ = setup
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from rollout.scm.local import LocalGit\n"
            f"with LocalGit({str(repo)!r}).lock('local'):\n    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(Conflict, match="another reconciler"), LocalGit(repo).lock("local"):
            pass
        holder.send_signal(signal.SIGKILL)  # a crash: no cleanup runs, the lock file stays behind
        holder.wait(timeout=10)
        assert (repo / ".git" / "sluice-rollout-local.lock").exists()
        deadline = time.time() + 5
        while True:
            try:
                with LocalGit(repo).lock("local"):
                    break
            except Conflict:
                assert time.time() < deadline, "the kernel did not release a dead holder's lock"
                time.sleep(0.05)
    finally:
        holder.kill()
        holder.wait()


def test_write_based_on_an_old_main_is_refused(setup) -> None:  # type: ignore[no-untyped-def]
    repo, *_ = setup
    scm = LocalGit(repo)
    snap = scm.read("local")
    scm.propose("local", snap.text + "# one\n", "first", "", snap.revision, "auto", merge=True)
    with pytest.raises(Conflict, match="moved"):
        scm.propose("local", snap.text + "# two\n", "second", "", snap.revision, "auto", merge=True)
    assert git(repo, "show", "main:gitops/environments/local/seldondeployment.yaml").endswith("# one\n")
    assert git(repo, "branch", "--list", "sluice/*").strip() == ""


@pytest.mark.timeout(30)
def test_crash_between_write_and_merge_is_repaired(setup, exporter: Exporter, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    repo, stable, cand, *_ = setup
    exporter.set(stable, requests=5)
    exporter.set(cand, requests=5)
    env = make_env(repo, fast_policy("canary"), exporter.url)
    begin(env, setup)

    def crash(self, proposal):  # type: ignore[no-untyped-def]
        raise SystemExit("killed between writing and merging")

    monkeypatch.setattr(LocalGit, "merge", crash)
    with pytest.raises(SystemExit):
        tick(env)
    monkeypatch.undo()
    assert weights(repo)[cand] == (10, False)  # main untouched
    assert len(git(repo, "branch", "--list", "sluice/local/auto/*").split()) == 1
    # a killed process leaves its lock file behind: the next run sees its owner is dead and takes over
    (repo / ".git" / "sluice-rollout-local.lock").write_text(f"{dead_pid()} 0\n")
    res = tick(env)
    assert any("repaired" in n for n in res.notes) and res.outcome is not None and res.outcome.merged
    assert res.decision.action == Action.ADVANCE and "left unmerged" in res.decision.reason
    assert weights(repo) == {stable: (50, False), cand: (50, False)}
    assert git(repo, "branch", "--list", "sluice/*").strip() == ""


@pytest.mark.timeout(30)
def test_hand_edit_pauses_the_rollout(setup, exporter: Exporter) -> None:  # type: ignore[no-untyped-def]
    repo, stable, cand, *_ = setup
    exporter.set(stable, requests=5)
    exporter.set(cand, requests=5)
    env = make_env(repo, fast_policy("canary"), exporter.url)
    begin(env, setup)
    path = repo / "gitops/environments/local/seldondeployment.yaml"
    original = path.read_text()
    path.write_text(original.replace("traffic: 90", "traffic: 70").replace("traffic: 10", "traffic: 30"))
    git(repo, "commit", "-qam", "hand edit")
    res = tick(env)
    assert res.decision.action == Action.HOLD and "edited by hand" in res.decision.reason
    assert env.target.state(env.scm.read("local").text).rollout.status == "paused"  # type: ignore[union-attr]
    assert weights(repo) == {stable: (70, False), cand: (30, False)}  # the engine did not fight the human
    assert any("rollout(local): pause" in s for s in log(repo))
    assert not tick(env).wrote  # stays paused, no commit per tick
    path.write_text(
        path.read_text().replace("traffic: 70", "traffic: 90").replace("traffic: 30", "traffic: 10")
    )
    git(repo, "commit", "-qam", "restore weights")
    resumed = tick(env)
    assert "resumed" in resumed.decision.reason
    abort(env)
    assert weights(repo) == {stable: (100, False)}


@pytest.mark.timeout(30)
def test_no_data_holds_then_rolls_back(setup, exporter: Exporter) -> None:  # type: ignore[no-untyped-def]
    repo, stable, _cand, *_ = setup
    exporter.set(stable, requests=5)  # the candidate gets nothing
    gates = [
        {"name": "success", "metric": "success_rate", "min": 0.9, "min_sample": 10, "no_data_deadline": 0.8}
    ]
    env = make_env(repo, fast_policy("canary", gates=gates), exporter.url)
    now = [1_900_000_000.0]
    env.clock = lambda: now[0]  # the stage's clock: 0.3 s per tick, however loaded this machine is
    begin(env, setup)
    first = tick(env)
    assert (
        first.decision.action == Action.HOLD
        and "waiting for data" in first.decision.reason
        and not first.wrote
    )
    for _ in range(10):
        now[0] += 0.3
        res = tick(env)
        if res.wrote:
            break
    assert res.decision.action == Action.ROLLBACK and "no data" in res.decision.reason
    assert res.decision.quarantine is None  # no evidence against the candidate: not quarantined
    assert weights(repo) == {stable: (100, False)}


@pytest.mark.timeout(30)
def test_missing_data_never_promotes_even_when_the_gate_says_pass(setup, exporter: Exporter) -> None:  # type: ignore[no-untyped-def]
    repo, _stable, cand, *_ = setup
    gates = [{"name": "accuracy", "metric": "accuracy", "min": 0.9, "min_sample": 10, "no_data": "pass"}]
    env = make_env(repo, fast_policy("canary", gates=gates), exporter.url)
    begin(env, setup)
    assert tick(env).decision.action == Action.ADVANCE  # a stage may advance on `pass`
    res = tick(env)
    assert res.decision.action == Action.HOLD and "missing data never promotes" in res.decision.reason
    exporter.set(cand, requests=5, feedback=10, reward_ratio=1.0)
    for _ in range(5):
        res = tick(env)
        if res.wrote:
            break
    assert res.decision.action == Action.PROMOTE


@pytest.mark.timeout(30)
def test_freeze_keeps_weights(setup, exporter: Exporter) -> None:  # type: ignore[no-untyped-def]
    repo, stable, cand, *_ = setup
    exporter.set(stable, requests=5)
    exporter.set(cand, requests=5, error_ratio=0.5)
    env = make_env(repo, fast_policy("canary", on_failure="freeze"), exporter.url)
    begin(env, setup)
    res = tick(env)
    assert res.wrote and res.decision.rollout is not None and res.decision.rollout.status == "frozen"
    assert weights(repo) == {stable: (90, False), cand: (10, False)}
    assert any(s.startswith("rollout(local): freeze") for s in log(repo))
    assert not tick(env).wrote
    abort(env)  # a human can still roll back
    assert weights(repo) == {stable: (100, False)}


def test_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(SCMError, match="not a git repository"):
        LocalGit(tmp_path)


@pytest.mark.timeout(30)
def test_a_start_that_needs_approval_waits_on_its_branch(setup, exporter: Exporter) -> None:  # type: ignore[no-untyped-def]
    from rollout.reconciler import approve

    repo, stable, cand, *_ = setup
    exporter.set(stable, requests=5)
    exporter.set(cand, requests=5)
    env = make_env(
        repo, fast_policy("canary", stages=[{"weight": 10, "bake": 0, "approval": True}]), exporter.url
    )
    begin(env, setup)
    assert weights(repo) == {stable: (100, False)}
    res = tick(env)
    assert res.decision.action == Action.AWAIT_APPROVAL and not res.wrote
    assert len(git(repo, "branch", "--list", "sluice/local/approval/*").split()) == 1  # not discarded
    approve(env)
    assert weights(repo) == {stable: (90, False), cand: (10, False)}
    for _ in range(5):
        if tick(env).wrote:
            break
    assert weights(repo) == {cand: (100, False)}


@pytest.mark.timeout(30)
def test_unreachable_metrics_are_no_data(setup) -> None:  # type: ignore[no-untyped-def]
    from testkit.services import free_port

    repo, stable, *_ = setup
    gates = [
        {"name": "success", "metric": "success_rate", "min": 0.9, "min_sample": 10, "no_data_deadline": 0.5}
    ]
    env = make_env(repo, fast_policy("canary", gates=gates), f"http://127.0.0.1:{free_port()}/metrics")
    now = [1_900_000_000.0]
    env.clock = lambda: now[0]  # the deadline is the stage's clock, not how fast this machine runs git
    begin(env, setup)
    first = tick(env)
    assert first.decision.action == Action.HOLD and any("metrics unavailable" in n for n in first.notes)
    now[0] += 0.6
    res = tick(env)
    assert res.decision.action == Action.ROLLBACK and "no data" in res.decision.reason
    assert weights(repo) == {stable: (100, False)}


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_two_reconcilers_racing_write_each_step_once(setup, exporter: Exporter) -> None:  # type: ignore[no-untyped-def]
    import threading
    import time

    repo, stable, cand, *_ = setup
    # Every window must hold enough observations (the exporter ticks every 50 ms, 50 requests a tick): this
    # test is about two reconcilers racing, not about gates waiting for data on a loaded machine.
    exporter.set(stable, requests=50)
    exporter.set(cand, requests=50)
    policy = fast_policy("canary", window=0.25, stages=[{"weight": w, "bake": 0} for w in (10, 20, 40, 60)])
    envs = [make_env(repo, policy, exporter.url) for _ in range(2)]
    begin(envs[0], setup)
    conflicts = [0, 0]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            for _ in range(300):
                try:
                    res = tick(envs[i])
                except Conflict:
                    conflicts[i] += 1
                    time.sleep(0.01)  # as a real reconciler would wait for its next interval
                    continue
                if res.wrote and res.decision.action == Action.PROMOTE:
                    return
                r = envs[i].target.state(envs[i].scm.read("local").text).rollout
                if r is not None and not r.active:
                    return
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    steps = [s for s in log(repo) if s.startswith("rollout(local):")]
    assert weights(repo) == {cand: (100, False)}, log(repo)
    advances = sorted(s.split("[")[-1] for s in steps if ": advance" in s)
    assert advances == sorted(["canary 20%]", "canary 40%]", "canary 60%]"]), steps  # each stage once
    assert sum(": promote" in s for s in steps) == 1
    assert sum(conflicts) > 0  # they did collide, and the loser stood back
