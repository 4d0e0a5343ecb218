"""The GitHub adapter's needs: the token opens the repository the manifests name, the repository's default
branch is the one the reconciler merges into, and the token may open pull requests and write refs (the
reconciler merges a proposal by fast-forwarding the branch: a ref write).

Nothing is created: write access is probed with requests GitHub refuses on their content (422: a pull request
from a branch that does not exist, a ref to a commit that does not exist) once the token's permissions allow
them, and refuses with 403 (or 404 on a private repository) before reading the content when they do not."""

from __future__ import annotations

from collections.abc import Iterator

import httpx

from doctor.report import Finding, missing, ok, warn

AREA = "github"
API = "https://api.github.com"
PROBE_BRANCH = "sluice-doctor/probe-never-created"
HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}


def _message(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:200]
    return str(body.get("message", body)) if isinstance(body, dict) else str(body)[:200]


def check(
    repository: str, token: str | None, branch: str, client: httpx.Client | None = None, api: str = API
) -> Iterator[Finding]:
    if not token:
        yield missing(
            AREA,
            "token",
            "no GitHub token (GITHUB_TOKEN is empty)",
            "export GITHUB_TOKEN=<a token with Contents and Pull requests: read and write>",
        )
        return
    http = client or httpx.Client(timeout=15.0)
    http.headers.update({**HEADERS, "Authorization": f"Bearer {token}"})
    root = f"{api.rstrip('/')}/repos/{repository}"
    try:
        r = http.get(root)
    except httpx.HTTPError as exc:
        yield missing(AREA, "repository", f"GET {root}: {exc}", "check the network (and HTTPS_PROXY)", root)
        return
    if r.status_code == 401:
        yield missing(AREA, "token", f"GitHub refused the token: {_message(r)}", "create a new token", root)
        return
    if r.status_code == 404:
        yield missing(
            AREA,
            "repository",
            f"{repository} is not visible to this token (404)",
            "create the repository, or give the token access to it",
            root,
        )
        return
    if r.status_code != 200:
        yield missing(AREA, "repository", f"HTTP {r.status_code}: {_message(r)}", "retry later", root)
        return
    repo = r.json()
    yield ok(AREA, "repository", str(repo.get("full_name", repository)), root)
    default = repo.get("default_branch")
    if default != branch:
        yield missing(
            AREA,
            "default branch",
            f"GitHub's default branch is {default!r}, the manifests follow {branch!r}",
            f"make {branch!r} the default branch (Settings > Branches), or follow {default!r}",
            root,
        )
    else:
        yield ok(AREA, "default branch", str(default), root)
    permissions = repo.get("permissions")
    if isinstance(permissions, dict) and not permissions.get("push"):
        yield missing(
            AREA,
            "write access",
            "the token's identity cannot push to the repository (permissions.push is false)",
            "add the token's user or App to the repository with write access",
            root,
        )
    yield from _probe_pull_request(http, root, branch)
    yield from _probe_ref_write(http, root)
    yield from _branch_protection(http, root, branch)


def _probe(http: httpx.Client, url: str, body: dict[str, str], check: str, fix: str) -> Iterator[Finding]:
    """POST a request GitHub refuses for its content (422) when the token may make it, and for the token
    (401/403, or 404 on a private repository) when it may not."""
    r = http.post(url, json=body)
    if r.status_code == 201:  # only if someone created the probe's branch: undo what the probe made
        if url.endswith("/pulls"):
            http.patch(f"{url}/{r.json().get('number')}", json={"state": "closed"})
        else:
            http.delete(f"{url}/heads/{PROBE_BRANCH}")
        yield ok(AREA, check, "allowed", url)
    elif r.status_code == 422:
        yield ok(
            AREA, check, "allowed (the probe was refused only for what it names, which does not exist)", url
        )
    elif r.status_code in (401, 403, 404):
        yield missing(AREA, check, f"HTTP {r.status_code}: {_message(r)}", fix, url)
    else:
        yield missing(AREA, check, f"HTTP {r.status_code}: {_message(r)}", "retry later", url)


def _probe_pull_request(http: httpx.Client, root: str, branch: str) -> Iterator[Finding]:
    body = {"title": "sluice doctor (never opened)", "head": PROBE_BRANCH, "base": branch}
    fix = "give the token Pull requests: read and write (classic token: the repo scope)"
    yield from _probe(http, f"{root}/pulls", body, "open pull requests", fix)


def _probe_ref_write(http: httpx.Client, root: str) -> Iterator[Finding]:
    body = {"ref": f"refs/heads/{PROBE_BRANCH}", "sha": "0" * 40}
    fix = "give the token Contents: read and write (classic token: the repo scope)"
    yield from _probe(http, f"{root}/git/refs", body, "merge (write refs)", fix)


def _branch_protection(http: httpx.Client, root: str, branch: str) -> Iterator[Finding]:
    url = f"{root}/branches/{branch}"
    r = http.get(url)
    if r.status_code != 200:
        yield missing(
            AREA, f"branch {branch}", f"HTTP {r.status_code}: {_message(r)}", f"push {branch} to GitHub", url
        )
        return
    if r.json().get("protected"):
        yield warn(
            AREA,
            f"branch {branch}",
            "protected: the reconciler's merges wait until the rule's checks pass (a rule requiring reviews "
            "refuses them)",
            "let the reconciler's identity bypass review requirements, or keep only status checks on it",
            url,
        )
    else:
        yield ok(AREA, f"branch {branch}", "not protected: the reconciler can fast-forward it", url)
