"""`sluice loop --metrics-port`: the loop's heartbeat, its failures in a row and its turns by step, scraped from a
real `sluice loop` whose turns fail (a contract a person broke) and then work again."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from test_loop_e2e import loop_repo
from test_loop_triggers import log_of
from testkit.services import free_port

from deployment import metric_names as n
from monitor.loop import Outcome
from monitor.loop_metrics import LoopMetrics, namespace_of

pytestmark = pytest.mark.timeout(180)


def test_failures_in_a_row_count_until_a_turn_works_and_chain_links_are_not_turns() -> None:
    registry = CollectorRegistry()
    clock = iter([10.0, 20.0, 30.0, 40.0])
    metrics = LoopMetrics("sluice-staging", "staging", registry, clock=lambda: next(clock))
    labels = {"namespace": "sluice-staging", "environment": "staging"}

    def value(name: str, **extra: str) -> float | None:
        return registry.get_sample_value(name, {**labels, **extra})

    for outcome in (Outcome("error", "registry down"), Outcome("error", "registry down")):
        metrics.record(outcome)
    assert value(n.LOOP_FAILURES) == 2 and value(n.LOOP_LAST_TURN) == 20.0
    metrics.record(Outcome("chain-opened", "m-1 proposed to production"))
    assert value(n.LOOP_FAILURES) == 2 and value(n.LOOP_LAST_TURN) == 20.0  # not a turn
    metrics.record(Outcome("waiting", "no trigger"))
    assert value(n.LOOP_FAILURES) == 0 and value(n.LOOP_LAST_TURN) == 30.0
    assert value(n.total(n.LOOP_TURNS), step="error") == 2
    assert value(n.total(n.LOOP_TURNS), step="chain-opened") == 1
    assert value(n.total(n.LOOP_TURNS), step="waiting") == 1


def test_the_namespace_comes_from_the_environments_manifest(tmp_path: Path) -> None:
    env = tmp_path / "gitops" / "environments" / "staging"
    env.mkdir(parents=True)
    assert namespace_of(tmp_path, "staging") == ""
    (env / "seldondeployment.yaml").write_text(
        "kind: SeldonDeployment\nmetadata: {name: m, namespace: ml-stage}\n"
    )
    assert namespace_of(tmp_path, "staging") == "ml-stage"
    (env / "seldondeployment.yaml").write_text("- not a manifest\n")
    assert namespace_of(tmp_path, "staging") == ""


def scrape(port: int) -> dict[tuple[str, str], float]:
    """(sample name, step label) -> value, for the loop's series."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return {}
    return {
        (s.name, s.labels.get("step", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("sluice_loop_") and s.labels.get("namespace") == "sluice"
    }


def wait_until(proc: subprocess.Popen[str], port: int, predicate, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        seen = scrape(port)
        if seen and predicate(seen):
            return seen
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.2)
    raise AssertionError(f"no {what} within 60 s: {scrape(port)}")


def test_a_real_loop_reports_failing_turns_then_recovers(tmp_path: Path) -> None:
    repo = loop_repo(tmp_path / "repo")
    contract = repo.root / "contract.yaml"
    good = contract.read_text()
    contract.write_text("features: [not, a, contract\n")  # a person broke it
    log = log_of(tmp_path / "log", 60, right=57)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice", "loop", str(log), "--repo", str(repo.root), "--interval", "1s",
         "--metrics-port", str(port)],
        cwd=repo.root, env=repo.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        failing = wait_until(
            proc, port, lambda s: s.get((n.LOOP_FAILURES, ""), 0) >= 2, "two failed turns in a row"
        )
        assert failing[(n.total(n.LOOP_TURNS), "error")] >= 2 and failing[(n.LOOP_LAST_TURN, "")] > 1e9
        contract.write_text(good)  # fixed: the next turn works (after a back-off of at most 4 s here)
        healed = wait_until(
            proc, port, lambda s: s.get((n.total(n.LOOP_TURNS), "waiting"), 0) >= 1, "a turn that worked"
        )
        assert healed[(n.LOOP_FAILURES, "")] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert f"loop metrics on http://127.0.0.1:{port}/metrics" in output


def test_metrics_port_goes_with_the_long_running_loop_only(tmp_path: Path) -> None:
    repo = loop_repo(tmp_path / "repo")
    log = log_of(tmp_path / "log", 10, right=10)
    done = subprocess.run(
        [sys.executable, "-m", "sluice", "loop", str(log), "--repo", str(repo.root), "--once", "--metrics-port",
         "9999"],
        cwd=repo.root, env=repo.env, capture_output=True, text=True,
    )  # fmt: skip
    assert (
        done.returncode != 0 and "--metrics-port goes with the long-running loop" in done.stdout + done.stderr
    )
