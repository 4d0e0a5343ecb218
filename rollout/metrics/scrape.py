"""Observations from a direct scrape of a gateway's /metrics (the embedded default: no Prometheus needed).

Each tick scrapes twice, `window` seconds apart, and the difference is the window's counts (a counter that
went down was reset: the second value is then the increase, as Prometheus does). Every scrape is also kept, in
memory and, given a `history` file, on disk, with its time: the counts since a stage began are the sum of the
increases between the scrapes taken since then, as Prometheus' increase() would compute them from its
samples. With the file, ticks run one per process (`sluice rollout reconcile --once`, from cron) add up
like ticks of one `--watch`; without it, or if the file is lost, counting starts again from the next scrape
(never from before the stage). The file is a cache of metrics, not rollout state: an unreadable one is
ignored. Custom PromQL gates get no data from a scrape (their no-data rule applies). Only prediction requests
count (feedback requests are told apart by the `service` label).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from deployment import metric_names as names
from rollout.metrics import (
    COMPARISONS,
    DISAGREEMENTS,
    FEEDBACK,
    REQUESTS,
    REWARD,
    MetricsError,
    is_prediction,
)
from rollout.observations import Observations, PredictorStats

HISTORY = 20_000  # scrapes kept per predictor (at two per tick, hours of stage at a 1 s interval)
KEEP = 2 * 86400.0  # seconds of scrapes the history file keeps


@dataclass
class _Acc:
    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)
    feedback: float = 0.0
    reward: float = 0.0
    comparisons: float = 0.0
    disagreements: float = 0.0

    def freeze(self) -> PredictorStats:
        return PredictorStats(
            self.requests,
            self.errors,
            tuple(sorted(self.buckets.items())),
            self.feedback,
            self.reward,
            self.comparisons,
            self.disagreements,
        )


def parse_exposition(text: str, deployment: str, predictors: Sequence[str]) -> dict[str, PredictorStats]:
    """Cumulative per-predictor totals from Prometheus text exposition format (prediction requests only)."""
    from prometheus_client.parser import text_string_to_metric_families

    acc = {p: _Acc() for p in predictors}
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as e:
        raise MetricsError(f"unreadable /metrics: {e}") from e
    for family in families:
        for s in family.samples:
            pred = s.labels.get("predictor_name")
            if pred not in acc:
                continue
            a = acc[pred]
            in_deployment = s.labels.get("deployment_name") == deployment
            if s.name in (f"{REQUESTS}_count", f"{REQUESTS}_bucket") and not is_prediction(
                s.labels.get(names.SERVICE)
            ):
                continue  # feedback, status, metadata: not a prediction a user waited for
            if not math.isfinite(s.value) or s.value < 0:
                raise MetricsError(f"unreadable /metrics: {s.name}{s.labels} = {s.value} is not a count")
            if s.name == f"{REQUESTS}_count" and in_deployment:
                a.requests += s.value
                if s.labels.get("code", "").startswith("5"):
                    a.errors += s.value
            elif s.name == f"{REQUESTS}_bucket" and in_deployment:
                try:
                    le = float(s.labels["le"])
                except (KeyError, ValueError):
                    raise MetricsError(
                        f"unreadable /metrics: {s.name}{s.labels} has no numeric `le`"
                    ) from None
                a.buckets[le] = a.buckets.get(le, 0.0) + s.value
            elif s.name == FEEDBACK and in_deployment:
                a.feedback += s.value
            elif s.name == REWARD and in_deployment:
                a.reward += s.value
            elif s.name == COMPARISONS:
                a.comparisons += s.value
            elif s.name == DISAGREEMENTS:
                a.disagreements += s.value
    return {p: a.freeze() for p, a in acc.items()}


def _inc(before: float, after: float) -> float:
    return after if after < before else after - before


def delta(before: PredictorStats, after: PredictorStats) -> PredictorStats:
    b = dict(before.buckets)
    return PredictorStats(
        requests=_inc(before.requests, after.requests),
        errors=_inc(before.errors, after.errors),
        buckets=tuple((le, _inc(b.get(le, 0.0), c)) for le, c in after.buckets),
        feedback=_inc(before.feedback, after.feedback),
        reward=_inc(before.reward, after.reward),
        comparisons=_inc(before.comparisons, after.comparisons),
        disagreements=_inc(before.disagreements, after.disagreements),
    )


def add(a: PredictorStats, b: PredictorStats) -> PredictorStats:
    buckets = dict(a.buckets)
    for le, c in b.buckets:
        buckets[le] = buckets.get(le, 0.0) + c
    return PredictorStats(
        requests=a.requests + b.requests,
        errors=a.errors + b.errors,
        buckets=tuple(sorted(buckets.items())),
        feedback=a.feedback + b.feedback,
        reward=a.reward + b.reward,
        comparisons=a.comparisons + b.comparisons,
        disagreements=a.disagreements + b.disagreements,
    )


def increase(snapshots: Sequence[tuple[float, PredictorStats]], since: float) -> PredictorStats:
    """The counts between the scrapes taken at or after `since` (a timestamp), resets handled."""
    kept = [s for t, s in snapshots if t >= since]
    total = PredictorStats()
    for before, after in itertools.pairwise(kept):
        total = add(total, delta(before, after))
    return total


class ScrapeProvider:
    def __init__(
        self,
        url: str,
        client: httpx.Client | None = None,
        timeout: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        history: Path | None = None,
    ):
        self.url = url
        self.client = client or httpx.Client(timeout=timeout)
        self.sleep = sleep
        self.clock = clock
        self.history_file = history
        self._history: dict[tuple[str, str], deque[tuple[float, PredictorStats]]] = {}
        self._loaded = False

    def scrape(self) -> str:
        try:
            r = self.client.get(self.url)
        except httpx.HTTPError as e:
            raise MetricsError(f"scrape {self.url}: {e}") from e
        if r.status_code != 200:
            raise MetricsError(f"scrape {self.url}: HTTP {r.status_code}")
        return r.text

    def _load(self) -> None:
        if self._loaded or self.history_file is None:
            return
        self._loaded = True
        try:
            data = json.loads(self.history_file.read_text())
            for entry in data["series"]:
                key = (str(entry["deployment"]), str(entry["predictor"]))
                rows: deque[tuple[float, PredictorStats]] = deque(maxlen=HISTORY)
                for t, r, e, b, f, w, c, d in entry["scrapes"]:
                    buckets = tuple((float(le), float(n)) for le, n in b)
                    rows.append(
                        (
                            float(t),
                            PredictorStats(
                                float(r), float(e), buckets, float(f), float(w), float(c), float(d)
                            ),
                        )
                    )
                self._history[key] = rows
        except (OSError, ValueError, KeyError, TypeError):
            self._history = {}  # no file yet, or an unreadable one: count from the next scrape

    def _save(self, oldest: float) -> None:
        if self.history_file is None:
            return
        series = []
        for (deployment, predictor), rows in self._history.items():
            kept = [(t, s) for t, s in rows if t >= oldest]
            if not kept:
                continue
            series.append(
                {
                    "deployment": deployment,
                    "predictor": predictor,
                    "scrapes": [
                        [
                            t,
                            s.requests,
                            s.errors,
                            [[le, n] for le, n in s.buckets],
                            s.feedback,
                            s.reward,
                            s.comparisons,
                            s.disagreements,
                        ]
                        for t, s in kept
                    ],
                }
            )
        tmp = self.history_file.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"series": series}))
            os.replace(tmp, self.history_file)
        except OSError:
            pass  # a cache: losing it costs resolution, never correctness

    def _snapshot(self, deployment: str, predictors: Sequence[str]) -> dict[str, PredictorStats]:
        at = self.clock()
        stats = parse_exposition(self.scrape(), deployment, predictors)
        for p in predictors:
            self._history.setdefault((deployment, p), deque(maxlen=HISTORY)).append((at, stats[p]))
        return stats

    def observe(
        self,
        deployment: str,
        predictors: Sequence[str],
        window: float,
        custom: Mapping[str, str] | None = None,
        since: float | None = None,
        namespace: str | None = None,  # one gateway serves one environment: its /metrics are all of it
    ) -> Observations:
        self._load()
        start = None if since is None else self.clock() - since
        first = self._snapshot(deployment, predictors)
        self.sleep(window)
        second = self._snapshot(deployment, predictors)
        stage = None
        if start is not None:
            stage = {p: increase(self._history[(deployment, p)], start) for p in predictors}
        self._save(oldest=self.clock() - KEEP)
        return Observations(
            window=window,
            predictors={p: delta(first[p], second[p]) for p in predictors},
            stage=stage,
            source=f"scrape {self.url}",
        )
