"""The GitHub SCM against GitHub's REST contract: a test double built from documented response shapes
(github_shapes/), which also checks each request's method, path, headers and required fields."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from rollout.decision import Action
from rollout.observations import Observations, PredictorStats
from rollout.policy import parse_policy
from rollout.reconciler import Environment, abort, approve, start, tick
from rollout.scm import Conflict, manifest_path
from rollout.scm.github import GitHub
from rollout.targets.seldon import SeldonDeploymentV1, initial_manifest

SHAPES = Path(__file__).resolve().parent / "github_shapes"
REPO = "acme/gitops"
ENV = "prod"
STABLE_DIGEST = "sha256:" + "a" * 64
CAND_DIGEST = "sha256:" + "b" * 64
STABLE, CAND = "m-aaaaaaaaaaaa", "m-bbbbbbbbbbbb"


def shape(name: str) -> Any:
    return copy.deepcopy(json.loads((SHAPES / f"{name}.json").read_text()))


def sha(*parts: object) -> str:
    return hashlib.sha1("\0".join(map(str, parts)).encode()).hexdigest()


class GitHubDouble:
    """An in-memory repository behind GitHub's REST routes, answering in the documented shapes."""

    def __init__(self, files: dict[str, str]):
        root = sha("root")
        self.commits: dict[str, tuple[list[str], dict[str, str], str]] = {root: ([], dict(files), "init")}
        self.refs: dict[str, str] = {"main": root}
        self.pulls: dict[int, dict[str, Any]] = {}
        self.comments: list[tuple[int, str]] = []
        self.requests: list[tuple[str, str, Any]] = []
        self.refuse_merges = False
        self.n = 0

    def _resolve(self, ref: str) -> str | None:
        return self.refs.get(ref) or (ref if ref in self.commits else None)

    def _commit(self, parents: list[str], files: dict[str, str], message: str) -> str:
        self.n += 1
        c = sha(self.n, *parents, message)
        self.commits[c] = (parents, files, message)
        return c

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["accept"] == "application/vnd.github+json"
        assert request.headers["x-github-api-version"] == "2022-11-28"
        assert request.headers["authorization"] == "Bearer t0ken"
        prefix = f"/repos/{REPO}"
        path = request.url.path
        assert path.startswith(prefix), path
        route = path[len(prefix) :]
        body = json.loads(request.content) if request.content else None
        self.requests.append((request.method, route, body))
        m = request.method

        if m == "GET" and (g := re.fullmatch(r"/git/ref/heads/(.+)", route)):
            if g[1] not in self.refs:
                return httpx.Response(404, json={"message": "Not Found"})
            out = shape("get_ref")
            out["ref"] = f"refs/heads/{g[1]}"
            out["object"]["sha"] = self.refs[g[1]]
            return httpx.Response(200, json=out)
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
        if m == "DELETE" and (g := re.fullmatch(r"/git/refs/heads/(.+)", route)):
            if self.refs.pop(g[1], None) is None:
                return httpx.Response(422, json={"message": "Reference does not exist"})
            return httpx.Response(204)
        if (g := re.fullmatch(r"/contents/(.+)", route)) and m in ("GET", "PUT"):
            file = g[1]
            if m == "GET":
                commit = self._resolve(request.url.params["ref"])
                if commit is None or file not in self.commits[commit][1]:
                    return httpx.Response(404, json={"message": "Not Found"})
                text = self.commits[commit][1][file]
                raw = base64.b64encode(text.encode()).decode()
                out = shape("get_contents")
                out.update(
                    name=file.rsplit("/", 1)[-1],
                    path=file,
                    size=len(text),
                    sha=sha("blob", text),
                    content="\n".join(raw[i : i + 60] for i in range(0, len(raw), 60)) + "\n",
                )
                return httpx.Response(200, json=out)
            assert set(body) >= {"message", "content", "branch"}, body
            branch = body["branch"]
            _parents, files, _ = self.commits[self.refs[branch]]
            if file in files and body.get("sha") != sha("blob", files[file]):
                return httpx.Response(409, json={"message": f"{file} does not match {body.get('sha')}"})
            text = base64.b64decode(body["content"], validate=True).decode()
            c = self._commit([self.refs[branch]], {**files, file: text}, body["message"])
            self.refs[branch] = c
            out = shape("update_contents")
            out["content"].update(path=file, sha=sha("blob", text))
            out["commit"].update(sha=c, message=body["message"])
            return httpx.Response(200, json=out)
        if m == "POST" and route == "/pulls":
            assert set(body) >= {"title", "head", "base"}
            assert body["head"] in self.refs and body["base"] in self.refs
            number = len(self.pulls) + 1
            pr = shape("pull")
            pr.update(
                number=number,
                title=body["title"],
                body=body.get("body"),
                state="open",
                merged=False,
                html_url=f"https://github.com/{REPO}/pull/{number}",
            )
            pr["head"].update(ref=body["head"], sha=self.refs[body["head"]])
            pr["base"].update(ref=body["base"], sha=self.refs[body["base"]])
            self.pulls[number] = pr
            return httpx.Response(201, json=pr)
        if m == "GET" and route == "/pulls":
            state, base = request.url.params["state"], request.url.params["base"]
            return httpx.Response(
                200, json=[p for p in self.pulls.values() if p["state"] == state and p["base"]["ref"] == base]
            )
        if (g := re.fullmatch(r"/pulls/(\d+)", route)) and m in ("GET", "PATCH"):
            pr = self.pulls[int(g[1])]
            pr["head"]["sha"] = self.refs.get(pr["head"]["ref"], pr["head"]["sha"])
            if m == "PATCH":
                pr.update(body)
            return httpx.Response(200, json=pr)
        if m == "PUT" and (g := re.fullmatch(r"/pulls/(\d+)/merge", route)):
            pr = self.pulls[int(g[1])]
            head = self.refs[pr["head"]["ref"]]
            if self.refuse_merges:
                return httpx.Response(405, json=shape("merge_405"))
            if body.get("sha") and body["sha"] != head:
                return httpx.Response(409, json=shape("merge_409"))
            base_files = dict(self.commits[self.refs["main"]][1])
            base_files.update(self.commits[head][1])
            c = self._commit([self.refs["main"], head], base_files, body.get("commit_title", "merge"))
            self.refs["main"] = c
            pr.update(state="closed", merged=True)
            out = shape("merge")
            out["sha"] = c
            return httpx.Response(200, json=out)
        if m == "POST" and (g := re.fullmatch(r"/issues/(\d+)/comments", route)):
            assert "body" in body
            self.comments.append((int(g[1]), body["body"]))
            return httpx.Response(201, json=shape("comment"))
        raise AssertionError(f"unexpected request {m} {route}")

    def main_text(self) -> str:
        return self.commits[self.refs["main"]][1][manifest_path(ENV)]


class StaticMetrics:
    """Observations set by the test (the GitHub contract is what is under test here)."""

    def __init__(self) -> None:
        self.stats: dict[str, PredictorStats] = {}

    def observe(self, deployment, predictors, window, custom=None, since=None):  # type: ignore[no-untyped-def]
        return Observations(window, {p: self.stats.get(p, PredictorStats()) for p in predictors})


@pytest.fixture
def double() -> GitHubDouble:
    return GitHubDouble({manifest_path(ENV): initial_manifest(ENV, "models:/m/1", STABLE_DIGEST)})


def scm(double: GitHubDouble) -> GitHub:
    return GitHub(REPO, token="t0ken", client=httpx.Client(transport=httpx.MockTransport(double.handle)))


def environment(double: GitHubDouble, **policy: Any) -> tuple[Environment, StaticMetrics]:
    metrics = StaticMetrics()
    pol = {
        "strategy": "canary",
        "stages": [{"weight": 20, "bake": 0}, {"weight": 60, "bake": 0, "approval": True}],
        "gates": [{"name": "success", "metric": "success_rate", "min": 0.99, "min_sample": 10}],
        **policy,
    }
    return Environment(ENV, scm(double), SeldonDeploymentV1(), parse_policy(pol), metrics), metrics


def weights(double: GitHubDouble) -> dict[str, int]:
    return SeldonDeploymentV1().state(double.main_text()).weights()


def test_read_decodes_base64_contents(double: GitHubDouble) -> None:
    snap = scm(double).read(ENV)
    assert snap.revision == double.refs["main"] and f"name: {STABLE}" in snap.text


def test_steps_become_pull_requests(double: GitHubDouble) -> None:
    env, metrics = environment(double)
    start(env, "models:/m/2", "models:/m/2", CAND_DIGEST)
    assert weights(double) == {STABLE: 80, CAND: 20}
    first = double.pulls[1]
    assert first["merged"] and first["head"]["ref"].startswith("sluice/prod/auto/")
    calls = [(m, r) for m, r, _ in double.requests]
    i = calls.index(("POST", "/git/refs"))
    assert calls[i : i + 2] == [("POST", "/git/refs"), ("GET", f"/contents/{manifest_path(ENV)}")]
    assert ("PUT", f"/contents/{manifest_path(ENV)}") in calls and ("PUT", "/pulls/1/merge") in calls
    merge_body = next(b for m, r, b in double.requests if r == "/pulls/1/merge")
    assert merge_body["sha"] == first["head"]["sha"] and merge_body["merge_method"] == "merge"
    assert merge_body["commit_message"] == ""  # a start has no gate evidence yet

    metrics.stats = {STABLE: PredictorStats(requests=2000), CAND: PredictorStats(requests=2000)}
    res = tick(env)
    assert res.decision.action == Action.AWAIT_APPROVAL
    pr = double.pulls[2]
    assert pr["state"] == "open" and not pr["merged"]
    assert "| success | success_rate (absolute) | 2000 | 1 | [0.998" in pr["body"]
    assert (
        "\n\nSluice-Gate: success; n=2000; estimate=1; interval=[0.998" in pr["body"]
    )  # trailers close the body
    assert weights(double) == {STABLE: 80, CAND: 20}
    again = tick(env)
    assert "waiting for approval of #2" in again.decision.reason and len(double.pulls) == 2
    approve(env, who="octocat")
    assert weights(double) == {STABLE: 40, CAND: 60} and double.pulls[2]["merged"]
    # the evidence is in the branch's commit and in the merge commit on main, as trailers
    branch_commit = next(
        b
        for m, r, b in double.requests
        if m == "PUT" and r.startswith("/contents/") and "advance" in b["message"]
    )
    assert branch_commit["message"].split("\n\n")[-1].startswith("Sluice-Gate: success; n=2000")
    merge_body = next(b for m, r, b in double.requests if r == "/pulls/2/merge")
    assert merge_body["commit_message"].startswith("Sluice-Gate: success; n=2000;")
    assert tick(env).decision.action == Action.PROMOTE and weights(double) == {CAND: 100}
    assert sorted(double.refs) == ["main"]  # merged branches deleted


def test_rollback_merges_at_once_and_closes_pending(double: GitHubDouble) -> None:
    env, metrics = environment(double)
    start(env, "models:/m/2", "models:/m/2", CAND_DIGEST)
    metrics.stats = {STABLE: PredictorStats(requests=2000), CAND: PredictorStats(requests=2000)}
    tick(env)  # opens the approval PR #2
    metrics.stats[CAND] = PredictorStats(requests=2000, errors=400)
    res = tick(env)
    assert res.decision.action == Action.ROLLBACK and weights(double) == {STABLE: 100}
    assert double.pulls[2]["state"] == "closed" and not double.pulls[2]["merged"]
    assert double.comments and "Closed by Sluice" in double.comments[0][1]
    assert double.pulls[3]["merged"] and "rollback" in double.pulls[3]["title"]


def test_refused_merge_is_retried_by_the_next_tick(double: GitHubDouble) -> None:
    env, metrics = environment(double, stages=[{"weight": 20, "bake": 0}, {"weight": 60, "bake": 0}])
    start(env, "models:/m/2", "models:/m/2", CAND_DIGEST)
    metrics.stats = {STABLE: PredictorStats(requests=2000), CAND: PredictorStats(requests=2000)}
    double.refuse_merges = True  # e.g. required checks still running
    res = tick(env)
    assert res.outcome is not None and not res.outcome.merged and "not mergeable" in res.outcome.detail
    assert weights(double) == {STABLE: 80, CAND: 20}
    double.refuse_merges = False
    res = tick(env)
    assert any("repaired" in n for n in res.notes) and weights(double) == {STABLE: 40, CAND: 60}
    assert len(double.pulls) == 2


def test_main_moved_is_a_conflict(double: GitHubDouble) -> None:
    gh = scm(double)
    snap = gh.read(ENV)
    double.refs["main"] = double._commit(
        [snap.revision], {manifest_path(ENV): snap.text + "# x\n"}, "someone else"
    )
    with pytest.raises(Conflict, match="moved"):
        gh.propose(ENV, snap.text, "t", "b", snap.revision, "auto", merge=True)
    assert not double.pulls and ("POST", "/git/refs") not in [(m, r) for m, r, _ in double.requests]


def test_abort(double: GitHubDouble) -> None:
    env, _ = environment(double)
    start(env, "models:/m/2", "models:/m/2", CAND_DIGEST)
    abort(env)
    assert weights(double) == {STABLE: 100}


def test_bad_repository_name() -> None:
    with pytest.raises(Exception, match="owner/name"):
        GitHub("not a repo")


def test_a_human_merge_on_github_starts_the_stage_clock(double: GitHubDouble) -> None:
    env, metrics = environment(double)
    clock = [1_900_000_000.0]
    env.clock = lambda: clock[0]
    start(env, "models:/m/2", "models:/m/2", CAND_DIGEST)
    metrics.stats = {STABLE: PredictorStats(requests=2000), CAND: PredictorStats(requests=2000)}
    assert tick(env).decision.action == Action.AWAIT_APPROVAL
    clock[0] += 3600  # the reviewer merges an hour later, in GitHub's UI (no `sluice rollout approve`)
    (pending,) = env.scm.pending(ENV)
    env.scm.merge(pending)
    r = SeldonDeploymentV1().state(double.main_text()).rollout
    assert r is not None and r.approval and r.entered_at < clock[0] - 3000
    res = tick(env)
    assert res.wrote and "starts now" in res.decision.reason and weights(double) == {STABLE: 40, CAND: 60}
    r = SeldonDeploymentV1().state(double.main_text()).rollout
    assert r is not None and not r.approval and r.entered_at == clock[0]
