"""The GitHub SCM: each promotion step is a pull request whose body carries the gate report.

REST API (2022-11-28): read main with `GET /git/ref/heads/main` and `GET /contents/{path}?ref=`, propose with
`POST /git/refs` (a branch from the decision's base), `PUT /contents/{path}` (the new manifest on it) and
`POST /pulls`; merge with `PUT /pulls/{n}/merge` passing the head `sha` (refused if the branch moved).
Automatic steps and rollbacks are merged by the reconciler at once (a merge GitHub refuses, e.g. while
required checks run, is retried by the next tick); steps that need approval stay open for a human.
There is no lock across machines: the check that main still points at the decision's base commit, made just
before writing and again before merging, is what keeps two reconcilers from both acting.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

from rollout.evidence import parse_trailers, render_trailers, with_trailers
from rollout.scm import Conflict, Kind, Outcome, Proposal, SCMError, Snapshot, branch_prefix, manifest_path

API = "https://api.github.com"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "step"


class GitHub:
    def __init__(
        self,
        repository: str,
        token: str | None = None,
        base: str = "main",
        api: str = API,
        client: httpx.Client | None = None,
    ):
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", repository):
            raise SCMError(f"--github: expected owner/name, got {repository!r}")
        self.repository = repository
        self.base = base
        token = token or os.environ.get("GITHUB_TOKEN")
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.client = client or httpx.Client(timeout=15.0)
        self.client.headers.update(headers)
        self.root = f"{api.rstrip('/')}/repos/{repository}"

    def _call(self, method: str, path: str, ok: tuple[int, ...] = (200, 201), **kw: Any) -> httpx.Response:
        try:
            r = self.client.request(method, f"{self.root}{path}", **kw)
        except httpx.HTTPError as e:
            raise SCMError(f"GitHub {method} {path}: {e}") from e
        if r.status_code not in ok:
            try:
                message = r.json().get("message", r.text)
            except ValueError:
                message = r.text
            err = Conflict if r.status_code in (409, 422) else SCMError
            raise err(f"GitHub {method} {path}: HTTP {r.status_code}: {message}")
        return r

    def _head(self) -> str:
        return str(self._call("GET", f"/git/ref/heads/{quote(self.base)}").json()["object"]["sha"])

    def _file(self, env: str, ref: str) -> tuple[str, str]:
        """(text, blob sha) of the environment's manifest at `ref`."""
        body = self._call("GET", f"/contents/{manifest_path(env)}", params={"ref": ref}).json()
        if body.get("encoding") != "base64":
            raise SCMError(f"GitHub: {manifest_path(env)} came back as {body.get('encoding')!r}, not base64")
        return base64.b64decode(body["content"]).decode(), str(body["sha"])

    def _put(self, env: str, branch: str, text: str, blob: str, message: str) -> str:
        body = {
            "message": message,
            "content": base64.b64encode(text.encode()).decode(),
            "sha": blob,
            "branch": branch,
        }
        return str(self._call("PUT", f"/contents/{manifest_path(env)}", json=body).json()["commit"]["sha"])

    # SCM protocol ----------------------------------------------------------------------------------
    def read(self, env: str) -> Snapshot:
        head = self._head()
        return Snapshot(env, self._file(env, head)[0], head)

    def pending(self, env: str) -> list[Proposal]:
        pulls = self._call(
            "GET", "/pulls", params={"state": "open", "base": self.base, "per_page": 100, "sort": "created"}
        ).json()
        out = []
        for pr in pulls:
            ref = pr["head"]["ref"]
            if not ref.startswith(branch_prefix(env)):
                continue
            kind: Kind = "approval" if ref.startswith(f"{branch_prefix(env)}approval/") else "auto"
            out.append(
                Proposal(env, f"#{pr['number']}", ref, kind, pr["title"], pr["base"]["sha"], pr["html_url"])
            )
        return out

    def read_proposal(self, proposal: Proposal) -> str:
        return self._file(proposal.env, proposal.branch)[0]

    def propose(
        self, env: str, text: str, title: str, body: str, base: str, kind: Kind, merge: bool
    ) -> Outcome:
        head = self._head()
        if head != base:
            raise Conflict(
                f"{self.base} moved from {base[:12]} to {head[:12]} since the decision; not writing"
            )
        stamp = (
            time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + hashlib.sha1(text.encode()).hexdigest()[:7]
        )
        branch = f"{branch_prefix(env)}{kind}/{stamp}-{_slug(title.split(':', 1)[-1])}"
        self._call("POST", "/git/refs", json={"ref": f"refs/heads/{branch}", "sha": base})
        _, blob = self._file(env, base)
        self._put(env, branch, text, blob, with_trailers(title, parse_trailers(body)))
        pr = self._call(
            "POST", "/pulls", json={"title": title, "head": branch, "base": self.base, "body": body}
        ).json()
        proposal = Proposal(env, f"#{pr['number']}", branch, kind, title, base, pr["html_url"])
        if not merge:
            return Outcome(proposal, merged=False, detail=f"pull request {pr['html_url']} waits for approval")
        return self.merge(proposal)

    def update_proposal(self, proposal: Proposal, text: str, message: str) -> Proposal:
        _, blob = self._file(proposal.env, proposal.branch)
        self._put(proposal.env, proposal.branch, text, blob, message)
        return proposal

    def merge(self, proposal: Proposal) -> Outcome:
        head = self._head()
        if (
            head != proposal.base
            and self._file(proposal.env, head)[1] != self._file(proposal.env, proposal.base)[1]
        ):
            raise Conflict(
                f"{manifest_path(proposal.env)} changed on {self.base} since {proposal.name} was opened"
            )
        number = proposal.name.lstrip("#")
        pr = self._call("GET", f"/pulls/{number}").json()
        r = self._call(
            "PUT",
            f"/pulls/{number}/merge",
            ok=(200, 405),
            json={
                "commit_title": f"{proposal.title} ({proposal.name})",
                # the merge commit on main carries the evidence trailers of the pull request's body
                "commit_message": render_trailers(parse_trailers(pr.get("body") or "")),
                "sha": pr["head"]["sha"],
                "merge_method": "merge",
            },
        )
        body = r.json()
        if r.status_code == 405:
            return Outcome(
                proposal, merged=False, detail=f"{proposal.url}: not mergeable yet ({body.get('message')})"
            )
        with contextlib.suppress(SCMError):  # a repository may delete merged branches itself
            self._call("DELETE", f"/git/refs/heads/{proposal.branch}", ok=(204, 422))
        return Outcome(proposal, merged=True, revision=body.get("sha"), detail=f"merged {proposal.url}")

    def discard(self, proposal: Proposal, reason: str) -> None:
        number = proposal.name.lstrip("#")
        self._call("POST", f"/issues/{number}/comments", json={"body": f"Closed by Sluice: {reason}"})
        self._call("PATCH", f"/pulls/{number}", json={"state": "closed"})
        with contextlib.suppress(SCMError):
            self._call("DELETE", f"/git/refs/heads/{proposal.branch}", ok=(204, 422))

    @contextlib.contextmanager
    def lock(self, env: str) -> Iterator[None]:
        yield  # see the module docstring: optimistic checks on main's commit instead
