"""Submit a WorkflowTemplate through the Argo Server API (`POST /api/v1/workflows/{namespace}/submit`).

The request body is hera's `WorkflowSubmitRequest` model (resourceKind, resourceName, submitOptions), the
shape `argo submit --from workflowtemplate/NAME` sends. The token (ARGO_TOKEN) is sent as a bearer token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


class SubmitError(RuntimeError):
    """The Argo Server is not configured, cannot be reached, or refused the submission."""


@dataclass(frozen=True)
class Submitted:
    name: str
    namespace: str
    url: str


def submit_request(
    namespace: str, template: str, parameters: dict[str, str], labels: dict[str, str]
) -> dict[str, Any]:
    from hera.workflows.models import SubmitOpts, WorkflowSubmitRequest

    request = WorkflowSubmitRequest(
        namespace=namespace,
        resource_kind="WorkflowTemplate",
        resource_name=template,
        submit_options=SubmitOpts(
            parameters=[f"{k}={v}" for k, v in parameters.items()] or None,
            labels=",".join(f"{k}={v}" for k, v in labels.items()) or None,
        ),
    )
    return request.model_dump(mode="json", by_alias=True, exclude_none=True)


def authorization(token: str | None) -> dict[str, str]:
    if not token:
        return {}
    # `argo auth token` prints "Bearer ..."; accept the bare token too.
    return {"Authorization": token if token.lower().startswith("bearer ") else f"Bearer {token}"}


def submit(
    server: str,
    namespace: str,
    template: str,
    parameters: dict[str, str] | None = None,
    *,
    token: str | None = None,
    labels: dict[str, str] | None = None,
    verify: bool | str = True,
    timeout: float = 30.0,
) -> Submitted:
    """Submit `template` with `parameters`; returns the created workflow's name and its UI address."""
    base = server.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise SubmitError(f"ARGO_SERVER must be an http(s) URL, got {server!r}")
    body = submit_request(
        namespace, template, parameters or {}, labels or {"app.kubernetes.io/part-of": "sluice"}
    )
    url = f"{base}/api/v1/workflows/{namespace}/submit"
    try:
        response = httpx.post(url, json=body, headers=authorization(token), verify=verify, timeout=timeout)
    except httpx.HTTPError as e:
        raise SubmitError(f"cannot reach the Argo Server at {base}: {e}") from e
    if response.status_code >= 400:
        try:
            detail = response.json().get("message", response.text)
        except ValueError:
            detail = response.text
        raise SubmitError(f"Argo Server refused {template} ({response.status_code}): {detail.strip()[:300]}")
    try:
        meta = response.json()["metadata"]
        name = meta["name"]
    except (ValueError, KeyError, TypeError) as e:
        raise SubmitError(f"unexpected answer from the Argo Server: {response.text[:200]}") from e
    return Submitted(
        name=name, namespace=meta.get("namespace", namespace), url=f"{base}/workflows/{namespace}/{name}"
    )


@dataclass(frozen=True)
class Finished:
    """A workflow that stopped: its phase, message and workflow-level outputs (globalName parameters)."""

    name: str
    phase: str
    message: str
    outputs: dict[str, str]

    @property
    def succeeded(self) -> bool:
        return self.phase == "Succeeded"


DONE_PHASES = frozenset({"Succeeded", "Failed", "Error"})


# Answers worth waiting out: the server or a proxy in front of it is briefly unavailable or throttling.
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


def wait(
    server: str,
    namespace: str,
    name: str,
    *,
    token: str | None = None,
    verify: bool | str = True,
    timeout: float = 3 * 3600,
    poll: float = 10.0,
    clock: Any = None,
    sleep: Any = None,
    backoff: float = 2.0,
    max_backoff: float = 120.0,
) -> Finished:
    """Poll `GET /api/v1/workflows/{namespace}/{name}` until the workflow stops or `timeout` passes.

    A network error or a transient answer (429, 5xx) is retried with exponential back-off (`backoff`,
    doubling up to `max_backoff`, never past the deadline), as `argo wait` and kubectl's watches do: one
    dropped connection must not end a three-hour wait. An answer that will not change (401, 403, 404) fails
    at once.
    """
    import time

    now = clock or time.monotonic
    pause = sleep or time.sleep
    deadline = now() + timeout
    url = f"{server.rstrip('/')}/api/v1/workflows/{namespace}/{name}"
    failures = 0
    last_problem = ""
    phase = "Pending"
    with httpx.Client(headers=authorization(token), verify=verify, timeout=30.0) as client:
        while True:
            problem = ""
            try:
                response = client.get(url)
            except httpx.HTTPError as e:
                problem = f"cannot reach the Argo Server ({type(e).__name__}: {e})"
            else:
                if response.status_code in TRANSIENT_STATUS:
                    problem = f"Argo Server answered {response.status_code}: {response.text[:200]}"
                elif response.status_code >= 400:
                    raise SubmitError(
                        f"Argo Server answered {response.status_code} for {name}: {response.text[:200]}"
                    )
                else:
                    try:
                        status = (response.json() or {}).get("status") or {}
                    except ValueError:
                        status, problem = (
                            {},
                            f"Argo Server sent something that is not JSON: {response.text[:200]}",
                        )
                    if not problem:
                        phase = status.get("phase") or "Pending"
                        if phase in DONE_PHASES:
                            parameters = (status.get("outputs") or {}).get("parameters") or []
                            return Finished(
                                name=name,
                                phase=phase,
                                message=status.get("message", ""),
                                outputs={p["name"]: str(p.get("value", "")) for p in parameters},
                            )
            if problem:
                failures += 1
                last_problem = problem
                delay = min(max_backoff, backoff * 2 ** (failures - 1))
            else:
                failures = 0
                delay = poll
            left = deadline - now()
            if left <= 0:
                if last_problem and failures:
                    raise SubmitError(
                        f"gave up waiting for {name} after {timeout:.0f}s: {failures} attempts in a row failed, "
                        f"the last: {last_problem}"
                    )
                raise SubmitError(f"{name} is still {phase} after {timeout:.0f}s")
            pause(min(delay, left))
