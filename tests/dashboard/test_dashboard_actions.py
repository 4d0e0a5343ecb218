"""Approve and abort through a real `sluice ui` server, and every hostile way of asking: actions off by default,
no token, a wrong token, a cross-origin POST with a right token, hostile environment names and commit hashes,
oversized bodies, a foreign Host header, HTML in what Git says. Each refusal leaves Git as it was."""

from __future__ import annotations

import asyncio
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from dashboard_fixtures import (
    CANDIDATE,
    ENV,
    STABLE_NAME,
    TOKEN,
    Served,
    environment,
    git,
    serving,
    source,
    token_file,
    wait_until,
)

from dashboard.board import Board, TokenError, Tokens
from rollout.reconciler import start

ABORT = f"/api/environments/{ENV}/abort"
APPROVE = f"/api/environments/{ENV}/approve"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def main(repo: Path) -> str:
    return git(repo, "rev-parse", "main").strip()


@pytest.fixture
def started(repo: Path) -> Path:
    start(environment(repo), "file:///candidate", "file:///candidate", CANDIDATE)
    return repo


@pytest.fixture
def armed(started: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    with serving(Board([source(started)], Tokens.load(token_file(tmp_path)))) as served:
        yield served


def test_abort_with_a_token_rolls_back_through_git_with_the_identity_in_the_commit(
    armed: Served, started: Path
) -> None:
    r = armed.post(ABORT, headers=BEARER)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["action"] == "rollback" and body["by"] == "alice via sluice ui"
    assert body["commit"] == main(started)
    message = git(started, "log", "-1", "--format=%B", "main^2")
    assert "aborted by alice via sluice ui" in message and "Sluice-Action: rollback" in message
    manifest = git(started, "show", f"main:gitops/environments/{ENV}/seldondeployment.yaml")
    assert "m-222222222222" not in manifest.split("annotations")[-1].split("predictors")[-1]
    # the page follows: the rollout is gone, the last one says who aborted it
    view = wait_until(
        lambda: (v := armed.get(f"/api/environments/{ENV}").json())["rollout"] is None and v, 10, "refresh"
    )
    assert view["last_rollout"]["message"] == "aborted by alice via sluice ui"
    # aborting again: nothing to abort, a 409 that says so
    again = armed.post(ABORT, headers=BEARER)
    assert again.status_code == 409 and "no rollout in progress" in again.json()["detail"]


def test_an_abort_does_not_queue_behind_slow_polls(started: Path, tmp_path: Path) -> None:
    """Every thread of asyncio's default pool is busy (as polls against a Prometheus that does not answer leave
    them): an abort still goes through at once, on the actions' own threads."""
    board = Board([source(started)], Tokens.load(token_file(tmp_path)))

    async def scenario():  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=2))
        release = threading.Event()
        stuck = [loop.run_in_executor(None, release.wait) for _ in range(2)]
        try:
            return await asyncio.wait_for(board.act(ENV, "abort", "alice"), 30)
        finally:
            release.set()
            await asyncio.gather(*stuck)
            await board.stop()

    result = asyncio.run(scenario())
    assert result.action == "rollback" and result.commit == main(started)


def test_approve_merges_the_waiting_step_as_the_cli_does(repo: Path, tmp_path: Path) -> None:
    import yaml

    from rollout.reconciler import tick

    policy = yaml.safe_load((repo / "policies" / f"{ENV}.yaml").read_text())
    policy["stages"][1]["approval"] = True
    policy["gates"] = [{**g, "no_data": "pass"} for g in policy["gates"]]  # no metrics here: pass on no data
    (repo / "policies" / f"{ENV}.yaml").write_text(yaml.safe_dump(policy))
    git(repo, "commit", "-qam", "policy: approve the 50% stage")
    env = environment(repo)
    start(env, "file:///candidate", "file:///candidate", CANDIDATE)
    assert tick(env).decision.action.value == "await-approval"
    with serving(Board([source(repo)], Tokens.load(token_file(tmp_path)))) as served:
        view = wait_until(lambda: served.get(f"/api/environments/{ENV}").json(), 10, "view")
        assert view["actions"] == {"enabled": True, "approve": True, "abort": True}
        assert "approve" in view["rollout"]["next"]["summary"]
        r = served.post(APPROVE, headers=BEARER)
        assert r.status_code == 200, r.text
        assert r.json()["action"] == "advance"
    assert "approved by alice via sluice ui" in git(repo, "log", "-1", "--format=%B", "main^2")
    manifest = git(repo, "show", f"main:gitops/environments/{ENV}/seldondeployment.yaml")
    assert manifest.count("traffic: 50") == 2


def test_actions_are_off_unless_configured(started: Path) -> None:
    before = main(started)
    with serving(Board([source(started)])) as served:
        r = served.post(ABORT, headers=BEARER)
        assert r.status_code == 403 and "--token-file" in r.json()["detail"]
        page = served.get("/").text
        assert "Abort rollout" not in page and "read-only" in page
    assert main(started) == before


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer wrong-token-0123456789abcdefghij"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Cookie": f"token={TOKEN}"},
    ],
    ids=["none", "empty", "wrong", "basic-scheme", "longer", "shorter", "cookie"],
)
def test_without_a_valid_token_nothing_happens(armed: Served, started: Path, headers: dict[str, str]) -> None:
    before = main(started)
    r = armed.post(ABORT, headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert main(started) == before
    q = armed.post(ABORT + f"?token={TOKEN}")  # a token in the URL is not read (it would end up in logs)
    assert q.status_code == 401 and main(started) == before


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "http://127.0.0.1.evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": "http://other.localhost"},
    ],
    ids=["other-origin", "lookalike", "null-origin", "fetch-metadata", "same-site"],
)
def test_a_cross_origin_post_is_refused_even_with_the_token(
    armed: Served, started: Path, headers: dict[str, str]
) -> None:
    before = main(started)
    r = armed.post(ABORT, headers={**BEARER, **headers})
    assert r.status_code == 403 and "cross-origin" in r.json()["detail"]
    assert main(started) == before


def test_a_same_origin_post_is_accepted(armed: Served, started: Path) -> None:
    r = armed.post(ABORT, headers={**BEARER, "Origin": armed.url, "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "env",
    [
        "../../etc",
        "..%2F..%2Fetc",
        "%2e%2e",
        "main",
        "LOCAL",
        "local%00",
        "a" * 64,
        "-local",
        "lo cal",
        "%F0%9F%92%A5",
        "local;rm%20-rf",
    ],
)
def test_a_hostile_environment_name_gets_a_4xx_and_touches_nothing(
    armed: Served, started: Path, env: str
) -> None:
    before = main(started)
    for method, path in (
        ("POST", f"/api/environments/{env}/abort"),
        ("POST", f"/api/environments/{env}/approve"),
        ("GET", f"/api/environments/{env}"),
        ("GET", f"/api/environments/{env}/timeline"),
        ("GET", f"/commits/{env}/{before}"),
    ):
        r = armed.post(path, headers=BEARER) if method == "POST" else armed.get(path)
        assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text)
    assert main(started) == before
    assert git(started, "branch", "--list", "sluice/*").strip() == ""


@pytest.mark.parametrize(
    "sha", ["HEAD", "main", "--output=x", "0" * 65, "abc", "1234567;ls", "..", "ＡＢＣＤＥＦＧ"]
)
def test_a_hostile_commit_hash_gets_a_4xx(armed: Served, started: Path, sha: str) -> None:
    r = armed.get(f"/commits/{ENV}/{sha}")
    assert 400 <= r.status_code < 500
    assert not (started / "x").exists()


def test_a_commit_page_shows_the_diff_escaped(armed: Served, started: Path) -> None:
    sha = main(started)
    r = armed.get(f"/commits/{ENV}/{sha}")
    assert r.status_code == 200 and "traffic: 10" in r.text
    missing = armed.get(f"/commits/{ENV}/{'0' * 40}")
    assert missing.status_code == 404


def test_oversized_bodies_are_refused(armed: Served, started: Path) -> None:
    before = main(started)
    big = armed.post(ABORT, headers=BEARER, content=b"x" * 1_000_000)
    assert big.status_code == 413 and "larger than" in big.json()["detail"]

    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(256):
            yield b"y" * 4096

    streamed = armed.post(ABORT, headers={"Authorization": "Bearer nope"}, content=chunks())
    assert streamed.status_code in (401, 413)
    for length in (b"-1", b"1e9", b"99999999999999999999"):
        assert 400 <= raw(armed, b"POST " + ABORT.encode(), b"Content-Length: " + length) < 500
    assert main(started) == before


def raw(served: Served, request_line: bytes, *headers: bytes) -> int:
    """The status of a request written by hand (what no well-behaved client would send)."""
    host, port = served.url.removeprefix("http://").split(":")
    lines = [
        request_line + b" HTTP/1.1",
        b"Host: 127.0.0.1",
        b"Authorization: Bearer " + TOKEN.encode(),
        *headers,
    ]
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        reply = s.recv(4096)
    return int(reply.split(b" ", 2)[1])


def test_a_foreign_host_header_is_refused(armed: Served) -> None:
    # a page on evil.example whose name resolves to 127.0.0.1 (DNS rebinding) cannot read the dashboard
    r = armed.get("/api/environments", headers={"Host": "evil.example"})
    assert r.status_code == 400
    assert armed.get("/api/environments", headers={"Host": "localhost:1"}).status_code == 200


def test_html_in_what_git_says_is_escaped(repo: Path, tmp_path: Path) -> None:
    """A commit subject is anyone's text: it reaches the page as text, never as markup."""
    path = repo / "gitops" / "environments" / ENV / "seldondeployment.yaml"
    path.write_text(path.read_text().replace("traffic: 100", "traffic: 100  # edited"))
    git(repo, "commit", "-qam", '<script>alert(1)</script><img src=x onerror=alert(2)> "quoted"')
    with serving(Board([source(repo)], Tokens.load(token_file(tmp_path)))) as served:
        page = served.get("/").text
        timeline = served.get(f"/api/environments/{ENV}/timeline").json()
    assert timeline["points"][-1]["subject"].startswith("<script>")
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_security_headers_on_every_response(armed: Served) -> None:
    for path in ("/", "/api/environments", "/static/dashboard.js", "/docs"):
        r = armed.get(path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "script-src 'self';" in csp and "unsafe-eval" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"


def test_token_files_are_checked_and_name_the_line(tmp_path: Path) -> None:
    bad = {
        "one-word\n": "found one word",
        "alice short\n": "24 to 512 characters",
        f"alice {TOKEN}\nbob {TOKEN}\n": "also another identity's",
        "# only a comment\n": "no `identity token` line",
        f"alice {'x' * 20}<script>\n": "24 to 512 characters",
    }
    for text, message in bad.items():
        path = tmp_path / "tokens"
        path.write_text(text)
        with pytest.raises(TokenError) as e:
            Tokens.load(path)
        assert message in str(e.value) and str(path) in str(e.value)
    path.write_text(f"# who token\nAlice Smith <alice@example.com> {TOKEN}\n")
    tokens = Tokens.load(path)
    assert tokens.identify(TOKEN) == "Alice Smith <alice@example.com>"
    assert tokens.identify(TOKEN + " ") is None and tokens.identify("") is None
    with pytest.raises(TokenError, match="cannot be read"):
        Tokens.load(tmp_path / "missing")


def test_a_slow_client_does_not_hold_the_server(armed: Served) -> None:
    """A client that opens a connection and sends half a request does not stop the others."""
    host, port = armed.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(
            b"POST " + ABORT.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nabc"
        )
        assert armed.get(f"/api/environments/{ENV}").status_code == 200
    assert STABLE_NAME in armed.get("/").text
