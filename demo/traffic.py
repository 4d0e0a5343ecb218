"""A steady client for the demo: replays held-out rows against the gateway and sends delayed ground truth.

Every request is recorded (when, which act, which predictor answered, status, latency), so the report's
numbers — failed requests during a switch, traffic share per predictor — come from what clients saw.
Requests carry a user key (`x-sluice-user`) drawn from a fixed population, so A/B pinning is exercised.
Targets only the loopback gateway, at a bounded rate, and stops when told.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from deployment import wire

USER_HEADER = wire.STICKY_HEADER
PREDICTOR_HEADER = wire.PREDICTOR_HEADER


@dataclass(frozen=True)
class RequestRecord:
    at: float
    act: str
    status: int  # 0 when the connection itself failed
    predictor: str | None
    latency_ms: float
    correct: bool | None
    smoke: bool = False


@dataclass
class TrafficStats:
    requests: int = 0
    failures: int = 0
    by_predictor: Counter[str] = field(default_factory=Counter)
    feedback_sent: int = 0
    feedback_failed: int = 0


class TrafficGenerator:
    """Open-loop load at `rate` requests per second from one thread; feedback follows after `feedback_delay`."""

    def __init__(
        self,
        base_url: str,
        rows: np.ndarray,
        truth: np.ndarray,
        feature_names: list[str],
        *,
        rate: float = 40.0,
        feedback_delay: float = 0.5,
        users: int = 200,
        timeout: float = 5.0,
    ):
        self.base_url = base_url.rstrip("/")
        self.rows = rows
        self.truth = truth
        self.names = feature_names
        self.rate = rate
        self.feedback_delay = feedback_delay
        self.users = users
        self.timeout = timeout
        self.act = "setup"
        # Blue/green warm-up: every `smoke_every`-th request is pinned to this predictor (a smoke test).
        self.smoke_target: str | None = None
        self.smoke_every = 4
        # Drift: (column, shift) added to every request's row from now on; the ground truth stays the row's own.
        self.drift: tuple[int, float] | None = None
        self.records: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: list[tuple[float, int, dict[str, Any]]] = []
        self._feedback = TrafficStats()

    # control -----------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="demo-traffic", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def set_act(self, act: str) -> None:
        self.act = act

    # results -----------------------------------------------------------------------------------------
    def stats(self, act: str | None = None, since: float | None = None) -> TrafficStats:
        with self._lock:
            records = [
                r for r in self.records if (act is None or r.act == act) and (since is None or r.at >= since)
            ]
        stats = TrafficStats(
            feedback_sent=self._feedback.feedback_sent, feedback_failed=self._feedback.feedback_failed
        )
        for r in records:
            stats.requests += 1
            if r.status != 200:
                stats.failures += 1
            if r.predictor:
                stats.by_predictor[r.predictor] += 1
        return stats

    def snapshot(self) -> list[RequestRecord]:
        with self._lock:
            return list(self.records)

    # the loop ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        interval = 1.0 / self.rate
        order = itertools.cycle(range(len(self.rows)))
        seq = itertools.count()
        limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
        with httpx.Client(base_url=self.base_url, timeout=self.timeout, limits=limits) as client:
            next_at = time.monotonic()
            while not self._stop.is_set():
                i = next(order)
                self._predict(client, i, next(seq))
                self._send_due_feedback(client)
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_at = time.monotonic()  # fell behind: do not burst to catch up
            self._send_due_feedback(client, flush=True)

    def _predict(self, client: httpx.Client, i: int, n: int) -> None:
        row = self.rows[i].copy()
        drift = self.drift
        if drift is not None:
            row[drift[0]] += drift[1]
        body = {"data": {"names": self.names, "ndarray": [row.tolist()]}}
        headers = {USER_HEADER: f"user-{n % self.users}"}
        smoke = self.smoke_target
        pinned = smoke is not None and n % self.smoke_every == 0
        if smoke is not None and pinned:
            headers[PREDICTOR_HEADER] = smoke
        started = time.monotonic()
        status, predictor, correct = 0, None, None
        try:
            resp = client.post("/api/v1.0/predictions", json=body, headers=headers)
            if resp.status_code == 404 and PREDICTOR_HEADER in headers:
                # The predictor a smoke request was pinned to is gone (a rollback removed it between the
                # decision and the demo clearing the pin): the request falls back to what serves now.
                del headers[PREDICTOR_HEADER]
                resp = client.post("/api/v1.0/predictions", json=body, headers=headers)
            status = resp.status_code
            predictor = resp.headers.get(PREDICTOR_HEADER)
            if status == 200:
                payload = resp.json()
                label = _label(payload)
                if label is not None:
                    correct = label == int(self.truth[i])
                    due = time.monotonic() + self.feedback_delay
                    feedback = {
                        "request": body,
                        "response": payload,
                        "truth": {"data": {"ndarray": [[int(self.truth[i])]]}},
                        "reward": 1.0 if correct else 0.0,
                    }
                    heapq.heappush(self._pending, (due, n, feedback))
        except httpx.HTTPError:
            status = 0
        latency = (time.monotonic() - started) * 1000
        with self._lock:
            self.records.append(
                RequestRecord(
                    time.time(),
                    self.act,
                    status,
                    predictor,
                    latency,
                    correct,
                    pinned,
                )
            )

    def _send_due_feedback(self, client: httpx.Client, flush: bool = False) -> None:
        now = time.monotonic()
        while self._pending and (flush or self._pending[0][0] <= now):
            _, _, feedback = heapq.heappop(self._pending)
            try:
                # The gateway routes feedback by the predictor it named in the response's meta.
                resp = client.post("/api/v1.0/feedback", json=feedback)
                ok = resp.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                self._feedback.feedback_sent += 1
            else:
                self._feedback.feedback_failed += 1


def _label(payload: dict[str, Any]) -> int | None:
    """The predicted class of a Seldon v1 answer: `data.ndarray` holds one row of class probabilities and
    `data.names` the class labels."""
    data = payload.get("data") or {}
    rows = data.get("ndarray")
    if not rows or not isinstance(rows[0], list):
        return None
    best = int(np.argmax(rows[0]))
    names = data.get("names") or []
    return int(names[best]) if best < len(names) and str(names[best]).lstrip("-").isdigit() else best
