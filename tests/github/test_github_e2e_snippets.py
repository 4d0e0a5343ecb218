"""The Python inside e2e-kind.yml, run here: the workflow needs a kind cluster, but its snippets (train the
extra bundles, rewrite the staging manifest, build the request body) are plain Python taken from the
workflow file and run against the real manifest, bundles and serving component."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from testkit.services import need

from model.bundle import Bundle
from pipelines.schemas import validate_file
from rollout.guardrails import check_manifest

REPO = Path(__file__).resolve().parents[2]
E2E = REPO / ".github" / "workflows" / "e2e-kind.yml"
pytestmark = pytest.mark.timeout(120)


def snippet(step_name: str) -> str:
    """The `python - <<'PY' ... PY` heredoc of one step of the e2e job."""
    steps = yaml.safe_load(E2E.read_text())["jobs"]["e2e"]["steps"]
    (step,) = [s for s in steps if s.get("name") == step_name]
    match = re.search(r"<<'PY'\n(.*?)\nPY\n", step["run"], re.S)
    assert match, f"{step_name}: no python heredoc"
    return match.group(1)


def run(code: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_extra_bundles_are_trained_with_distinct_digests(tmp_path: Path) -> None:
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    run(
        snippet("three bundles (stable, candidate, broken candidate)").replace(
            "/opt/sluice/bundles", str(bundles)
        ),
        tmp_path,
    )
    b, c = Bundle.open(bundles / "b"), Bundle.open(bundles / "c")
    assert b.digest != c.digest
    assert b.metadata.params["train"]["logistic_regression"]["C"] == 0.5


def test_staging_manifest_rewrite_keeps_it_valid(tmp_path: Path, bundle_dir: Path) -> None:
    shutil.copytree(
        REPO / "gitops" / "environments" / "staging", tmp_path / "gitops" / "environments" / "staging"
    )
    shutil.copytree(bundle_dir, tmp_path / "a")
    image = "localhost:5001/sluice-serving@sha256:" + "1" * 64
    code = snippet("staging on a temporary branch, synced by Argo CD").replace(
        "/opt/sluice/bundles/a/metadata.json", str(tmp_path / "a" / "metadata.json")
    )
    run(code, tmp_path, {"IMAGE": image})
    path = tmp_path / "gitops" / "environments" / "staging" / "seldondeployment.yaml"
    doc = yaml.safe_load(path.read_text())
    digest = Bundle.open(bundle_dir).digest
    (predictor,) = doc["spec"]["predictors"]
    assert predictor["name"] == "m-" + digest.split(":")[1][:12]
    assert predictor["componentSpecs"][0]["spec"]["containers"][0]["image"] == image
    params = {p["name"]: p["value"] for p in predictor["graph"]["parameters"]}
    assert params == {"model_uri": "file:///opt/sluice/bundles/a", "model_digest": digest}
    assert check_manifest(doc) == [] and validate_file(path) == []


def test_request_body_is_accepted_by_the_serving_component(tmp_path: Path, bundle_dir: Path) -> None:
    bundle = Bundle.open(bundle_dir)
    names = bundle.signature.feature_names
    prepared = tmp_path / "data" / "prepared"
    prepared.mkdir(parents=True)
    with (prepared / "test.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*names, bundle.signature.target])
        writer.writerow([*(0.5 for _ in names), 1])
    body = json.loads(run(snippet("traffic, metrics and the reconciler in the background"), tmp_path))
    assert body["data"]["names"] == names
    from serving.component import Classifier

    component = Classifier(model_uri=bundle_dir.as_uri(), model_digest=bundle.digest)
    component.load()
    probabilities = component.predict(body["data"]["ndarray"], body["data"]["names"])
    assert len(probabilities[0]) == len(bundle.signature.classes)


def jq(program: str, name: str, document: object) -> bool:
    result = subprocess.run(
        [need("jq"), "-e", "--arg", "p", name, program],
        input=json.dumps(document),
        capture_output=True,
        text=True,
    )
    assert result.returncode in (0, 1), result.stderr  # 5 would be a jq error (a broken program)
    return result.returncode == 0


def test_e2e_predicates_on_real_status_output(tmp_path: Path) -> None:
    """The workflow's jq checks, on `sluice rollout status --json` of a real repository and on the manifest."""
    env = yaml.safe_load(E2E.read_text())["env"]
    repo = tmp_path / "repo"
    manifest = REPO / "gitops" / "environments" / "staging" / "seldondeployment.yaml"
    (repo / "gitops" / "environments" / "staging").mkdir(parents=True)
    shutil.copy(manifest, repo / "gitops" / "environments" / "staging" / manifest.name)
    (repo / "policies").mkdir()
    (repo / "policies" / "staging.yaml").write_text(env["E2E_POLICY"])
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "staging"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True)
    status = subprocess.run(
        [str(Path(sys.executable).parent / "sluice"), "rollout", "status", "--env", "staging", "--json"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    sdep = yaml.safe_load(manifest.read_text())
    stable = sdep["spec"]["predictors"][0]["name"]
    assert jq(env["ONLY_IN_GIT"], stable, document)
    assert not jq(env["ONLY_IN_GIT"], "m-000000000000", document)
    two = {
        **document,
        "predictors": [*document["predictors"], {**document["predictors"][0], "name": "m-1", "traffic": 0}],
    }
    assert not jq(env["ONLY_IN_GIT"], stable, two)
    assert jq(env["ONLY_IN_CLUSTER"], stable, sdep)
    assert not jq(
        env["ONLY_IN_CLUSTER"],
        stable,
        {"spec": {"predictors": [*sdep["spec"]["predictors"], {"name": "m-1"}]}},
    )


def test_e2e_rollout_commands_start_and_hold_before_traffic(tmp_path: Path, rf_bundle_dir: Path) -> None:
    """The e2e job's `sluice rollout start` / `reconcile --once` on the staging manifest with its policy: the
    canary opens at the policy's first weight, and a tick before any metrics exist holds (no rollback)."""
    import socket

    env = yaml.safe_load(E2E.read_text())["env"]
    repo = tmp_path / "repo"
    manifest = REPO / "gitops" / "environments" / "staging" / "seldondeployment.yaml"
    (repo / "gitops" / "environments" / "staging").mkdir(parents=True)
    shutil.copy(manifest, repo / "gitops" / "environments" / "staging" / manifest.name)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "staging.yaml").write_text(env["E2E_POLICY"])
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "staging"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    sluice = str(Path(sys.executable).parent / "sluice")
    common = ["--env", "staging", "--policies", str(policies)]
    git_env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    for args in (
        ["rollout", "start", *common, "--candidate", rf_bundle_dir.as_uri(), "--strategy", "canary"],
        ["rollout", "reconcile", *common, "--once", "--prometheus", f"http://127.0.0.1:{closed}"],
    ):
        result = subprocess.run(
            [sluice, *args], cwd=repo, env=git_env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:]
    status = subprocess.run(
        [sluice, "rollout", "status", *common, "--json"], cwd=repo, capture_output=True, text=True, timeout=60
    )
    document = json.loads(status.stdout)
    candidate = "m-" + Bundle.open(rf_bundle_dir).digest.split(":")[1][:12]
    weights = {p["name"]: p["traffic"] for p in document["predictors"]}
    first_stage = yaml.safe_load(env["E2E_POLICY"])["stages"][0]["weight"]
    assert candidate in weights, f"the candidate was rolled back before any traffic: {document['rollout']}"
    assert weights[candidate] == first_stage and sum(weights.values()) == 100
    assert document["rollout"]["status"] == "progressing"
    check = validate_file(repo / "gitops" / "environments" / "staging" / manifest.name)
    assert check == []  # what Argo CD would be handed
