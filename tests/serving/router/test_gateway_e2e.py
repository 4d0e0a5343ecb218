"""`sluice up` end to end: real predictor servers, a steady load, manifest rewrites and a killed candidate.

Every response is counted; the test fails on a single non-200 answer or client error.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_harness import metric_samples, predictor, write_manifest

from model.bundle import Bundle

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pid_listening_on(port: int) -> int:
    """The predictor process started with `--port PORT` (found in /proc: the runtime does not say)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            b"serving.http.server" in argv
            and b"--port" in argv
            and argv[argv.index(b"--port") + 1] == str(port).encode()
        ):
            return int(entry)
    raise LookupError(f"no serving.http.server on port {port}")


class Load:
    """A bounded steady load from two client threads; counts every outcome."""

    def __init__(self, url: str, n_features: int, limit: int = 20_000):
        self.url = url
        self.limit = limit
        self.outcomes: Counter[str] = Counter()
        self.by_predictor: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        row = [0.1 * (i % 7) for i in range(n_features)]
        self.v1 = {"data": {"ndarray": [row]}}
        self.v2 = {"inputs": [{"name": "input", "shape": [1, n_features], "datatype": "FP64", "data": row}]}
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(2)]

    def _run(self, k: int) -> None:
        with httpx.Client(base_url=self.url, timeout=15) as c:
            i = 0
            while not self._stop.is_set() and sum(self.outcomes.values()) < self.limit:
                i += 1
                try:
                    if (i + k) % 2:
                        r = c.post("/api/v1.0/predictions", json=self.v1)
                    else:
                        r = c.post("/v2/models/classifier/infer", json=self.v2)
                    key = str(r.status_code)
                    name = r.headers.get("x-sluice-predictor", "?")
                    if r.status_code != 200:
                        self.failures.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as e:
                    key, name = type(e).__name__, "?"
                    self.failures.append(repr(e))
                with self._lock:
                    self.outcomes[key] += 1
                    self.by_predictor[name] += 1
                time.sleep(0.002)  # steady, not flat out: leave CPU for the processes being started

    def start(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self.threads:
            t.join(30)

    def total(self) -> int:
        return sum(self.outcomes.values())


def routes(url: str) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(url + "/gateway/routes", timeout=5).json()
    return data


def wait_for(predicate: Any, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (httpx.HTTPError, LookupError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} not met; sluice up said:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sluice_up_converges_under_load_with_zero_failed_requests(
    tmp_path: Path, bundle_dir: Path, rf_bundle_dir: Path, bad_bundle_dir: Path
) -> None:
    stable, candidate, third = (
        Bundle.open(p, verify=False) for p in (bundle_dir, rf_bundle_dir, bad_bundle_dir)
    )
    s_name, c_name, t_name = (f"m-{b.short_digest}" for b in (stable, candidate, third))

    def p(b: Bundle, name: str, traffic: int, shadow: bool = False) -> dict[str, Any]:
        return predictor(name, traffic, b.path, b.digest, shadow=shadow)

    env = tmp_path / "env"
    env.mkdir()
    write_manifest(env, [p(stable, s_name, 90), p(candidate, c_name, 10)], name="sluice-classifier")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sluice",
                "up",
                str(env),
                "--port",
                str(port),
                "--log-dir",
                str(tmp_path / "logs"),
            ],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    load = None
    try:
        wait_for(lambda: len(routes(url)["predictors"]) == 2, 90, "gateway up with two predictors", log)
        load = Load(url, len(stable.signature.features)).start()

        def weights() -> dict[str, int]:
            return {q["name"]: q["traffic"] for q in routes(url)["predictors"]}

        def step(predictors: list[dict[str, Any]], expected: dict[str, int], what: str) -> None:
            write_manifest(env, predictors, name="sluice-classifier")
            wait_for(lambda: weights() == expected, 60, what, log)
            seen = load.total()  # type: ignore[union-attr]
            wait_for(lambda: load.total() > seen + 150, 30, f"traffic after {what}", log)  # type: ignore[union-attr]

        time.sleep(0.5)
        step([p(stable, s_name, 50), p(candidate, c_name, 50)], {s_name: 50, c_name: 50}, "50/50")

        # Feedback reaches the predictor that answered, whichever it was.
        served: Counter[str] = Counter()
        with httpx.Client(base_url=url, timeout=10) as c:
            for _ in range(10):
                answer = c.post("/api/v1.0/predictions", json=load.v1)
                body = {
                    "request": load.v1,
                    "response": answer.json(),
                    "reward": 1.0,
                    "truth": {"data": {"ndarray": [1]}},
                }
                fb = c.post("/api/v1.0/feedback", json=body)
                assert fb.status_code == 200, fb.text
                assert fb.headers["x-sluice-predictor"] == answer.headers["x-sluice-predictor"]
                served[answer.headers["x-sluice-predictor"]] += 1
        feedback = {
            lab["predictor_name"]: v
            for lab, v in metric_samples(httpx.get(url + "/metrics").text, "seldon_api_model_feedback_total")
        }
        assert feedback == {k: float(v) for k, v in served.items()}

        # Kill the candidate: its requests are retried on the stable one, and it is restarted.
        addresses = {q["name"]: q["address"] for q in routes(url)["predictors"]}
        victim = pid_listening_on(int(addresses[c_name].rsplit(":", 1)[1]))
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: pid_listening_on(int(addresses[c_name].rsplit(":", 1)[1])) != victim, 60, "restart", log
        )
        wait_for(lambda: all(q["alive"] for q in routes(url)["predictors"]), 60, "candidate back", log)

        step([p(stable, s_name, 0), p(candidate, c_name, 100)], {s_name: 0, c_name: 100}, "0/100")
        with_shadow = [p(stable, s_name, 0), p(candidate, c_name, 100), p(third, t_name, 0, shadow=True)]
        step(with_shadow, {s_name: 0, c_name: 100, t_name: 0}, "shadow added")
        step([p(candidate, c_name, 100)], {c_name: 100}, "stable and shadow removed")
        load.stop()
        print(f"load: {dict(load.outcomes)} by predictor {dict(load.by_predictor)}")

        assert load.failures == [], load.failures[:5]
        assert load.outcomes == Counter({"200": load.total()})
        assert load.total() > 700
        assert load.by_predictor[s_name] > 50 and load.by_predictor[c_name] > 50
        metrics = httpx.get(url + "/metrics").text
        comparisons = metric_samples(metrics, "sluice_shadow_comparisons_total")
        assert [lab["predictor_name"] for lab, v in comparisons if v > 50] == [
            t_name
        ]  # it saw mirrored traffic
        assert "exited with code" in log.read_text()  # the kill was noticed ...
        assert "is back" in log.read_text()  # ... and repaired
        # Ports of the predictors still running, to check that Ctrl-C stops them.
        ports = [int(q["address"].rsplit(":", 1)[1]) for q in routes(url)["predictors"]]
    finally:
        if load is not None:
            load.stop()
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log.read_text()[-2000:]
    for port_ in ports:
        with pytest.raises(LookupError):
            pid_listening_on(port_)
