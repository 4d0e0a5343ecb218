"""The local runtime converges on manifest changes, refuses what it cannot run, and drains what it removes."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from up_harness import FakeCommand, RunningRuntime, pid_listening_on, predictor, v1_body, write_manifest

pytestmark = pytest.mark.timeout(120)
PREDICT = "/api/v1.0/predictions"


def names(rt: RunningRuntime) -> dict[str, int]:
    return {p["name"]: p["traffic"] for p in rt.routes()["predictors"]}


def test_weight_change_swaps_the_table_and_keeps_the_processes(
    up: Callable[..., RunningRuntime], fake_uri: Path
) -> None:
    rt = up([predictor("m-a", 100, fake_uri), predictor("m-b", 0, fake_uri)])
    pids = {p.spec.name: p.pid for p in rt.runtime.processes.values()}
    write_manifest(rt.env, [predictor("m-a", 0, fake_uri), predictor("m-b", 100, fake_uri)])
    rt.wait_for(lambda: names(rt) == {"m-a": 0, "m-b": 100}, what="weights 0/100")
    with httpx.Client(base_url=rt.url) as c:
        assert {c.post(PREDICT, json=v1_body()).headers["x-sluice-predictor"] for _ in range(20)} == {"m-b"}
    assert {p.spec.name: p.pid for p in rt.runtime.processes.values()} == pids


def test_added_predictor_gets_traffic_only_once_ready_and_removed_one_is_stopped(
    up: Callable[..., RunningRuntime], fake_uri: Path
) -> None:
    rt = up([predictor("m-a", 100, fake_uri)])
    old = next(iter(rt.runtime.processes.values()))
    write_manifest(rt.env, [predictor("m-a", 50, fake_uri), predictor("m-b", 50, fake_uri)])
    rt.wait_for(lambda: "m-b" in names(rt), what="m-b routed")
    b = next(p for p in rt.runtime.processes.values() if p.spec.name == "m-b")
    assert b.backend.alive  # routed only after its readiness probe passed
    write_manifest(rt.env, [predictor("m-b", 100, fake_uri)])
    rt.wait_for(lambda: names(rt) == {"m-b": 100}, what="m-a removed")
    rt.wait_for(lambda: any(e.message == "stopped m-a" for e in rt.events), what="m-a stopped")
    assert old.popen is not None and old.popen.poll() is not None


def test_a_manifest_it_cannot_run_is_refused_and_the_running_set_stays(
    up: Callable[..., RunningRuntime], fake_uri: Path
) -> None:
    rt = up([predictor("m-a", 100, fake_uri)])
    env: Path = rt.env
    write_manifest(env, [predictor("m-a", 60, fake_uri), predictor("m-b", 30, fake_uri)])
    rt.wait_for(lambda: any("refused" in e.message for e in rt.events), what="refusal")
    refusal = next(e.message for e in rt.events if "refused" in e.message)
    assert "spec.predictors[].traffic" in refusal and "got 90" in refusal
    assert names(rt) == {"m-a": 100}
    assert httpx.post(rt.url + PREDICT, json=v1_body()).status_code == 200
    # A fixed manifest is then applied.
    write_manifest(env, [predictor("m-a", 60, fake_uri), predictor("m-b", 40, fake_uri)])
    rt.wait_for(lambda: names(rt) == {"m-a": 60, "m-b": 40}, what="fixed manifest applied")


def test_a_predictor_that_cannot_start_refuses_the_change(
    up: Callable[..., RunningRuntime], fake_uri: Path
) -> None:
    command = FakeCommand()
    command.behaviour["m-broken"] = ["--port", "not-a-port"]  # argparse error: exits at once
    rt = up([predictor("m-a", 100, fake_uri)], command=command)
    write_manifest(rt.env, [predictor("m-a", 90, fake_uri), predictor("m-broken", 10, fake_uri)])
    rt.wait_for(lambda: any("refused" in e.message for e in rt.events), what="refusal")
    refusal = next(e.message for e in rt.events if "refused" in e.message)
    assert "predictor m-broken exited with code 2 before it was ready" in refusal
    assert "invalid int value" in refusal  # the tail of its log says why
    assert names(rt) == {"m-a": 100}
    assert [p.spec.name for p in rt.runtime.processes.values()] == ["m-a"]


def test_removed_predictor_is_drained_before_it_stops(
    up: Callable[..., RunningRuntime], fake_uri: Path
) -> None:
    command = FakeCommand()
    command.behaviour["m-slow"] = ["--delay", "1.0"]
    rt = up([predictor("m-slow", 100, fake_uri), predictor("m-fast", 0, fake_uri)], command=command)
    results: list[tuple[int, str]] = []

    def call() -> None:
        r = httpx.post(rt.url + PREDICT, json=v1_body(), timeout=10)
        results.append((r.status_code, r.headers.get("x-sluice-predictor", "")))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    slow = next(p for p in rt.runtime.processes.values() if p.spec.name == "m-slow")
    rt.wait_for(lambda: slow.backend.in_flight == 4, what="the four requests in flight on m-slow")
    write_manifest(rt.env, [predictor("m-fast", 100, fake_uri)])
    for t in threads:
        t.join(10)
    # Answered by m-slow itself: a stop without draining would have cut them off (and sent them elsewhere).
    assert results == [(200, "m-slow")] * 4
    rt.wait_for(lambda: any(e.message == "stopped m-slow" for e in rt.events), what="m-slow stopped")


def test_stop_ends_every_predictor_process(tmp_path: Path, fake_uri: Path) -> None:
    env = tmp_path / "env"
    env.mkdir()
    write_manifest(env, [predictor("m-a", 50, fake_uri), predictor("m-b", 50, fake_uri)])
    rt = RunningRuntime(env, command=FakeCommand()).start()
    popens = [p.popen for p in rt.runtime.processes.values()]
    with httpx.Client(base_url=rt.url) as c:
        assert Counter(c.post(PREDICT, json=v1_body()).status_code for _ in range(10)) == Counter({200: 10})
    rt.stop()
    assert not rt.thread.is_alive() and rt.error is None
    assert all(p is not None and p.poll() is not None for p in popens)


def _niceness(pid: int | None) -> int:
    assert pid is not None
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_a_shadow_runs_at_low_priority_and_its_promotion_starts_a_fresh_process(
    up: Callable[..., RunningRuntime], fake_uri: Path
) -> None:
    rt = up([predictor("m-a", 100, fake_uri), predictor("m-b", 0, fake_uri, shadow=True)])
    procs = {p.spec.name: p for p in rt.runtime.processes.values()}
    assert _niceness(procs["m-b"].pid) - _niceness(procs["m-a"].pid) == 10
    shadow_pid = procs["m-b"].pid
    write_manifest(rt.env, [predictor("m-a", 50, fake_uri), predictor("m-b", 50, fake_uri)])
    rt.wait_for(lambda: names(rt) == {"m-a": 50, "m-b": 50}, what="m-b promoted")
    live_b = next(p for p in rt.runtime.processes.values() if p.spec.name == "m-b")
    assert live_b.pid != shadow_pid and _niceness(live_b.pid) == _niceness(procs["m-a"].pid)
    assert procs["m-a"].pid == next(p.pid for p in rt.runtime.processes.values() if p.spec.name == "m-a")


def test_stopping_while_a_removed_predictor_drains_still_ends_it(tmp_path: Path, fake_uri: Path) -> None:
    env = tmp_path / "env"
    env.mkdir()
    write_manifest(env, [predictor("m-slow", 100, fake_uri), predictor("m-fast", 0, fake_uri)])
    command = FakeCommand()
    command.behaviour["m-slow"] = ["--delay", "2.0"]
    rt = RunningRuntime(env, command=command).start()
    slow = next(p.popen for p in rt.runtime.processes.values() if p.spec.name == "m-slow")
    caller = threading.Thread(target=lambda: httpx.post(rt.url + PREDICT, json=v1_body(), timeout=10))
    caller.start()
    backend = next(p.backend for p in rt.runtime.processes.values() if p.spec.name == "m-slow")
    rt.wait_for(lambda: backend.in_flight == 1, what="the request in flight on m-slow")
    write_manifest(env, [predictor("m-fast", 100, fake_uri)])
    rt.wait_for(lambda: names(rt) == {"m-fast": 100}, what="m-slow removed from routing")
    assert slow is not None and slow.poll() is None  # draining: its request is still in flight
    rt.stop()
    caller.join(10)
    assert slow.poll() is not None


def test_a_process_serving_another_model_or_digest_is_never_routed(
    up: Callable[..., RunningRuntime], fake_uri: Path
) -> None:
    command = FakeCommand()
    command.behaviour["m-impostor"] = ["--digest", "sha256:" + "f" * 64]  # answers for another bundle
    command.behaviour["m-renamed"] = ["--model", "another-model"]
    rt = up([predictor("m-a", 100, fake_uri)], command=command, ready_timeout=3.0)
    for name in ("m-impostor", "m-renamed"):
        write_manifest(rt.env, [predictor("m-a", 50, fake_uri), predictor(name, 50, fake_uri)])
        rt.wait_for(lambda n=name: any(f"predictor {n} not ready" in e.message for e in rt.events), what=name)
        refusal = next(e.message for e in rt.events if f"predictor {name} not ready" in e.message)
        assert "readiness probe answered 404" in refusal
        assert names(rt) == {"m-a": 100}
    with httpx.Client(base_url=rt.url) as c:
        assert {c.post(PREDICT, json=v1_body()).headers["x-sluice-predictor"] for _ in range(10)} == {"m-a"}


def test_each_predictor_reports_the_port_it_bound(up: Callable[..., RunningRuntime], fake_uri: Path) -> None:
    rt = up([predictor("m-a", 50, fake_uri), predictor("m-b", 50, fake_uri)])
    rows = {r["name"]: r for r in rt.runtime.snapshot()}
    routes = {p["name"]: p["address"] for p in rt.routes()["predictors"]}
    for name, row in rows.items():
        assert routes[name] == f"127.0.0.1:{row['port']}"
        assert pid_listening_on(int(row["port"])) == row["pid"]  # the port is the process's own
