"""A test double of GitHub's REST API (2022-11-28) for the GitHub SCM: an in-memory repository answering in
the documented response shapes (github_shapes/), checking each request's method, path, headers and required
fields. It behaves as GitHub does where Sluice depends on it: `PATCH` of a ref without `force` only
fast-forwards, a pull request whose head lands on its base is marked merged, deleting its branch closes it,
and list endpoints paginate with a `Link` header whose `next` URL names the repository by id."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

SHAPES = Path(__file__).resolve().parent / "github_shapes"
REPO = "acme/gitops"
REPO_ID = 1296269
TOKEN = "t0ken"
BOT = "sluice-bot"


def shape(name: str) -> Any:
    return copy.deepcopy(json.loads((SHAPES / f"{name}.json").read_text()))


def sha(*parts: object) -> str:
    return hashlib.sha1("\0".join(map(str, parts)).encode()).hexdigest()


def blob_sha(text: str) -> str:
    return sha("blob", text)


def _user(login: str) -> dict[str, Any]:
    user = shape("pull")["user"]
    user.update(
        login=login, url=f"https://api.github.com/users/{login}", html_url=f"https://github.com/{login}"
    )
    user["type"] = "Bot" if login.endswith("[bot]") else "User"
    return user


def _repo(full_name: str, repo_id: int) -> dict[str, Any]:
    repo = shape("pull")["head"]["repo"]
    owner, name = full_name.split("/")
    repo.update(
        id=repo_id,
        name=name,
        full_name=full_name,
        owner=_user(owner),
        html_url=f"https://github.com/{full_name}",
        url=f"https://api.github.com/repos/{full_name}",
        fork=full_name != REPO,
    )
    return repo


class GitHubDouble:
    """An in-memory repository behind GitHub's REST routes."""

    def __init__(self, files: dict[str, str], login: str | None = BOT, app_login: str = "sluice-app[bot]"):
        self.login = login  # the token's identity; None: an installation token (GET /user answers 403)
        self.app_login = app_login  # who the pull requests of an installation token are opened by
        self.commits: dict[str, tuple[list[str], dict[str, str], str]] = {}
        root = self._commit([], dict(files), "init")
        self.refs: dict[str, str] = {"main": root}
        self.pulls: dict[int, dict[str, Any]] = {}
        self.file_overrides: dict[int, list[dict[str, Any]]] = {}  # what GET /pulls/{n}/files lists, if set
        self.comments: list[tuple[int, str]] = []
        self.requests: list[tuple[str, str, Any]] = []
        self.protected = False  # main refuses ref updates (required checks pending)
        self.before: dict[tuple[str, str], Callable[[], None]] = {}  # (method, route) -> run once first
        self._made_trees: dict[str, dict[str, str]] = {}

    # the repository ---------------------------------------------------------------------------------
    def _commit(self, parents: list[str], files: dict[str, str], message: str) -> str:
        c = sha(len(self.commits), *parents, message, *sorted(files.items()))
        self.commits[c] = (parents, files, message)
        return c

    def commit_on(self, branch: str, changes: dict[str, str], message: str) -> str:
        """Someone pushes a commit to `branch` (main: another reconciler, a human)."""
        parent = self.refs[branch]
        self.refs[branch] = self._commit([parent], {**self.commits[parent][1], **changes}, message)
        self._mark_merged()
        return self.refs[branch]

    def ancestors(self, commit: str) -> set[str]:
        seen, todo = set(), [commit]
        while todo:
            c = todo.pop()
            if c not in seen:
                seen.add(c)
                todo.extend(self.commits[c][0])
        return seen

    def files_at(self, ref: str) -> dict[str, str]:
        return self.commits[self.refs.get(ref, ref)][1]

    def main_text(self, path: str) -> str:
        return self.files_at("main")[path]

    def open_pull(
        self,
        head: str,
        title: str,
        changes: dict[str, str],
        user: str,
        head_repo: str = REPO,
        body: str = "",
        message: str | None = None,
    ) -> int:
        """A pull request someone else opens (a fork's, a colleague's): a branch from main with `changes`."""
        base = self.refs["main"]
        commit = self._commit([base], {**self.commits[base][1], **changes}, message or title)
        if head_repo == REPO:
            self.refs[head] = commit
        return self._new_pull(head, commit, title, body, user, head_repo)

    def _new_pull(self, head: str, commit: str, title: str, body: str, user: str, head_repo: str) -> int:
        number = len(self.pulls) + 1
        pr = shape("pull")
        pr.update(
            number=number,
            id=number,
            title=title,
            body=body,
            state="open",
            merged=False,
            user=_user(user),
            url=f"https://api.github.com/repos/{REPO}/pulls/{number}",
            html_url=f"https://github.com/{REPO}/pull/{number}",
        )
        owner = head_repo.split("/")[0]
        pr["head"].update(
            label=f"{owner}:{head}",
            ref=head,
            sha=commit,
            user=_user(owner),
            repo=_repo(head_repo, REPO_ID + 1 if head_repo != REPO else REPO_ID),
        )
        pr["base"].update(
            label=f"{REPO.split('/')[0]}:main", ref="main", sha=self.refs["main"], repo=_repo(REPO, REPO_ID)
        )
        self.pulls[number] = pr
        return number

    def _mark_merged(self) -> None:
        """As GitHub does: an open pull request follows its branch, and one whose head commit is on its base
        branch is merged (and closed)."""
        for pr in self.pulls.values():
            ref = pr["head"]["ref"]
            if pr["state"] == "open" and pr["head"]["repo"]["full_name"] == REPO and ref in self.refs:
                pr["head"]["sha"] = self.refs[ref]
        on_main = self.ancestors(self.refs["main"])
        for pr in self.pulls.values():
            if pr["state"] == "open" and pr["head"]["sha"] in on_main:
                pr.update(state="closed", merged=True)

    # HTTP -------------------------------------------------------------------------------------------
    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle))

    def _page(self, request: httpx.Request, route: str, items: list[Any]) -> httpx.Response:
        params = dict(request.url.params)
        per_page = min(100, int(params.get("per_page", 30)))
        page = int(params.get("page", 1))
        chunk = items[(page - 1) * per_page : page * per_page]
        last = max(1, -(-len(items) // per_page))
        headers = {}
        if page < last:

            def link(n: int) -> str:
                query = urlencode({**params, "page": n})
                return f"https://api.github.com/repositories/{REPO_ID}{route}?{query}"

            headers["link"] = f'<{link(page + 1)}>; rel="next", <{link(last)}>; rel="last"'
        return httpx.Response(200, json=chunk, headers=headers)

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["accept"] == "application/vnd.github+json"
        assert request.headers["x-github-api-version"] == "2022-11-28"
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert request.url.host == "api.github.com", request.url
        path = request.url.path
        body = json.loads(request.content) if request.content else None
        m = request.method
        if path == "/user":
            self.requests.append((m, path, body))
            if self.login is None:
                return httpx.Response(403, json=shape("user_403_integration"))
            user = shape("user")
            user.update(login=self.login)
            return httpx.Response(200, json=user)
        prefix = next(p for p in (f"/repos/{REPO}", f"/repositories/{REPO_ID}") if path.startswith(p))
        route = path[len(prefix) :]
        self.requests.append((m, route, body))
        hook = self.before.pop((m, route), None)
        if hook is not None:
            hook()
        return self._route(request, m, route, body)

    def _route(self, request: httpx.Request, m: str, route: str, body: Any) -> httpx.Response:
        if m == "GET" and (g := re.fullmatch(r"/git/ref/heads/(.+)", route)):
            if g[1] not in self.refs:
                return httpx.Response(404, json={"message": "Not Found"})
            return httpx.Response(200, json=self._ref(g[1]))
        if m == "GET" and (g := re.fullmatch(r"/git/matching-refs/(.+)", route)):
            matching = [self._ref(b) for b in sorted(self.refs) if f"heads/{b}".startswith(g[1])]
            return self._page(request, route, matching)
        if m == "POST" and route == "/git/refs":
            assert set(body) >= {"ref", "sha"} and body["ref"].startswith("refs/heads/")
            name = body["ref"].removeprefix("refs/heads/")
            if name in self.refs:
                return httpx.Response(422, json=shape("ref_exists_422"))
            assert body["sha"] in self.commits
            self.refs[name] = body["sha"]
            out = shape("create_ref")
            out["ref"], out["object"]["sha"] = body["ref"], body["sha"]
            return httpx.Response(201, json=out)
        if m == "PATCH" and (g := re.fullmatch(r"/git/refs/heads/(.+)", route)):
            assert set(body) >= {"sha"} and body["sha"] in self.commits, body
            name = g[1]
            if not body.get("force") and self.refs[name] not in self.ancestors(body["sha"]):
                return httpx.Response(422, json=shape("not_fast_forward_422"))
            if name == "main" and self.protected:
                return httpx.Response(422, json=shape("protected_422"))
            self.refs[name] = body["sha"]
            self._mark_merged()
            return httpx.Response(200, json=self._ref(name))
        if m == "DELETE" and (g := re.fullmatch(r"/git/refs/heads/(.+)", route)):
            if self.refs.pop(g[1], None) is None:
                return httpx.Response(422, json={"message": "Reference does not exist"})
            for pr in self.pulls.values():  # a pull request whose branch is deleted is closed
                if (
                    pr["state"] == "open"
                    and pr["head"]["ref"] == g[1]
                    and pr["head"]["repo"]["full_name"] == REPO
                ):
                    pr["state"] = "closed"
            return httpx.Response(204)
        if (g := re.fullmatch(r"/contents/(.+)", route)) and m in ("GET", "PUT"):
            return self._contents(request, m, g[1], body)
        if m == "GET" and (g := re.fullmatch(r"/git/commits/([0-9a-f]{40})", route)):
            if g[1] not in self.commits:
                return httpx.Response(404, json={"message": "Not Found"})
            return httpx.Response(200, json=self._git_commit(g[1]))
        if m == "POST" and route == "/git/trees":
            assert "tree" in body and all({"path", "mode", "type"} <= set(e) for e in body["tree"]), body
            files = dict(self._trees[body["base_tree"]]) if body.get("base_tree") else {}
            for entry in body["tree"]:
                assert entry["mode"] == "100644" and entry["type"] == "blob"
                files[entry["path"]] = self._blobs[entry["sha"]]
            tree = self._tree(files)
            out = shape("git_tree")
            out.update(sha=tree, truncated=False)
            out["tree"] = [
                dict(out["tree"][0], path=p, sha=blob_sha(t), size=len(t)) for p, t in files.items()
            ]
            return httpx.Response(201, json=out)
        if m == "POST" and route == "/git/commits":
            assert set(body) >= {"message", "tree"} and all(
                p in self.commits for p in body.get("parents", [])
            )
            c = self._commit(list(body.get("parents", [])), dict(self._trees[body["tree"]]), body["message"])
            return httpx.Response(201, json=self._git_commit(c))
        if m == "POST" and route == "/pulls":
            assert set(body) >= {"title", "head", "base"}
            assert body["head"] in self.refs and body["base"] in self.refs
            user = self.login or self.app_login
            number = self._new_pull(
                body["head"], self.refs[body["head"]], body["title"], body.get("body") or "", user, REPO
            )
            return httpx.Response(201, json=self.pulls[number])
        if m == "GET" and route == "/pulls":
            params = request.url.params
            state, base = params.get("state", "open"), params.get("base")
            found = [
                p
                for p in self.pulls.values()
                if p["state"] == state and (base is None or p["base"]["ref"] == base)
            ]
            if (
                params.get("direction", "desc" if params.get("sort", "created") == "created" else "asc")
                == "desc"
            ):
                found = found[::-1]
            return self._page(request, route, found)
        if m == "GET" and (g := re.fullmatch(r"/pulls/(\d+)/files", route)):
            return self._page(request, route, self._pull_files(int(g[1])))
        if (g := re.fullmatch(r"/pulls/(\d+)", route)) and m in ("GET", "PATCH"):
            pr = self.pulls[int(g[1])]
            assert m == "GET" or set(body) <= {"title", "body", "state", "base", "maintainer_can_modify"}
            if m == "PATCH":
                pr.update(body)
            return httpx.Response(200, json=pr)
        if m == "PUT" and (g := re.fullmatch(r"/pulls/(\d+)/merge", route)):
            return self._ui_merge(int(g[1]), body or {})
        if m == "POST" and (g := re.fullmatch(r"/issues/(\d+)/comments", route)):
            assert "body" in body
            self.comments.append((int(g[1]), body["body"]))
            return httpx.Response(201, json=shape("comment"))
        raise AssertionError(f"unexpected request {m} {route}")

    @property
    def _blobs(self) -> dict[str, str]:
        return {blob_sha(t): t for _, files, _ in self.commits.values() for t in files.values()}

    @property
    def _trees(self) -> dict[str, dict[str, str]]:
        trees = {self._tree(files): files for _, files, _ in self.commits.values()}
        trees.update(self._made_trees)
        return trees

    def _tree(self, files: dict[str, str]) -> str:
        t = sha("tree", *sorted(files.items()))
        self._made_trees[t] = dict(files)
        return t

    def _ref(self, name: str) -> dict[str, Any]:
        out = shape("get_ref")
        out["ref"] = f"refs/heads/{name}"
        out["url"] = f"https://api.github.com/repos/{REPO}/git/refs/heads/{name}"
        out["object"]["sha"] = self.refs[name]
        return out

    def _git_commit(self, c: str) -> dict[str, Any]:
        parents, files, message = self.commits[c]
        out = shape("git_commit")
        out.update(sha=c, message=message)
        out["tree"]["sha"] = self._tree(files)
        out["parents"] = [dict(out["parents"][0], sha=p) for p in parents]
        return out

    def _contents(self, request: httpx.Request, m: str, file: str, body: Any) -> httpx.Response:
        if m == "GET":
            ref = request.url.params["ref"]
            forks = {
                p["head"]["ref"]: p["head"]["sha"]
                for p in self.pulls.values()
                if p["head"]["repo"]["full_name"] != REPO
            }
            commit = self.refs.get(ref, ref if ref in self.commits else forks.get(ref))
            if commit is None or file not in self.commits[commit][1]:
                return httpx.Response(404, json={"message": "Not Found"})
            text = self.commits[commit][1][file]
            raw = base64.b64encode(text.encode()).decode()
            out = shape("get_contents")
            out.update(
                name=file.rsplit("/", 1)[-1],
                path=file,
                size=len(text),
                sha=blob_sha(text),
                content="\n".join(raw[i : i + 60] for i in range(0, len(raw), 60)) + "\n",
            )
            return httpx.Response(200, json=out)
        assert set(body) >= {"message", "content", "branch"}, body
        branch = body["branch"]
        _parents, files, _ = self.commits[self.refs[branch]]
        if file in files and body.get("sha") != blob_sha(files[file]):
            return httpx.Response(409, json={"message": f"{file} does not match {body.get('sha')}"})
        text = base64.b64decode(body["content"], validate=True).decode()
        c = self._commit([self.refs[branch]], {**files, file: text}, body["message"])
        self.refs[branch] = c
        self._mark_merged()
        out = shape("update_contents")
        out["content"].update(path=file, sha=blob_sha(text))
        out["commit"].update(sha=c, message=body["message"])
        return httpx.Response(200, json=out)

    def _pull_files(self, number: int) -> list[dict[str, Any]]:
        if number in self.file_overrides:
            return self.file_overrides[number]
        pr = self.pulls[number]
        head = pr["head"]["sha"]
        base_line = self.ancestors(self.refs["main"])
        fork = next(c for c in self._first_parents(head) if c in base_line)
        before, after = self.commits[fork][1], self.commits[head][1]
        out = []
        for path in sorted(set(before) | set(after)):
            if before.get(path) == after.get(path):
                continue
            status = "added" if path not in before else "removed" if path not in after else "modified"
            entry = shape("pull_files")[0]
            entry.update(filename=path, status=status, sha=blob_sha(after.get(path, "")))
            out.append(entry)
        return out

    def _first_parents(self, commit: str) -> list[str]:
        line = [commit]
        while self.commits[line[-1]][0]:
            line.append(self.commits[line[-1]][0][0])
        return line

    def _ui_merge(self, number: int, body: dict[str, Any]) -> httpx.Response:
        """A human pressing the merge button."""
        pr = self.pulls[number]
        same = pr["head"]["repo"]["full_name"] == REPO
        head = self.refs[pr["head"]["ref"]] if same else pr["head"]["sha"]  # a fork's: refs/pull/{n}/head
        if body.get("sha") and body["sha"] != head:
            return httpx.Response(409, json=shape("merge_409"))
        files = {**self.commits[self.refs["main"]][1], **self.commits[head][1]}
        c = self._commit([self.refs["main"], head], files, body.get("commit_title", "merge"))
        self.refs["main"] = c
        self._mark_merged()
        out = shape("merge")
        out["sha"] = c
        return httpx.Response(200, json=out)

    def merge_in_ui(self, number: int) -> None:
        request = httpx.Request(
            "PUT",
            f"https://api.github.com/repos/{REPO}/pulls/{number}/merge",
            json={"merge_method": "merge"},
            headers={
                "accept": "application/vnd.github+json",
                "x-github-api-version": "2022-11-28",
                "authorization": f"Bearer {TOKEN}",
            },
        )
        assert self.handle(request).status_code == 200
