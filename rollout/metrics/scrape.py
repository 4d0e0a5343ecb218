"""Observations from a direct scrape of a gateway's /metrics (the embedded default: no Prometheus needed).

The engine keeps no state between ticks, so a window is measured inside one tick: scrape, wait `window`
seconds, scrape again, and take the difference (a counter that went down was reset: the second value is
then the increase, as Prometheus does). Totals since a stage began (A/B tests) cannot be computed this way;
for them the cumulative counters are used, which count from the gateway's start: for a candidate added at the
stage's start that is the stage. Custom PromQL gates get no data from a scrape (their no-data rule applies).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx

from rollout.metrics import COMPARISONS, DISAGREEMENTS, FEEDBACK, REQUESTS, REWARD, MetricsError
from rollout.observations import Observations, PredictorStats


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
    """Cumulative per-predictor totals from Prometheus text exposition format."""
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
            if s.name == f"{REQUESTS}_count" and in_deployment:
                a.requests += s.value
                if s.labels.get("code", "").startswith("5"):
                    a.errors += s.value
            elif s.name == f"{REQUESTS}_bucket" and in_deployment:
                le = float(s.labels["le"])
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


class ScrapeProvider:
    def __init__(
        self,
        url: str,
        client: httpx.Client | None = None,
        timeout: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.url = url
        self.client = client or httpx.Client(timeout=timeout)
        self.sleep = sleep

    def scrape(self) -> str:
        try:
            r = self.client.get(self.url)
        except httpx.HTTPError as e:
            raise MetricsError(f"scrape {self.url}: {e}") from e
        if r.status_code != 200:
            raise MetricsError(f"scrape {self.url}: HTTP {r.status_code}")
        return r.text

    def observe(
        self,
        deployment: str,
        predictors: Sequence[str],
        window: float,
        custom: Mapping[str, str] | None = None,
        since: float | None = None,
        namespace: str | None = None,  # one gateway serves one environment: its /metrics are all of it
    ) -> Observations:
        first = parse_exposition(self.scrape(), deployment, predictors)
        self.sleep(window)
        second = parse_exposition(self.scrape(), deployment, predictors)
        return Observations(
            window=window,
            predictors={p: delta(first[p], second[p]) for p in predictors},
            stage=second if since else None,
            source=f"scrape {self.url}",
        )
