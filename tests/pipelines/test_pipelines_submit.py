"""`sluice pipelines submit` against a real HTTP server on 127.0.0.1 speaking the Argo Server submit API."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from typer.testing import CliRunner

from pipelines.submit import SubmitError, submit
from sluice.cli import app

pytestmark = pytest.mark.timeout(30)
runner = CliRunner()


def test_submit_posts_the_documented_request(argo_server: Any) -> None:
    done = submit(
        argo_server.url,
        "sluice-pipelines",
        "train",
        {"revision": "abc123"},
        token=f"Bearer {argo_server.token}",
    )
    assert done.name == "train-x7k2p" and done.namespace == "sluice-pipelines"
    assert done.url == f"{argo_server.url}/workflows/sluice-pipelines/train-x7k2p"
    (request,) = argo_server.requests
    assert request["path"] == "/api/v1/workflows/sluice-pipelines/submit"
    body = json.loads(request["body"])
    assert body["resourceKind"] == "WorkflowTemplate" and body["resourceName"] == "train"
    assert body["submitOptions"]["parameters"] == ["revision=abc123"]


def test_bare_token_gets_the_bearer_prefix(argo_server: Any) -> None:
    submit(argo_server.url, "ns", "promote", {}, token=argo_server.token)
    assert argo_server.requests[0]["headers"]["Authorization"] == f"Bearer {argo_server.token}"


def test_refusals_carry_the_server_message(argo_server: Any) -> None:
    with pytest.raises(SubmitError, match=r"refused train \(401\): token not valid"):
        submit(argo_server.url, "ns", "train", {}, token="wrong")
    argo_server.templates.discard("train")
    with pytest.raises(SubmitError, match=r"\(404\): workflowtemplates.argoproj.io \"train\" not found"):
        submit(argo_server.url, "ns", "train", {}, token=argo_server.token)


def test_unreachable_server_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SubmitError, match="cannot reach the Argo Server"):
        submit(f"http://127.0.0.1:{port}", "ns", "train", {}, timeout=2)
    with pytest.raises(SubmitError, match="must be an http"):
        submit("argo.example.com:2746", "ns", "train", {})


def test_cli_submit(argo_server: Any) -> None:
    env = {"ARGO_SERVER": argo_server.url, "ARGO_TOKEN": argo_server.token, "ARGO_NAMESPACE": "ml"}
    result = runner.invoke(
        app,
        [
            "pipelines",
            "submit",
            "batch-score",
            "-p",
            "input-key=incoming/a.csv",
            "-p",
            "output-key=scores/a.csv",
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert "batch-score-x7k2p" in result.output
    body = json.loads(argo_server.requests[0]["body"])
    assert argo_server.requests[0]["path"] == "/api/v1/workflows/ml/submit"
    assert body["submitOptions"]["parameters"] == ["input-key=incoming/a.csv", "output-key=scores/a.csv"]


def test_cli_without_argo_server_says_what_to_set() -> None:
    result = runner.invoke(app, ["pipelines", "submit", "train"], env={"ARGO_SERVER": ""})
    assert result.exit_code == 1
    assert "ARGO_SERVER is not set" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "no pipeline named 'nope'"),
        (["batch-score-nightly"], "is a CronWorkflow, not a WorkflowTemplate"),
        (["train", "-p", "revison=abc"], "train has no parameter revison"),
        (["train", "-p", "revision"], "expected NAME=VALUE"),
    ],
)
def test_cli_refuses_bad_requests_before_sending(argo_server: Any, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["pipelines", "submit", *args], env={"ARGO_SERVER": argo_server.url})
    assert result.exit_code == 1 and message in result.output, result.output
    assert argo_server.requests == []


def test_cli_render_check_and_list(tmp_path: object) -> None:
    result = runner.invoke(app, ["pipelines", "render", "--check"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["pipelines", "list"])
    assert result.exit_code == 0 and "build-serving-image" in result.output
