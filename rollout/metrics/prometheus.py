"""Observations from Prometheus' HTTP API (`/api/v1/query`), with PromQL over the Seldon executor metrics.

Every query selects the environment's namespace (the manifest's metadata.namespace, the `namespace` label
Prometheus puts on every series it scrapes from a pod): staging and production run the same deployment and
predictor names, and a query without it would judge production on staging's traffic. A custom PromQL gate
must select `namespace="{namespace}"` itself, or it is refused. Latency buckets are fetched as `increase()`
per `le`, so the quantile a gate asks for is computed by the engine exactly as for a direct scrape.
`increase()` needs at least two samples in the window: choose a window of several scrape intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from deployment import metric_names as names
from rollout.metrics import (
    COMPARISONS,
    DISAGREEMENTS,
    FEEDBACK,
    PREDICTION_SERVICES,
    REQUESTS,
    REWARD,
    MetricsError,
)
from rollout.observations import Observations, PredictorStats


def _range(seconds: float) -> str:
    return f"{max(1, math.ceil(seconds))}s"


_REGEX_SPECIAL = set(".^$*+?()[]{}|\\")


def _names(predictors: Sequence[str]) -> str:
    """A PromQL regex alternation matching exactly these names (backslashes doubled inside the string)."""
    return "|".join("".join("\\\\" + c if c in _REGEX_SPECIAL else c for c in p) for p in predictors)


def _string(value: str) -> str:
    """A PromQL double-quoted string literal holding exactly `value`."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _namespace(namespace: str | None) -> str:
    if not namespace:
        raise MetricsError(
            "the manifest has no metadata.namespace: Prometheus queries must select the environment's "
            "namespace (staging and production share deployment and predictor names)"
        )
    return f"{names.NAMESPACE}={_string(namespace)}"


# The `service` values of prediction requests; the empty alternative keeps series without the label.
_PREDICTIONS = "|" + _names(sorted(PREDICTION_SERVICES))


class PrometheusProvider:
    def __init__(self, url: str, client: httpx.Client | None = None, timeout: float = 5.0):
        self.url = url.rstrip("/")
        self.client = client or httpx.Client(timeout=timeout)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query; the vector's samples as [{metric: {...}, value: [ts, "1.5"]}]."""
        try:
            r = self.client.get(f"{self.url}/api/v1/query", params={"query": promql})
        except httpx.HTTPError as e:
            raise MetricsError(f"prometheus {self.url}: {e}") from e
        try:
            body = r.json()
        except ValueError as e:
            raise MetricsError(f"prometheus {self.url}: HTTP {r.status_code}, not JSON") from e
        if r.status_code != 200 or body.get("status") != "success":
            raise MetricsError(
                f"prometheus {self.url}: {body.get('error', r.status_code)} for query {promql!r}"
            )
        data = body.get("data") or {}
        if data.get("resultType") == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data.get("result") or [])

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        if not result:
            return None
        v = float(result[0]["value"][1])
        return None if math.isnan(v) else v

    def _per_predictor(self, promql: str) -> dict[str, float]:
        return {s["metric"].get("predictor_name", ""): float(s["value"][1]) for s in self.query(promql)}

    def _stats(
        self, ns: str, deployment: str, predictors: Sequence[str], seconds: float
    ) -> dict[str, PredictorStats]:
        sel = f'{ns},deployment_name={_string(deployment)},predictor_name=~"{_names(predictors)}"'
        rsel = f'{sel},{names.SERVICE}=~"{_PREDICTIONS}"'  # prediction requests only: never feedback
        w = _range(seconds)
        requests = self._per_predictor(f"sum by (predictor_name) (increase({REQUESTS}_count{{{rsel}}}[{w}]))")
        errors = self._per_predictor(
            f'sum by (predictor_name) (increase({REQUESTS}_count{{{rsel},code=~"5.."}}[{w}]))'
        )
        buckets: dict[str, list[tuple[float, float]]] = {}
        for s in self.query(f"sum by (predictor_name, le) (increase({REQUESTS}_bucket{{{rsel}}}[{w}]))"):
            buckets.setdefault(s["metric"].get("predictor_name", ""), []).append(
                (float(s["metric"]["le"]), float(s["value"][1]))
            )
        feedback = self._per_predictor(f"sum by (predictor_name) (increase({FEEDBACK}{{{sel}}}[{w}]))")
        reward = self._per_predictor(f"sum by (predictor_name) (increase({REWARD}{{{sel}}}[{w}]))")
        psel = f'{ns},predictor_name=~"{_names(predictors)}"'
        comparisons = self._per_predictor(f"sum by (predictor_name) (increase({COMPARISONS}{{{psel}}}[{w}]))")
        disagreements = self._per_predictor(
            f"sum by (predictor_name) (increase({DISAGREEMENTS}{{{psel}}}[{w}]))"
        )
        return {
            p: PredictorStats(
                requests=requests.get(p, 0.0),
                errors=errors.get(p, 0.0),
                buckets=tuple(sorted(buckets.get(p, []))),
                feedback=feedback.get(p, 0.0),
                reward=reward.get(p, 0.0),
                comparisons=comparisons.get(p, 0.0),
                disagreements=disagreements.get(p, 0.0),
            )
            for p in predictors
        }

    def observe(
        self,
        deployment: str,
        predictors: Sequence[str],
        window: float,
        custom: Mapping[str, str] | None = None,
        since: float | None = None,
        namespace: str | None = None,
    ) -> Observations:
        ns = _namespace(namespace)
        values: dict[str, dict[str, float]] = {}
        for gate, template in (custom or {}).items():
            if "{namespace}" not in template:
                raise MetricsError(
                    f'gate {gate}: its query does not select namespace="{{namespace}}", so it could read '
                    f"another environment's series; add the selector to the query in the policy"
                )
            for p in predictors:
                q = template.format(
                    predictor=p,
                    deployment=deployment,
                    window=_range(since if since is not None else window),  # the time in the stage
                    stable=predictors[0],
                    namespace=_string(namespace or "")[1:-1],  # inside the template's own quotes
                )
                v = self.value(q)
                if v is not None:
                    values.setdefault(gate, {})[p] = v
        return Observations(
            window=window,
            predictors=self._stats(ns, deployment, predictors, window),
            custom=values,
            stage=self._stats(ns, deployment, predictors, since) if since is not None else None,
            source=f"prometheus {self.url}",
        )
