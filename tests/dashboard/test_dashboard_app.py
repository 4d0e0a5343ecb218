"""The dashboard as an HTTP service: its OpenAPI document, Swagger UI and the page served offline from
vendored files, live updates over server-sent events when a commit lands, and `sluice ui`'s command line."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import httpx
from dashboard_fixtures import CANDIDATE, ENV, STABLE_NAME, Served, environment, serving, source, wait_until

from dashboard.board import Board
from rollout.reconciler import abort, start

REPO = Path(__file__).resolve().parents[2]
STATIC = REPO / "dashboard" / "static"


def test_the_openapi_document_describes_the_api(repo: Path) -> None:
    with serving(Board([source(repo)])) as served:
        doc = served.get("/openapi.json").json()
    paths = doc["paths"]
    assert set(paths) >= {
        "/api/environments",
        "/api/environments/{env}",
        "/api/environments/{env}/timeline",
        "/api/environments/{env}/figures",
        "/api/environments/{env}/approve",
        "/api/environments/{env}/abort",
        "/events",
        "/healthz",
    }
    abort_op = paths["/api/environments/{env}/abort"]["post"]
    assert {"200", "401", "403", "404", "409", "413"} <= set(abort_op["responses"])
    env_param = next(p for p in abort_op["parameters"] if p["name"] == "env")
    assert env_param["schema"]["pattern"].startswith("^[a-z0-9]")
    assert "text/event-stream" in paths["/events"]["get"]["responses"]["200"]["content"]
    schemas = doc["components"]["schemas"]
    assert {
        "EnvironmentView",
        "RolloutView",
        "GateView",
        "TimelineView",
        "FiguresView",
        "ActionResult",
    } <= set(schemas)
    assert "explanation" in schemas["GateView"]["required"]


def test_the_page_and_swagger_ui_need_nothing_but_the_dashboard(repo: Path) -> None:
    with serving(Board([source(repo)])) as served:
        for path in ("/", "/docs"):
            html = served.get(path).text
            refs = re.findall(r'(?:src|href)="([^"]+)"', html)
            assert refs, path
            for ref in refs:
                assert not ref.startswith(("http:", "https:", "//")), f"{path} loads {ref} from elsewhere"
                if ref.startswith("/") and not ref.startswith(("/commits/", "/docs", "/api")):
                    assert served.get(ref).status_code == 200, ref
        for asset, kind in (
            ("/docs/assets/swagger-ui-bundle.js", "javascript"),
            ("/docs/assets/swagger-ui.css", "css"),
            ("/static/swagger-init.js", "javascript"),
        ):
            r = served.get(asset)
            assert r.status_code == 200 and kind in r.headers["content-type"], asset
        assert "/openapi.json" in served.get("/static/swagger-init.js").text


def test_the_vendored_front_end_is_the_published_one() -> None:
    """htmx and its SSE extension, unchanged from their npm packages (0BSD): the digests VENDORED.md lists."""
    table = (STATIC / "VENDORED.md").read_text()
    rows = re.findall(r"^\| (\S+\.js) \| (\S+) .*\| (0BSD) \| ([0-9a-f]{64}) \|$", table, re.M)
    assert {r[0] for r in rows} == {"htmx-2.0.11.min.js", "htmx-ext-sse-2.2.4.js"}
    for name, _package, _licence, digest in rows:
        assert hashlib.sha256((STATIC / name).read_bytes()).hexdigest() == digest, name
    page = (REPO / "dashboard" / "templates" / "page.html").read_text()
    for name, *_ in rows:
        assert f'src="/static/{name}"' in page


def test_a_commit_reaches_the_page_as_a_server_sent_event(repo: Path) -> None:
    board = Board([source(repo)], poll=0.1)
    with serving(board) as served:
        events: list[tuple[str, str]] = []
        ready = threading.Event()

        def listen() -> None:
            with httpx.stream("GET", served.url + "/events", timeout=30) as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                name, data = "", []
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        data.append(line[6:])
                    elif line == "" and name:
                        events.append((name, "\n".join(data)))
                        name, data = "", []
                        if len(events) >= 3:
                            ready.set()
                        staged = any(n == f"state-{ENV}" and 'data-stage="0"' in d for n, d in events)
                        if staged and any(n == f"timeline-{ENV}" for n, _ in events[3:]):
                            return

        thread = threading.Thread(target=listen, daemon=True)
        thread.start()
        assert ready.wait(20), events  # every part once on connect
        assert {n for n, _ in events[:3]} == {f"state-{ENV}", f"timeline-{ENV}", f"figures-{ENV}"}
        start(environment(repo), "file:///c", "file:///c", CANDIDATE)
        thread.join(timeout=20)
        assert not thread.is_alive(), "no state event with the new stage"
        state = [d for n, d in events if n == f"state-{ENV}"][-1]
        assert 'data-stage="0"' in state and "m-222222222222" in state
        assert any(n == f"timeline-{ENV}" for n, _ in events[3:])  # the new commit's point


def test_too_many_event_streams_get_a_503(repo: Path) -> None:
    board = Board([source(repo)], max_subscribers=1)
    with serving(board) as served, httpx.stream("GET", served.url + "/events", timeout=10) as first:
        lines = first.iter_lines()  # kept: a dropped iterator would close the stream
        assert next(lines) == "retry: 2000"
        second = served.get("/events")
        assert second.status_code == 503 and "too many" in second.json()["detail"]


def test_the_page_shows_no_rollout_then_the_rollout_then_the_last_one(repo: Path) -> None:
    with serving(Board([source(repo)], poll=0.1)) as served:
        assert "no rollout" in served.get("/").text
        env = environment(repo)
        start(env, "file:///c", "file:///c", CANDIDATE)
        page = wait_until(lambda: page_with(served, "canary · progressing"), 10, "rollout")
        assert "Rollout: canary of" in page and STABLE_NAME in page
        assert "Gates:" in page  # not evaluated: no metrics configured here
        abort(env, "carol")
        page = wait_until(lambda: page_with(served, "Last rollout"), 10, "last rollout")
        assert "aborted by carol" in page


def page_with(served: Served, text: str) -> str | None:
    page = served.get("/").text
    return page if text in page else None


def sluice(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "sluice", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )


def test_sluice_ui_refuses_bad_options_with_clear_errors(repo: Path, tmp_path: Path) -> None:
    bad_tokens = tmp_path / "tokens"
    bad_tokens.write_text("alice short\n")
    cases = {
        ("--env", "../etc"): "DNS label",
        ("--env", "main"): "reserved",
        ("--env", "local", "--env", "local"): "named twice",
        ("--token-file", str(bad_tokens)): f"{bad_tokens}:1",
        ("--metrics-url", "staging=http://x/metrics"): "no environment 'staging'",
        ("--metrics-url", "ftp://x"): "not an http(s) URL",
        ("--port", "70000"): "not a port number",
    }
    for args, message in cases.items():
        r = sluice("ui", "--repo", str(repo), *args)
        assert r.returncode != 0 and message in r.stderr, (args, r.stderr)
    assert "Traceback" not in r.stderr
    help_text = sluice("ui", "--help").stdout
    assert "--token-file" in help_text and "promotion order" in help_text


def test_sluice_ui_serves_every_environment_in_promotion_order(repo: Path, tmp_path: Path) -> None:
    from dashboard_fixtures import git
    from testkit.services import free_port

    from rollout.scm.local import LocalGit
    from rollout.targets.seldon import initial_manifest

    for env in ("production", "staging"):
        LocalGit(repo).write_initial(
            env, initial_manifest(env, "models:/sluice-classifier/1", "sha256:" + "1" * 64), env
        )
    git(repo, "commit", "-qm", "environments", "--allow-empty")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice", "ui", "--repo", str(repo), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/api/environments"
        board = wait_until(lambda: _json(url), 30, "sluice ui did not answer")
        assert [e["name"] for e in board["environments"]] == ["local", "staging", "production"]
        assert all(e["actions"]["enabled"] is False for e in board["environments"])
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert b"actions off (read-only)" in out


def _json(url: str) -> dict | None:
    try:
        r = httpx.get(url, timeout=2)
        return r.json() if r.status_code == 200 else None
    except httpx.HTTPError:
        return None


def test_promotion_order_and_metrics_urls() -> None:
    from sluice.commands_ui import _metrics_urls, promotion_order

    names = ["production", "eu-west", "staging", "local", "prod-eu", "dev", "qa"]
    assert promotion_order(names) == ["dev", "local", "qa", "staging", "eu-west", "prod-eu", "production"]
    urls = _metrics_urls(["http://a/metrics", "staging=http://s/metrics"], ["local", "staging"])
    assert urls == {"local": "http://a/metrics", "staging": "http://s/metrics"}
