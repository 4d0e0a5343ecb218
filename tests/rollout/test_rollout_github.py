"""The GitHub SCM against GitHub's REST contract (github_double.py, built from documented response shapes):
pull requests as proposals, only its own acted on, every page of the listing read, merges conditional on the
base the decision was made on, orphan branches swept."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from github_double import BOT, REPO, REPO_ID, TOKEN, GitHubDouble

from rollout.decision import Action
from rollout.observations import Observations, PredictorStats
from rollout.policy import parse_policy
from rollout.reconciler import Environment, RolloutError, abort, approve, start, tick
from rollout.scm import Conflict, SCMError, manifest_path
from rollout.scm.github import SWEEP_GRACE, GitHub
from rollout.targets.seldon import SeldonDeploymentV1, initial_manifest

ENV = "prod"
MANIFEST = manifest_path(ENV)
STABLE_DIGEST = "sha256:" + "a" * 64
CAND_DIGEST = "sha256:" + "b" * 64
STABLE, CAND = "m-aaaaaaaaaaaa", "m-bbbbbbbbbbbb"


class StaticMetrics:
    """Observations set by the test (the GitHub contract is what is under test here)."""

    def __init__(self) -> None:
        self.stats: dict[str, PredictorStats] = {}

    def observe(self, deployment, predictors, window, custom=None, since=None, namespace=None):  # type: ignore[no-untyped-def]
        return Observations(window, {p: self.stats.get(p, PredictorStats()) for p in predictors})


@pytest.fixture
def double() -> GitHubDouble:
    return GitHubDouble({MANIFEST: initial_manifest(ENV, "models:/m/1", STABLE_DIGEST), "README.md": "hi\n"})


def scm(double: GitHubDouble, **kw: Any) -> GitHub:
    return GitHub(REPO, token=TOKEN, client=double.client(), **kw)


def environment(double: GitHubDouble, **policy: Any) -> tuple[Environment, StaticMetrics]:
    metrics = StaticMetrics()
    pol = {
        "strategy": "canary",
        "stages": [{"weight": 20, "bake": 0}, {"weight": 60, "bake": 0, "approval": True}],
        "gates": [{"name": "success", "metric": "success_rate", "min": 0.99, "min_sample": 10}],
        **policy,
    }
    env = Environment(ENV, scm(double), SeldonDeploymentV1(), parse_policy(pol), metrics)
    return env, metrics


def weights(double: GitHubDouble) -> dict[str, int]:
    return SeldonDeploymentV1().state(double.main_text(MANIFEST)).weights()


def healthy(metrics: StaticMetrics) -> None:
    # enough clean requests that the success gate's interval clears its bound (2000 of 2000: above 0.998)
    metrics.stats = {STABLE: PredictorStats(requests=2000), CAND: PredictorStats(requests=2000)}


def calls(double: GitHubDouble) -> list[tuple[str, str]]:
    return [(m, r) for m, r, _ in double.requests]


def hostile_manifest(double: GitHubDouble) -> str:
    """The manifest with the candidate at 100 %: what an attacker would like Argo CD to apply."""
    text = double.main_text(MANIFEST)
    return text.replace("traffic: 80", "traffic: 0").replace("traffic: 20", "traffic: 100") + "# pwned\n"


def test_read_decodes_base64_contents(double: GitHubDouble) -> None:
    snap = scm(double).read(ENV)
    assert snap.revision == double.refs["main"] and f"name: {STABLE}" in snap.text


def test_steps_become_pull_requests_merged_by_fast_forward(double: GitHubDouble) -> None:
    env, metrics = environment(double)
    start(env, "models:/m/2", "models:/m/2", CAND_DIGEST)
    assert weights(double) == {STABLE: 80, CAND: 20}
    first = double.pulls[1]
    assert first["merged"] and first["head"]["ref"].startswith("sluice/prod/auto/")
    assert first["user"]["login"] == BOT
    c = calls(double)
    i = c.index(("POST", "/git/refs"))
    assert c[i : i + 2] == [("POST", "/git/refs"), ("GET", f"/contents/{MANIFEST}")]
    # main moves to the pull request's own head commit, only as a fast-forward
    patch = next(b for m, r, b in double.requests if (m, r) == ("PATCH", "/git/refs/heads/main"))
    assert patch == {"sha": first["head"]["sha"], "force": False}
    assert double.refs["main"] == first["head"]["sha"]
    # the commit on main says what it does and on which base, as trailers
    message = double.commits[first["head"]["sha"]][2]
    assert (
        "Sluice-Action: advance" in message
        and f"Sluice-Base: {double.commits[first['head']['sha']][0][0]}" in message
    )

    healthy(metrics)
    res = tick(env)
    assert res.decision.action == Action.AWAIT_APPROVAL
    pr = double.pulls[2]
    assert pr["state"] == "open" and not pr["merged"] and "success_rate" in pr["body"]
    assert "Sluice-Action: advance" in pr["body"]
    # the evidence: the gate table in the body, and one trailer per gate before the action
    assert "| success | success_rate (absolute) | 2000 | 1 | [0.998" in pr["body"]
    assert "\n\nSluice-Gate: success; n=2000; estimate=1; interval=[0.998" in pr["body"]
    head_message = double.commits[pr["head"]["sha"]][2]
    assert "Sluice-Gate: success; n=2000;" in head_message.split("\n\n")[-1]
    assert weights(double) == {STABLE: 80, CAND: 20}
    again = tick(env)
    assert "waiting for approval of #2" in again.decision.reason and len(double.pulls) == 2
    approved = approve(env, who="octocat")
    assert approved.decision.action == Action.ADVANCE
    assert weights(double) == {STABLE: 40, CAND: 60} and double.pulls[2]["merged"]
    assert tick(env).decision.action == Action.PROMOTE and weights(double) == {CAND: 100}
    assert sorted(double.refs) == ["main"]  # merged branches deleted


def test_rollback_merges_at_once_and_closes_pending(double: GitHubDouble) -> None:
    env, metrics = environment(double)
    start(env, "models:/m/2", "models:/m/2", CAND_DIGEST)
    healthy(metrics)
    tick(env)  # opens the approval PR #2
    metrics.stats[CAND] = PredictorStats(requests=2000, errors=400)
    res = tick(env)
    assert res.decision.action == Action.ROLLBACK and weights(double) == {STABLE: 100}
    assert double.pulls[2]["state"] == "closed" and not double.pulls[2]["merged"]
    assert double.comments and "Closed by Sluice" in double.comments[0][1]
    assert double.pulls[3]["merged"] and "rollback" in double.pulls[3]["title"]


def test_a_merge_refused_by_branch_protection_is_retried_by_the_next_tick(double: GitHubDouble) -> None:
    env, metrics = environment(double, stages=[{"weight": 20, "bake": 0}, {"weight": 60, "bake": 0}])
    start(env, "models:/m/2", "models:/m/2", CAND_DIGEST)
    healthy(metrics)
    double.protected = True  # required checks still running
    res = tick(env)
    assert res.outcome is not None and not res.outcome.merged and "not mergeable yet" in res.outcome.detail
    assert weights(double) == {STABLE: 80, CAND: 20}
    double.protected = False
    res = tick(env)
    assert any("repaired" in n for n in res.notes) and weights(double) == {STABLE: 40, CAND: 60}
    assert res.decision.action == Action.ADVANCE  # from the proposal's Sluice-Action trailer
    assert len(double.pulls) == 2


def test_main_moved_is_a_conflict(double: GitHubDouble) -> None:
    gh = scm(double)
    snap = gh.read(ENV)
    double.commit_on("main", {MANIFEST: snap.text + "# x\n"}, "someone else")
    with pytest.raises(Conflict, match="moved"):
        gh.propose(ENV, snap.text, "t", "b", snap.revision, "auto", merge=True)
    assert not double.pulls and ("POST", "/git/refs") not in calls(double)


def test_the_merge_is_conditional_on_the_base_the_decision_was_made_on(double: GitHubDouble) -> None:
    """Main moves between the reconciler's last look and its write: the write is refused by GitHub itself,
    so the other change is never silently merged with a step decided on an older main."""
    env, metrics = environment(double, stages=[{"weight": 20, "bake": 0}, {"weight": 60, "bake": 0}])
    start(env, "models:/m/2", "models:/m/2", CAND_DIGEST)
    healthy(metrics)
    other = (
        double.main_text(MANIFEST).replace("traffic: 80", "traffic: 79").replace("traffic: 20", "traffic: 21")
    )
    race: dict[str, str] = {}

    def another_reconciler() -> None:
        if not race:
            race["sha"] = double.commit_on("main", {MANIFEST: other}, "another reconciler's step")

    for write in (("PATCH", "/git/refs/heads/main"), ("PUT", "/pulls/2/merge")):  # whichever the merge uses
        double.before[write] = another_reconciler
    with pytest.raises(Conflict, match="fast forward"):
        tick(env)
    assert double.refs["main"] == race["sha"]  # only the other change is on main
    assert weights(double) == {STABLE: 79, CAND: 21}
    assert not any(pr["merged"] for n, pr in double.pulls.items() if n > 1)


def test_an_approval_merges_after_main_moved_for_other_files(double: GitHubDouble) -> None:
    env, metrics = environment(double)
    start(env, "models:/m/2", "models:/m/2", CAND_DIGEST)
    healthy(metrics)
    assert tick(env).decision.action == Action.AWAIT_APPROVAL
    staging = manifest_path("staging")
    moved = double.commit_on("main", {staging: "# staging's own step\n"}, "rollout(staging): advance")
    approve(env)
    main = double.refs["main"]
    parents = double.commits[main][0]
    assert parents[0] == moved and parents[1] == double.pulls[2]["head"]["sha"]  # a merge commit on main
    assert double.files_at("main")[staging] == "# staging's own step\n"
    assert weights(double) == {STABLE: 40, CAND: 60} and double.pulls[2]["merged"]
    assert "Sluice-Action: advance" in double.commits[main][2]


def test_abort(double: GitHubDouble) -> None:
    env, _ = environment(double)
    start(env, "models:/m/2", "models:/m/2", CAND_DIGEST)
    abort(env)
    assert weights(double) == {STABLE: 100}


def test_bad_repository_name() -> None:
    with pytest.raises(SCMError, match="owner/name"):
        GitHub("not a repo")


def test_a_human_merge_on_github_starts_the_stage_clock(double: GitHubDouble) -> None:
    env, metrics = environment(double)
    clock = [1_900_000_000.0]
    env.clock = lambda: clock[0]
    start(env, "models:/m/2", "models:/m/2", CAND_DIGEST)
    healthy(metrics)
    assert tick(env).decision.action == Action.AWAIT_APPROVAL
    clock[0] += 3600  # the reviewer merges an hour later, in GitHub's UI (no `sluice rollout approve`)
    double.merge_in_ui(2)
    r = SeldonDeploymentV1().state(double.main_text(MANIFEST)).rollout
    assert r is not None and r.approval and r.entered_at < clock[0] - 3000
    res = tick(env)
    assert res.wrote and "starts now" in res.decision.reason and weights(double) == {STABLE: 40, CAND: 60}
    r = SeldonDeploymentV1().state(double.main_text(MANIFEST)).rollout
    assert r is not None and not r.approval and r.entered_at == clock[0]


# only its own pull requests --------------------------------------------------------------------------------
def _mid_rollout(double: GitHubDouble) -> tuple[Environment, StaticMetrics]:
    env, metrics = environment(double, stages=[{"weight": 20, "bake": 0}, {"weight": 60, "bake": 0}])
    start(env, "models:/m/2", "models:/m/2", CAND_DIGEST)
    healthy(metrics)
    return env, metrics


HOSTILE = {
    "a fork": {"user": "mallory", "head_repo": "mallory/gitops"},
    "another author": {"user": "mallory"},
    "a fork by the bot's name": {"user": BOT, "head_repo": "mallory/gitops"},
}


@pytest.mark.parametrize("who", list(HOSTILE), ids=list(HOSTILE))
def test_a_pull_request_it_did_not_open_is_never_merged(
    double: GitHubDouble, who: str, caplog: pytest.LogCaptureFixture
) -> None:
    env, _ = _mid_rollout(double)
    before = double.refs["main"]
    number = double.open_pull(
        f"sluice/{ENV}/auto/20990101-000000-abcdef0-advance",
        f"rollout({ENV}): advance {CAND} [canary 60%]",
        {MANIFEST: hostile_manifest(double)},
        message=f"rollout({ENV}): advance\n\nSluice-Action: advance\nSluice-Base: {before}",
        **HOSTILE[who],
    )
    res = tick(env)
    assert double.pulls[number]["state"] == "open" and not double.pulls[number]["merged"]
    assert "# pwned" not in double.main_text(MANIFEST)
    assert not any("repaired" in n for n in res.notes)
    assert res.decision.action == Action.ADVANCE and weights(double) == {STABLE: 40, CAND: 60}  # its own step
    assert not double.comments  # someone else's pull request is not ours to close either
    ignored = [r.getMessage() for r in caplog.records if "ignoring pull request" in r.getMessage()]
    assert len(ignored) == 1 and f"#{number}" in ignored[0]  # said once, with why
    tick(env)
    assert len([r for r in caplog.records if "ignoring pull request" in r.getMessage()]) == 1


@pytest.mark.parametrize(
    "extra",
    [
        {".github/workflows/deploy.yml": "on: push\n"},
        {"gitops/cluster/rbac.yaml": "kind: ClusterRoleBinding\n"},
        {manifest_path("staging"): "kind: SeldonDeployment\n"},
    ],
    ids=["a workflow", "rbac", "another environment"],
)
def test_its_own_pull_request_is_not_merged_when_it_changes_other_files(
    double: GitHubDouble, extra: dict[str, str]
) -> None:
    env, _ = _mid_rollout(double)
    base = double.refs["main"]
    number = double.open_pull(
        f"sluice/{ENV}/auto/20990101-000000-abcdef0-advance",
        f"rollout({ENV}): advance {CAND} [canary 60%]",
        {MANIFEST: hostile_manifest(double), **extra},
        user=BOT,  # e.g. the bot's token used by hand, or a push onto its branch
        message=f"rollout({ENV}): advance\n\nSluice-Action: advance\nSluice-Base: {base}",
    )
    tick(env)
    assert not double.pulls[number]["merged"] and not (set(extra) & set(double.files_at("main")))


def test_a_rename_into_the_manifest_is_not_its_change(double: GitHubDouble) -> None:
    env, _ = _mid_rollout(double)
    base = double.refs["main"]
    number = double.open_pull(
        f"sluice/{ENV}/auto/20990101-000000-abcdef0-advance",
        "rename",
        {MANIFEST: hostile_manifest(double)},
        user=BOT,
        message=f"x\n\nSluice-Action: advance\nSluice-Base: {base}",
    )
    files = double._pull_files(number)
    files[0]["status"], files[0]["previous_filename"] = "renamed", "gitops/cluster/reconciler.yaml"
    double.file_overrides[number] = files
    tick(env)
    assert not double.pulls[number]["merged"]


def test_approve_ignores_an_approval_it_did_not_open(double: GitHubDouble) -> None:
    env, _ = _mid_rollout(double)
    double.open_pull(
        f"sluice/{ENV}/approval/20990101-000000-abcdef0-advance",
        "rollout(prod): advance",
        {MANIFEST: hostile_manifest(double)},
        user="mallory",
        head_repo="mallory/gitops",
    )
    with pytest.raises(RolloutError, match="nothing is waiting for approval"):
        approve(env)
    assert "# pwned" not in double.main_text(MANIFEST)


def test_an_installation_token_needs_its_identity_named(double: GitHubDouble) -> None:
    double.login = None  # GET /user: 403 "Resource not accessible by integration"
    env, _ = environment(double)
    with pytest.raises(SCMError, match="--github-author"):
        start(env, "models:/m/2", "models:/m/2", CAND_DIGEST)
    named, metrics = environment(double)
    named.scm = scm(double, author=double.app_login)
    start(named, "models:/m/2", "models:/m/2", CAND_DIGEST)
    healthy(metrics)
    assert tick(named).decision.action == Action.AWAIT_APPROVAL
    assert (
        tick(named).decision.action == Action.AWAIT_APPROVAL and len(double.pulls) == 2
    )  # found, no duplicate


def test_a_wrong_author_is_caught_at_the_first_proposal(double: GitHubDouble) -> None:
    double.login = None
    env, _ = environment(double)
    env.scm = scm(double, author="github-actions[bot]")  # but the token is an App's
    with pytest.raises(SCMError, match=r"--github-author sluice-app\[bot\]"):
        start(env, "models:/m/2", "models:/m/2", CAND_DIGEST)
    assert double.pulls[1]["state"] == "closed" and "sluice/" not in " ".join(double.refs)


# every page --------------------------------------------------------------------------------------------------
def test_its_proposal_is_found_behind_more_than_a_hundred_open_pull_requests(double: GitHubDouble) -> None:
    env, metrics = environment(double)
    start(env, "models:/m/2", "models:/m/2", CAND_DIGEST)
    healthy(metrics)
    assert tick(env).decision.action == Action.AWAIT_APPROVAL  # PR #2 waits for a human...
    for i in range(150):  # ...while dependency bumps and feature branches pile up on top of it
        double.open_pull(f"feature/{i}", f"feature {i}", {f"docs/{i}.md": "x\n"}, user="dependabot[bot]")
    again = tick(env)
    assert "waiting for approval of #2" in again.decision.reason
    assert len(double.pulls) == 152  # no duplicate proposal
    listing = [r for m, r, _ in double.requests if m == "GET" and r == "/pulls"]
    assert len(listing) >= 2  # page 2 fetched through the Link header (which names /repositories/{id})
    approve(env)
    assert weights(double) == {STABLE: 40, CAND: 60}


def test_the_link_header_is_followed_only_on_the_api_host() -> None:
    seen: list[str] = []

    def evil(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(
            200, json=[], headers={"link": '<https://evil.example/steal?page=2>; rel="next"'}
        )

    gh = GitHub(REPO, token=TOKEN, client=httpx.Client(transport=httpx.MockTransport(evil)))
    assert list(gh._paged("/pulls")) == [] and len(seen) == 1 and "evil" not in seen[0]


# orphan branches ---------------------------------------------------------------------------------------------
def test_orphan_branches_are_swept(double: GitHubDouble) -> None:
    env, _ = environment(double)
    base = double.refs["main"]
    now = time.time()
    old = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now - 2 * SWEEP_GRACE))
    young = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now - 5))
    double.refs[f"sluice/{ENV}/auto/{old}-abcdef0-crash"] = base  # created, then the process died
    double.refs[f"sluice/{ENV}/auto/{young}-abcdef0-being-written"] = base
    double.refs["sluice/staging/auto/" + old + "-abcdef0-other-env"] = base
    double.refs["feature/x"] = base
    kept = double.open_pull(
        f"sluice/{ENV}/approval/{old}-abcdef0-open", "t", {"README.md": "x\n"}, user="mallory"
    )
    res = tick(env)  # no rollout in progress: the sweep still runs
    assert f"sluice/{ENV}/auto/{old}-abcdef0-crash" not in double.refs
    assert any("a crash left" in n for n in res.notes)
    assert f"sluice/{ENV}/auto/{young}-abcdef0-being-written" in double.refs  # maybe a proposal being written
    assert "sluice/staging/auto/" + old + "-abcdef0-other-env" in double.refs and "feature/x" in double.refs
    assert double.pulls[kept]["head"]["ref"] in double.refs  # an open pull request keeps its branch
    routes = [r for m, r, _ in double.requests if m == "GET" and r.startswith("/git/matching-refs/")]
    assert routes == [f"/git/matching-refs/heads/sluice/{ENV}"]
    tick(env)  # swept at most every few minutes
    assert [r for m, r, _ in double.requests if r.startswith("/git/matching-refs/")] == routes
    assert REPO_ID  # the double pages through /repositories/{id}/..., as GitHub does
