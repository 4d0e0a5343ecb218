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


SUCCEEDED = {
    "phase": "Succeeded",
    "outputs": {
        "parameters": [
            {"name": "bundle-digest", "value": "sha256:" + "ab" * 32},
            {"name": "metrics", "value": '{"roc_auc": 0.99}'},
        ]
    },
}


def test_wait_polls_until_the_workflow_stops_and_returns_its_outputs(argo_server: Any, tmp_path: Any) -> None:
    argo_server.statuses = [{"phase": "Pending"}, {"phase": "Running"}, SUCCEEDED]
    outputs = tmp_path / "github_output"
    env = {"ARGO_SERVER": argo_server.url, "ARGO_TOKEN": argo_server.token}
    result = runner.invoke(
        app,
        [
            "pipelines",
            "submit",
            "train",
            "-p",
            "revision=abc",
            "--wait",
            "--poll",
            "0.01",
            "--outputs-to",
            str(outputs),
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert argo_server.gets == 3
    assert "train-x7k2p succeeded" in result.output
    assert outputs.read_text() == f'bundle-digest=sha256:{"ab" * 32}\nmetrics={{"roc_auc": 0.99}}\n'


def test_wait_fails_with_the_workflow_message(argo_server: Any) -> None:
    argo_server.statuses = [{"phase": "Running"}, {"phase": "Failed", "message": "child 'dvc-repro' failed"}]
    env = {"ARGO_SERVER": argo_server.url, "ARGO_TOKEN": argo_server.token}
    result = runner.invoke(app, ["pipelines", "submit", "train", "--wait", "--poll", "0.01"], env=env)
    assert result.exit_code == 1
    assert "train-x7k2p Failed: child 'dvc-repro' failed" in result.output


def test_wait_gives_up_after_its_timeout(argo_server: Any) -> None:
    from pipelines.submit import wait

    argo_server.statuses = [{"phase": "Running"}]
    ticks = iter(range(100))
    with pytest.raises(SubmitError, match="still Running after 3s"):
        wait(
            argo_server.url,
            "ns",
            "train-x7k2p",
            token=argo_server.token,
            timeout=3,
            poll=0,
            clock=lambda: next(ticks),
        )
