"""Helpers for the dashboard's tests: a real GitOps repository with an environment, the real exporter of the
rollout tests (the router's metric names, traffic driven by the test), and `sluice ui`'s app served by a real
uvicorn on a loopback port. (A module of its own name: `conftest` is ambiguous when several test folders run.)"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "rollout"))

from rollout_gitops import fast_policy, git, make_repo  # noqa: E402
from testkit.services import free_port  # noqa: E402


def _rollout_fixtures() -> Any:
    """The rollout tests' conftest, loaded under a name of its own (a site package owns `tests`)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("rollout_tests_conftest", TESTS / "rollout" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_rollout = _rollout_fixtures()
running_exporter = _rollout.running_exporter

STABLE = "sha256:" + "1" * 64
CANDIDATE = "sha256:" + "2" * 64
OTHER = "sha256:" + "3" * 64
STABLE_NAME, CANDIDATE_NAME, OTHER_NAME = "m-111111111111", "m-222222222222", "m-333333333333"
TOKEN = "alice-token-0123456789abcdefghij"  # 32 characters
ENV = "local"


def make_environment_repo(tmp_path: Path) -> Path:
    """A GitOps repository whose `local` environment serves STABLE, with a fast canary policy in Git."""
    import yaml

    root = make_repo(tmp_path, STABLE)
    (root / "policies").mkdir()
    (root / "policies" / f"{ENV}.yaml").write_text(yaml.safe_dump(fast_policy("canary")))
    git(root, "add", "policies")
    git(root, "commit", "-qm", "policy: a fast canary")
    return root


def environment(repo: Path, metrics_url: str | None = None, env: str = ENV) -> Any:
    from rollout.run import Options, build_environment

    environment = build_environment(Options(env=env, repo=repo, metrics_url=metrics_url))
    environment.champion = None  # no registry in these repositories
    return environment


def source(repo: Path, metrics_url: str | None = None, env: str = ENV, figures: Any = None) -> Any:
    import functools

    from dashboard.board import Source
    from dashboard.history import LocalHistory

    e = environment(repo, metrics_url, env)
    return Source(
        env,
        e,
        history=LocalHistory(e.scm, e.target.state),
        figures=figures,
        fingerprint=functools.partial(
            e.scm.git,
            "for-each-ref",
            "--format=%(refname) %(objectname)",
            "refs/heads/main",
            f"refs/heads/sluice/{env}/",
        ),
    )


def token_file(tmp_path: Path, *pairs: tuple[str, str]) -> Path:
    path = tmp_path / "tokens"
    path.write_text("".join(f"{who} {token}\n" for who, token in (pairs or (("alice", TOKEN),))))
    return path


@dataclass
class Served:
    url: str
    board: Any
    server: Any

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.post(self.url + path, timeout=30, **kw)


@contextmanager
def serving(board: Any, allowed_hosts: list[str] | None = None) -> Iterator[Served]:
    """`sluice ui`'s app for `board` on a real uvicorn, on a free loopback port, in a thread."""
    import uvicorn

    from dashboard.app import create_app

    hosts = allowed_hosts if allowed_hosts is not None else ["127.0.0.1", "localhost"]
    app = create_app(board, hosts)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(url), 20, "the dashboard did not start")
        yield Served(url, board, server)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(condition: Callable[[], Any], timeout: float, message: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{message} within {timeout:g} s")


def run(coro: Any) -> Any:
    return asyncio.run(coro)
