"""The services a project reads at run time: the MLflow registry (the registered model, and its `champion`
alias that batch scoring and promotion read) and Prometheus (the predictor series every gate queries, per
environment namespace). Both are spoken to over their REST APIs with a short timeout, so a down server is a
finding in seconds, not a retry loop."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx

from deployment import metric_names as mn
from doctor.report import Finding, missing, ok, warn

TIMEOUT = 5.0


def _mlflow_headers() -> dict[str, str]:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def mlflow(uri: str, model: str, client: httpx.Client | None = None) -> Iterator[Finding]:
    area = "mlflow"
    if uri.startswith("sqlite:///"):
        yield from _mlflow_local(uri, model)
        return
    if not uri.startswith(("http://", "https://")):
        yield missing(
            area,
            "tracking URI",
            f"{uri!r} is neither http(s):// nor sqlite:///",
            "set MLFLOW_TRACKING_URI",
            uri,
        )
        return
    http = client or httpx.Client(timeout=TIMEOUT)
    base = uri.rstrip("/")
    try:
        health = http.get(f"{base}/health", headers=_mlflow_headers())
    except httpx.HTTPError as exc:
        yield missing(
            area, "reachable", f"{base}: {exc.__class__.__name__}: {exc}", "start the MLflow server", base
        )
        return
    if health.status_code != 200:
        yield missing(
            area, "reachable", f"{base}/health answered HTTP {health.status_code}", "check the server", base
        )
        return
    yield ok(area, "reachable", base, base)
    url = f"{base}/api/2.0/mlflow/registered-models/get"
    r = http.get(url, params={"name": model}, headers=_mlflow_headers())
    if r.status_code in (401, 403):
        yield missing(
            area, "registered model", f"HTTP {r.status_code}: not allowed", "set MLFLOW_TRACKING_TOKEN", url
        )
        return
    if r.status_code == 404 or (r.status_code == 400 and "RESOURCE_DOES_NOT_EXIST" in r.text):
        yield missing(
            area,
            "registered model",
            f"no registered model {model!r}",
            "train and register it: dvc repro (or `make demo`), or the train workflow",
            url,
        )
        return
    if r.status_code != 200:
        yield missing(
            area, "registered model", f"HTTP {r.status_code}: {r.text[:200]}", "check the server", url
        )
        return
    body = r.json().get("registered_model", {})
    versions = body.get("latest_versions") or []
    aliases = {a.get("alias"): a.get("version") for a in body.get("aliases") or []}
    yield from _model_findings(area, model, len(versions), aliases, url)


def _mlflow_local(uri: str, model: str) -> Iterator[Finding]:
    area = "mlflow"
    path = Path(uri.removeprefix("sqlite:///"))
    if not path.is_file():
        yield missing(
            area, "reachable", f"{path} does not exist yet", "train once: dvc repro (or `make demo`)", uri
        )
        return
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    yield ok(area, "reachable", uri, uri)
    try:
        registered = client.get_registered_model(model)
    except MlflowException as exc:
        yield missing(
            area,
            "registered model",
            f"no registered model {model!r} ({exc.error_code})",
            "train and register it: dvc repro (or `make demo`)",
            uri,
        )
        return
    versions = client.search_model_versions(f"name='{model}'", max_results=1)
    yield from _model_findings(area, model, len(versions), dict(registered.aliases), uri)


def _model_findings(
    area: str, model: str, versions: int, aliases: dict[str, object], where: str
) -> Iterator[Finding]:
    if versions == 0:
        yield missing(
            area, "registered model", f"{model!r} has no versions", "train and register a version", where
        )
        return
    yield ok(area, "registered model", model, where)
    if "champion" in aliases:
        yield ok(area, "champion alias", f"{model}@champion is version {aliases['champion']}", where)
    else:
        yield warn(
            area,
            "champion alias",
            f"{model} has no champion alias (batch scoring reads models:/{model}@champion)",
            "sluice model champion --pin (or promote a version)",
            where,
        )


def prometheus(
    url: str, deployment: str, namespaces: list[str], client: httpx.Client | None = None
) -> Iterator[Finding]:
    area = "prometheus"
    http = client or httpx.Client(timeout=TIMEOUT)
    base = url.rstrip("/")
    try:
        ready = http.get(f"{base}/-/ready")
    except httpx.HTTPError as exc:
        yield missing(area, "reachable", f"{base}: {exc.__class__.__name__}: {exc}", "start Prometheus", base)
        return
    if ready.status_code != 200:
        yield missing(
            area, "reachable", f"{base}/-/ready answered HTTP {ready.status_code}", "wait for it", base
        )
        return
    yield ok(area, "reachable", base, base)
    series = f"{mn.SERVER_REQUESTS}_count"
    query = f'count by ({mn.NAMESPACE}) ({series}{{{mn.DEPLOYMENT}="{deployment}"}})'
    r = http.get(f"{base}/api/v1/query", params={"query": query})
    if r.status_code != 200 or r.json().get("status") != "success":
        yield missing(
            area, "query", f"{query}: HTTP {r.status_code}: {r.text[:200]}", "check Prometheus", base
        )
        return
    present = {
        str(item.get("metric", {}).get(mn.NAMESPACE, "")): item.get("value", [0, "0"])[1]
        for item in r.json().get("data", {}).get("result", [])
    }
    for namespace in namespaces:
        if namespace in present:
            yield ok(
                area, f"predictor series in {namespace}", f"{present[namespace]} series of {series}", base
            )
        else:
            yield missing(
                area,
                f"predictor series in {namespace}",
                f'no {series}{{{mn.DEPLOYMENT}="{deployment}",{mn.NAMESPACE}="{namespace}"}}',
                "send traffic through the router; check that its PodMonitor is selected by Prometheus "
                "(label release) and the environment is synced",
                base,
            )
