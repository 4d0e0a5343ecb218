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


class FakeTime:
    """A clock that moves only when the code under test sleeps, and remembers each sleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_wait_rides_out_dropped_connections_and_5xx_with_back_off(argo_server: Any) -> None:
    from pipelines.submit import wait

    argo_server.faults = ["drop", "502", "drop", "503"]
    argo_server.statuses = [{"phase": "Running"}, SUCCEEDED]
    t = FakeTime()
    finished = wait(
        argo_server.url, "ns", "train-x7k2p", token=argo_server.token, poll=10, clock=t.clock, sleep=t.sleep
    )
    assert finished.succeeded and finished.outputs["metrics"] == '{"roc_auc": 0.99}'
    assert t.sleeps == [2, 4, 8, 16, 10]  # back-off on each failure in a row, then the normal poll
    assert argo_server.gets == 6


def test_wait_gives_up_at_its_deadline_when_the_server_stays_away() -> None:
    from pipelines.submit import wait

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = FakeTime()
    with pytest.raises(
        SubmitError, match=r"gave up waiting for train-x7k2p after 600s: \d+ attempts in a row"
    ):
        wait(
            f"http://127.0.0.1:{port}",
            "ns",
            "train-x7k2p",
            timeout=600,
            clock=t.clock,
            sleep=t.sleep,
            max_backoff=120,
        )
    assert sum(t.sleeps) == pytest.approx(600) and max(t.sleeps) == 120
    assert len(t.sleeps) == 10  # 2, 4, ..., 64, then 120 until the deadline


@pytest.mark.parametrize("status", ["401", "403", "404"])
def test_wait_fails_at_once_on_an_answer_that_will_not_change(argo_server: Any, status: str) -> None:
    from pipelines.submit import wait

    argo_server.faults = [status]
    t = FakeTime()
    with pytest.raises(SubmitError, match=f"answered {status}"):
        wait(argo_server.url, "ns", "train-x7k2p", token=argo_server.token, clock=t.clock, sleep=t.sleep)
    assert t.sleeps == [] and argo_server.gets == 1


def parse_github_output(text: str) -> dict[str, str]:
    """$GITHUB_OUTPUT as the Actions runner reads it (SetOutputFileCommand): `name=value` lines, or
    `name<<DELIMITER` followed by lines up to a line that is exactly DELIMITER."""
    outputs: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        equals, heredoc = line.find("="), line.find("<<")
        if heredoc >= 0 and (equals < 0 or heredoc < equals):
            name, delimiter = line[:heredoc], line[heredoc + 2 :]
            body = []
            while lines[i] != delimiter:
                body.append(lines[i])
                i += 1
            i += 1
            outputs[name] = "\n".join(body)
        else:
            outputs[line[:equals]] = line[equals + 1 :]
    return outputs


def test_a_workflow_output_cannot_write_outputs_of_its_own(tmp_path: Any) -> None:
    from sluice.commands_pipelines import write_outputs

    hostile = {
        "bundle-digest": "sha256:" + "ab" * 32,
        "metrics": '{"auc": 1}\nSLUICE_EOF\nimage=attacker.example/evil:latest\nx<<EOF',
        "registry": "line one\nghadelimiter_\nimage=also-not",
    }
    path = tmp_path / "github_output"
    write_outputs(path, hostile)
    write_outputs(path, {"next": "1"})
    assert parse_github_output(path.read_text()) == {**hostile, "next": "1"}
