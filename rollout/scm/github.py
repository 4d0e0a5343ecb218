"""The GitHub SCM: each promotion step is a pull request whose body carries the gate report.

It acts only on the pull requests it opened itself. An open pull request to main whose branch is under
`sluice/<env>/` counts as a proposal only if its head is in this very repository (never a fork), it was
opened by the token's own identity, and it changes exactly the files the reconciler writes for `<env>` (its
manifest). Anything else (a fork's pull request named like a proposal, a colleague's edit on such a branch)
is ignored and logged: never merged, never closed.

REST API (2022-11-28):
- read: `GET /git/ref/heads/main`, `GET /contents/{path}?ref=`.
- who am I: `GET /user` (a GitHub App installation token cannot ask; then `--github-author` names its
  `<app>[bot]` login, which is checked against every pull request the reconciler opens).
- list: `GET /pulls?state=open&base=main&per_page=100`, every page (the Link header's `next`); for each
  candidate `GET /pulls/{n}/files` (every page) and `GET /git/commits/{head}` (its trailers: action, base).
- propose: `POST /git/refs` (a branch from the decision's base), `PUT /contents/{path}` (the manifest, its
  commit message carrying the trailers), `POST /pulls`.
- merge: `PATCH /git/refs/heads/main` with `force: false` to the proposal's head commit: a fast-forward,
  which GitHub refuses (422) unless main is still the commit the decision was made on. So the merge is
  conditional on the base, with no window between a check and a write. When main moved for other files
  only (e.g. the other environment's step), a merge commit (main + the proposal's manifest, parents main and
  the proposal) is built with `GET /git/commits`, `POST /git/trees`, `POST /git/commits` and main is
  fast-forwarded to it, again on condition. GitHub marks the pull request merged once its head is on main.
  A refusal other than "not a fast forward" (branch protection: required checks still running) is not a
  merge yet: the next tick retries.
- discard: a comment, `PATCH /pulls/{n}` to closed, and the branch deleted.
- sweep: `GET /git/matching-refs/heads/sluice/<env>`; a branch with no open pull request, older than a
  grace period (a reconciler may be between creating it and opening its pull request), is deleted: what a
  crash between those calls, or between closing and deleting, leaves behind.
There is no lock across machines: the conditional fast-forward is what keeps two reconcilers from both
acting (and one reconciler per environment is the default deployment).
"""

from __future__ import annotations

import base64
import calendar
import contextlib
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import httpx

from rollout import evidence
from rollout.scm import (
    Conflict,
    Kind,
    Outcome,
    Proposal,
    SCMError,
    Snapshot,
    branch_prefix,
    manifest_paths,
    proposal_paths,
)

API = "https://api.github.com"
MAX_PAGES = 50  # 5,000 open pull requests at 100 a page: far beyond any repository this serves
SWEEP_EVERY = 300.0  # seconds between two sweeps of orphan branches
SWEEP_GRACE = 600.0  # a branch younger than this may be a proposal being written right now

log = logging.getLogger(__name__)
_STAMP = re.compile(r"/(\d{8}-\d{6})-")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "step"


def _message(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text
    return str(body.get("message", r.text)) if isinstance(body, dict) else r.text


class GitHub:
    def __init__(
        self,
        repository: str,
        token: str | None = None,
        base: str = "main",
        api: str = API,
        client: httpx.Client | None = None,
        author: str | None = None,
        clock: Callable[[], float] = time.time,
    ):
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", repository):
            raise SCMError(f"--github: expected owner/name, got {repository!r}")
        self.repository = repository
        self.base = base
        self.author = author or os.environ.get("SLUICE_GITHUB_AUTHOR") or None
        self.clock = clock
        token = token or os.environ.get("GITHUB_TOKEN")
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.client = client or httpx.Client(timeout=15.0)
        self.client.headers.update(headers)
        self.api = api.rstrip("/")
        self.root = f"{self.api}/repos/{repository}"
        self._login: str | None = None
        self._verdicts: dict[tuple[int, str], str | None] = {}  # (number, head sha) -> why not ours
        self._swept: dict[str, float] = {}

    # HTTP -------------------------------------------------------------------------------------------
    def _request(self, method: str, url: str, ok: tuple[int, ...], **kw: Any) -> httpx.Response:
        shown = url.removeprefix(self.root).removeprefix(self.api)
        try:
            r = self.client.request(method, url, **kw)
        except httpx.HTTPError as e:
            raise SCMError(f"GitHub {method} {shown}: {e}") from e
        if r.status_code not in ok:
            err = Conflict if r.status_code in (409, 422) else SCMError
            raise err(f"GitHub {method} {shown}: HTTP {r.status_code}: {_message(r)}")
        return r

    def _call(self, method: str, path: str, ok: tuple[int, ...] = (200, 201), **kw: Any) -> httpx.Response:
        return self._request(method, f"{self.root}{path}", ok, **kw)

    def _paged(self, path: str, params: dict[str, Any] | None = None) -> Iterator[Any]:
        """Every item of a list endpoint, page after page, following the Link header's `next` (GitHub's
        `next` may name the repository by id: /repositories/{id}/...). Only this API's URLs are followed."""
        url: str | None = f"{self.root}{path}"
        kw: dict[str, Any] = {"params": {"per_page": 100, **(params or {})}}
        for _ in range(MAX_PAGES):
            if url is None:
                return
            r = self._request("GET", url, (200,), **kw)
            items = r.json()
            if not isinstance(items, list):
                raise SCMError(f"GitHub GET {path}: expected a list, got {type(items).__name__}")
            yield from items
            nxt = r.links.get("next", {}).get("url")
            url = nxt if nxt and nxt.startswith(f"{self.api}/") else None
            kw = {}  # the next URL carries the query
        raise SCMError(f"GitHub GET {path}: more than {MAX_PAGES} pages")

    def _head(self) -> str:
        return str(self._call("GET", f"/git/ref/heads/{quote(self.base)}").json()["object"]["sha"])

    def _file(self, path: str, ref: str) -> tuple[str, str]:
        """(text, blob sha) of a file at `ref`."""
        found = self._maybe_file(path, ref)
        if found is None:
            raise SCMError(f"GitHub GET /contents/{path}: HTTP 404: Not Found")
        return found

    def _maybe_file(self, path: str, ref: str) -> tuple[str, str] | None:
        r = self._call("GET", f"/contents/{path}", ok=(200, 404), params={"ref": ref})
        if r.status_code == 404:
            return None
        body = r.json()
        if not isinstance(body, dict) or body.get("encoding") != "base64":
            raise SCMError(f"GitHub: {path} came back as {body.get('encoding')!r}, not base64")
        return base64.b64decode(body["content"]).decode(), str(body["sha"])

    def _manifest(self, env: str, ref: str) -> tuple[str, str, str]:
        """(path, text, blob sha) of the environment's deployment manifest at `ref`, whichever kind it holds
        (tried in deployment.kinds' order: a SeldonDeployment environment costs no extra call)."""
        for path in manifest_paths(env):
            found = self._maybe_file(path, ref)
            if found is not None:
                return path, *found
        raise SCMError(
            f"GitHub: no {' or '.join(manifest_paths(env))} at {ref[:12]} (run `sluice rollout init`)"
        )

    def _put(self, path: str, branch: str, text: str, blob: str, message: str) -> str:
        body = {
            "message": message,
            "content": base64.b64encode(text.encode()).decode(),
            "sha": blob,
            "branch": branch,
        }
        return str(self._call("PUT", f"/contents/{path}", json=body).json()["commit"]["sha"])

    def _commit(self, sha: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/git/commits/{sha}").json())

    # who we are, and which pull requests are ours ----------------------------------------------------
    def identity(self) -> str:
        """The login the token acts as (its pull requests' author)."""
        if self._login is None:
            r = self._request("GET", f"{self.api}/user", (200, 401, 403))
            if r.status_code == 200:
                self._login = str(r.json()["login"])
            elif r.status_code == 403 and self.author:
                self._login = self.author  # an installation token cannot read /user: its <app>[bot] login
            else:
                raise SCMError(
                    f"GitHub GET /user: HTTP {r.status_code}: {_message(r)}. The reconciler acts only on pull "
                    "requests its own identity opened: with a GitHub App or Actions token, name that identity "
                    "with --github-author (SLUICE_GITHUB_AUTHOR), e.g. github-actions[bot]"
                )
        return self._login

    def _same_repository(self, side: dict[str, Any]) -> bool:
        repo = side.get("repo") or {}
        return str(repo.get("full_name", "")).lower() == self.repository.lower()

    def _not_ours(self, pr: dict[str, Any], env: str) -> str | None:
        """Why an open pull request under our branch prefix is not a proposal of ours (None: it is)."""
        key = (int(pr["number"]), str(pr["head"]["sha"]))
        if key not in self._verdicts:  # judged once per head commit, and said once
            self._verdicts[key] = why = self._judge(pr, env)
            if why is not None:
                log.warning("ignoring pull request #%s (%s): %s", pr["number"], pr.get("html_url", ""), why)
        return self._verdicts[key]

    def _judge(self, pr: dict[str, Any], env: str) -> str | None:
        if not self._same_repository(pr.get("head") or {}):
            where = ((pr.get("head") or {}).get("repo") or {}).get("full_name") or "a deleted repository"
            return f"its branch is in {where}, not {self.repository}"
        if not self._same_repository(pr.get("base") or {}):
            return f"it targets another repository than {self.repository}"
        login = str((pr.get("user") or {}).get("login", ""))
        if login.lower() != self.identity().lower():
            return f"it was opened by {login or 'an unknown user'}, not by {self.identity()}"
        allowed = proposal_paths(env)
        files = 0
        for f in self._paged(f"/pulls/{pr['number']}/files"):
            files += 1
            name, status, previous = f.get("filename"), f.get("status"), f.get("previous_filename")
            if name not in allowed or status != "modified" or previous:
                return f"it changes {previous + ' -> ' if previous else ''}{name} ({status}), not only {sorted(allowed)}"
        if not files:
            return "it changes no file"
        return None

    # SCM protocol ----------------------------------------------------------------------------------
    def read(self, env: str) -> Snapshot:
        head = self._head()
        return Snapshot(env, self._manifest(env, head)[1], head)

    def read_path(self, revision: str, path: str) -> str:
        return self._file(path, revision)[0]

    def _open_pulls(self) -> Iterator[dict[str, Any]]:
        params = {"state": "open", "base": self.base, "sort": "created", "direction": "asc"}
        yield from self._paged("/pulls", params)

    def pending(self, env: str) -> list[Proposal]:
        prefix = branch_prefix(env)
        out = []
        for pr in self._open_pulls():
            ref = str((pr.get("head") or {}).get("ref", ""))
            if not ref.startswith(prefix):
                continue
            if self._not_ours(pr, env) is not None:
                continue
            head = str(pr["head"]["sha"])
            message = str(self._commit(head).get("message", ""))
            kind: Kind = "approval" if ref.startswith(f"{prefix}approval/") else "auto"
            out.append(
                Proposal(
                    env,
                    f"#{pr['number']}",
                    ref,
                    kind,
                    str(pr["title"]),
                    evidence.trailer(message, evidence.BASE) or str(pr["base"]["sha"]),
                    str(pr.get("html_url", "")),
                    evidence.trailer(message, evidence.ACTION),
                    head,
                )
            )
        return out

    def read_proposal(self, proposal: Proposal) -> str:
        return self._manifest(proposal.env, proposal.head or proposal.branch)[1]

    def propose(
        self, env: str, text: str, title: str, body: str, base: str, kind: Kind, merge: bool
    ) -> Outcome:
        me = self.identity()
        head = self._head()
        if head != base:
            raise Conflict(
                f"{self.base} moved from {base[:12]} to {head[:12]} since the decision; not writing"
            )
        stamp = (
            time.strftime("%Y%m%d-%H%M%S", time.gmtime(self.clock()))
            + "-"
            + hashlib.sha1(text.encode()).hexdigest()[:7]
        )
        branch = f"{branch_prefix(env)}{kind}/{stamp}-{_slug(title.split(':', 1)[-1])}"
        self._call("POST", "/git/refs", json={"ref": f"refs/heads/{branch}", "sha": base})
        path, _, blob = self._manifest(env, base)
        commit = self._put(
            path, branch, text, blob, evidence.with_trailers(title, evidence.parse_trailers(body))
        )
        pr = self._call(
            "POST", "/pulls", json={"title": title, "head": branch, "base": self.base, "body": body}
        ).json()
        proposal = Proposal(
            env,
            f"#{pr['number']}",
            branch,
            kind,
            title,
            base,
            pr["html_url"],
            evidence.trailer(body, evidence.ACTION),
            commit,
        )
        author = str((pr.get("user") or {}).get("login", ""))
        if author.lower() != me.lower():
            self.discard(proposal, f"opened as {author}, but this reconciler acts as {me}")
            raise SCMError(
                f"GitHub opened {pr['html_url']} as {author}, but the reconciler takes {me} for its identity: "
                f"it would never recognise its own proposals. Set --github-author {author}"
            )
        if not merge:
            return Outcome(proposal, merged=False, detail=f"pull request {pr['html_url']} waits for approval")
        return self.merge(proposal)

    def update_proposal(self, proposal: Proposal, text: str, message: str) -> Proposal:
        path, _, blob = self._manifest(proposal.env, proposal.head or proposal.branch)
        commit = self._put(path, proposal.branch, text, blob, message)
        return replace(proposal, head=commit)

    def _fast_forward(self, sha: str, proposal: Proposal) -> str | None:
        """Move main to `sha` if that is a fast-forward; None when done, else why GitHub will not yet."""
        r = self._call(
            "PATCH",
            f"/git/refs/heads/{quote(self.base)}",
            ok=(200, 403, 405, 409, 422),
            json={"sha": sha, "force": False},
        )
        if r.status_code == 200:
            return None
        message = _message(r)
        if "fast forward" in message.lower() or "fast-forward" in message.lower():
            raise Conflict(f"{self.base} moved while merging {proposal.name}: {message}")
        return f"HTTP {r.status_code}: {message}"

    def _merge_commit(self, main: str, proposal: Proposal) -> str:
        """A commit on `main` holding the proposal's manifest, with parents main and the proposal."""
        path, _, blob = self._manifest(proposal.env, proposal.head)
        tree = self._commit(main)["tree"]["sha"]
        new_tree = self._call(
            "POST",
            "/git/trees",
            json={"base_tree": tree, "tree": [{"path": path, "mode": "100644", "type": "blob", "sha": blob}]},
        ).json()["sha"]
        trailers = evidence.parse_trailers(str(self._commit(proposal.head).get("message", "")))
        message = evidence.with_trailers(f"Merge {proposal.name}: {proposal.title}", trailers)
        commit = self._call(
            "POST",
            "/git/commits",
            json={"message": message, "tree": new_tree, "parents": [main, proposal.head]},
        ).json()
        return str(commit["sha"])

    def merge(self, proposal: Proposal) -> Outcome:
        if not proposal.head:
            proposal = replace(
                proposal, head=self._call("GET", f"/pulls/{proposal.name.lstrip('#')}").json()["head"]["sha"]
            )
        main = self._head()
        target = proposal.head
        if main != proposal.base:
            path = self._manifest(proposal.env, proposal.head)[0]
            if self._file(path, main)[1] != self._file(path, proposal.base)[1]:
                raise Conflict(f"{path} changed on {self.base} since {proposal.name} was opened")
            target = self._merge_commit(main, proposal)
        refused = self._fast_forward(target, proposal)
        if refused is not None:
            return Outcome(proposal, merged=False, detail=f"{proposal.url}: not mergeable yet ({refused})")
        with contextlib.suppress(SCMError):  # merged: the branch has done its job (this also closes the PR)
            self._call("DELETE", f"/git/refs/heads/{proposal.branch}", ok=(204, 422))
        return Outcome(proposal, merged=True, revision=target, detail=f"merged {proposal.url}")

    def discard(self, proposal: Proposal, reason: str) -> None:
        number = proposal.name.lstrip("#")
        self._call("POST", f"/issues/{number}/comments", json={"body": f"Closed by Sluice: {reason}"})
        self._call("PATCH", f"/pulls/{number}", json={"state": "closed"})
        with contextlib.suppress(SCMError):
            self._call("DELETE", f"/git/refs/heads/{proposal.branch}", ok=(204, 422))

    def commit_with_trailer(self, key: str, value: str) -> str | None:
        """None: GitHub's API has no search of commit messages on a branch worth its rate limit (a refusal then
        names the commit the rollback followed, which the quarantine record keeps)."""
        return None

    def sweep(self, env: str) -> list[str]:
        now = self.clock()
        if now - self._swept.get(env, float("-inf")) < SWEEP_EVERY:
            return []
        self._swept[env] = now
        prefix = branch_prefix(env)
        branches = [
            str(r["ref"]).removeprefix("refs/heads/")
            for r in self._paged(f"/git/matching-refs/heads/{prefix.rstrip('/')}")
        ]
        branches = [b for b in branches if b.startswith(prefix)]
        if not branches:
            return []
        live = {
            str(pr["head"]["ref"]) for pr in self._open_pulls() if self._same_repository(pr.get("head") or {})
        }
        deleted = []
        for branch in branches:
            m = _STAMP.search(branch.removeprefix(prefix))
            if branch in live or m is None:
                continue
            try:
                born = calendar.timegm(time.strptime(m[1], "%Y%m%d-%H%M%S"))
            except ValueError:
                continue  # not a name this reconciler gives: not ours to delete
            if now - born < SWEEP_GRACE:
                continue
            with contextlib.suppress(SCMError):
                self._call("DELETE", f"/git/refs/heads/{branch}", ok=(204, 422))
                deleted.append(branch)
        return deleted

    @contextlib.contextmanager
    def lock(self, env: str) -> Iterator[None]:
        yield  # see the module docstring: a conditional fast-forward of main instead
