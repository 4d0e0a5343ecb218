"""`sluice up` end to end: real predictor servers, a steady load, manifest rewrites and a killed candidate.

Every response is counted; the test fails on a single non-200 answer or client error.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from up_harness import SluiceUp, metric_samples, pid_listening_on, predictor, write_manifest

from model.bundle import Bundle


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
    up = SluiceUp(env, tmp_path / "up.log")
    url = up.url
    load = None
    try:
        up.wait_routed(2)
        load = Load(url, len(stable.signature.features)).start()

        def weights() -> dict[str, int]:
            return {q["name"]: q["traffic"] for q in up.routes()["predictors"]}

        def step(predictors: list[dict[str, Any]], expected: dict[str, int], what: str) -> None:
            write_manifest(env, predictors, name="sluice-classifier")
            up.wait_for(lambda: weights() == expected, 60, what)
            seen = load.total()  # type: ignore[union-attr]
            up.wait_for(lambda: load.total() > seen + 150, 30, f"traffic after {what}")  # type: ignore[union-attr]

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
            for lab, v in metric_samples(up.metrics(), "seldon_api_model_feedback_total")
        }
        assert feedback == {k: float(v) for k, v in served.items()}

        # Kill the candidate: its requests are retried on the stable one, and it is restarted.
        def candidate_port() -> int:
            address = next(q["address"] for q in up.routes()["predictors"] if q["name"] == c_name)
            return int(address.rsplit(":", 1)[1])

        old_port = candidate_port()
        victim = pid_listening_on(old_port)
        os.kill(victim, signal.SIGKILL)
        up.wait_for(lambda: candidate_port() != old_port, 60, "restart (on a port it reports)")
        up.wait_for(lambda: pid_listening_on(candidate_port()) != victim, 60, "a new process")
        up.wait_for(lambda: all(q["alive"] for q in up.routes()["predictors"]), 60, "candidate back")

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
        metrics = up.metrics()
        comparisons = metric_samples(metrics, "sluice_shadow_comparisons_total")
        assert [lab["predictor_name"] for lab, v in comparisons if v > 50] == [
            t_name
        ]  # it saw mirrored traffic
        assert "exited with code" in up.output()  # the kill was noticed ...
        assert "is back" in up.output()  # ... and repaired
        # Ports of the predictors still running, to check that Ctrl-C stops them.
        ports = [int(q["address"].rsplit(":", 1)[1]) for q in up.routes()["predictors"]]
    finally:
        if load is not None:
            load.stop()
        code = up.stop()
    assert code == 0, up.output()
    for port_ in ports:
        with pytest.raises(LookupError):
            pid_listening_on(port_)
