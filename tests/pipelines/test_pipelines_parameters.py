"""What a submitter of a WorkflowTemplate controls: parameter values only. Images are pinned by digest, the
repository, registry and bucket endpoint are fixed, values reach scripts as environment variables (never as
script text) and are checked before use; few-valued parameters are enums."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.catalog import RENDERED_DIR, catalog
from pipelines.conventions import BUCKET, BUCKET_ENDPOINT, REPO_URL, SERVING_IMAGE_REPO

WORKFLOWS = [p for p in catalog() if p.kind in ("WorkflowTemplate", "CronWorkflow")]
PINNED = re.compile(r"^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+(:[A-Za-z0-9._-]+)?@sha256:[0-9a-f]{64}$")
HOSTILE = [
    'x"; touch PWNED; echo "',
    "$(touch PWNED)",
    "`touch PWNED`",
    "'; touch PWNED; '",
    "models:/m@a\ntouch PWNED",
]


def _rendered(name: str) -> dict[str, Any]:
    return yaml.safe_load((RENDERED_DIR / f"{name}.workflowtemplate.yaml").read_text())


def _pod_templates(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"].get("workflowSpec", doc["spec"])
    return [t for t in spec.get("templates", []) if "script" in t or "container" in t]


@pytest.mark.parametrize("pipe", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_a_submitter_cannot_choose_images_repositories_or_endpoints(pipe: Any) -> None:
    doc = pipe.build()
    declared = {p["name"] for p in doc["spec"].get("arguments", {}).get("parameters", [])}
    assert not declared & {"image", "repo", "image-repo", "bucket", "endpoint", "registry"}
    for template in _pod_templates(doc):
        pod = template.get("script") or template["container"]
        assert PINNED.fullmatch(pod["image"]), f"{template['name']}: {pod['image']} is not pinned by digest"
        for artifact in [
            *template.get("inputs", {}).get("artifacts", []),
            *template.get("outputs", {}).get("artifacts", []),
        ]:
            if "git" in artifact:
                assert artifact["git"]["repo"] == REPO_URL
            if "s3" in artifact:
                assert (artifact["s3"]["endpoint"], artifact["s3"]["bucket"]) == (BUCKET_ENDPOINT, BUCKET)
                assert artifact["s3"]["insecure"] is False
        for arg in pod.get("args", []):
            if arg.startswith(("--destination=", "--cache-repo=")):
                assert arg.split("=", 1)[1].startswith(SERVING_IMAGE_REPO + (":" if "dest" in arg else "/"))


@pytest.mark.parametrize("pipe", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_parameters_never_appear_in_script_text(pipe: Any) -> None:
    for template in _pod_templates(pipe.build()):
        if "script" in template:
            assert "{{" not in template["script"]["source"], template["name"]
            assert template["script"]["command"] == ["bash"]


def test_few_valued_parameters_are_enums() -> None:
    from pipelines.batch import FORMATS
    from pipelines.promote import ENVIRONMENTS

    params = {
        p.name: {x["name"]: x for x in p.build()["spec"]["arguments"]["parameters"]}
        for p in WORKFLOWS
        if p.kind == "WorkflowTemplate"
    }
    assert params["promote"]["env"]["enum"] == ENVIRONMENTS == ["staging", "production"]
    assert params["batch-score"]["format"]["enum"] == FORMATS
    environments = {p.stem for p in (RENDERED_DIR.parents[1] / "gitops" / "environments").iterdir()} - {
        "local"
    }
    assert set(ENVIRONMENTS) == environments


FAKE_TOOL = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["CALLS"], "a") as f:
    f.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
if sys.argv[1:3] == ["model", "info"]:
    print(json.dumps({"digest": os.environ.get("FAKE_DIGEST", "")}))
"""


def _run_step(
    template: str, step: str, parameters: dict[str, str], tmp_path: Path
) -> tuple[int, str, list[Any]]:
    """Run a rendered step's script as Argo would: parameters substituted wherever the template has Argo
    expressions (env values, and the script too if it had any), with fake sluice and dvc on PATH."""
    doc = _rendered(template)
    [t] = [t for t in doc["spec"]["templates"] if t["name"] == step]
    source = t["script"]["source"]
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "CALLS": str(tmp_path / "calls.jsonl")}
    env |= {"GITHUB_REPOSITORY": "sluice-ml/sluice", "FAKE_DIGEST": parameters.get("bundle-digest", "")}
    for key, value in parameters.items():
        source = source.replace(f"{{{{workflow.parameters.{key}}}}}", value)
    for item in t["script"].get("env", []):
        if "value" in item:
            value = str(item["value"])
            for key, given in parameters.items():
                value = value.replace(f"{{{{workflow.parameters.{key}}}}}", given)
                value = value.replace(f"{{{{inputs.parameters.{key}}}}}", given)
            env[item["name"]] = value
    work = tmp_path / "work"
    (work / "src" / ".git").mkdir(parents=True, exist_ok=True)
    (work / "src" / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (tmp_path / "checkout").mkdir(exist_ok=True)
    source = source.replace("/workspace", str(work)).replace("/tmp/checkout", str(tmp_path / "checkout"))
    source = source.replace("/tmp/scores", str(tmp_path / "scores"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("sluice", "dvc"):
        (bin_dir / tool).write_text(FAKE_TOOL)
        (bin_dir / tool).chmod(0o755)
    result = subprocess.run(
        ["bash", "-c", source], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
    )
    calls_file = tmp_path / "calls.jsonl"
    calls = [json.loads(line) for line in calls_file.read_text().splitlines()] if calls_file.exists() else []
    return result.returncode, result.stdout + result.stderr, calls


SHA = "3f786850e387550fdab836ed7e6dc881de23001b"
SHARD_OK = {"format": "csv", "shard": "incoming/2026-11-30/part-0001.csv"}
DIGEST = "sha256:" + "ab" * 32
STEPS = {
    "checkout": ("train", "checkout", {"revision": SHA}, "revision"),
    "fetch-revision": (
        "build-serving-image",
        "fetch-bundle",
        {"revision": SHA, "bundle-digest": DIGEST},
        "revision",
    ),
    "fetch-digest": (
        "build-serving-image",
        "fetch-bundle",
        {"revision": SHA, "bundle-digest": DIGEST},
        "bundle-digest",
    ),
    "promote-candidate": (
        "promote",
        "rollout-start",
        {"env": "staging", "candidate": "models:/m@challenger"},
        "candidate",
    ),
    "promote-env": (
        "promote",
        "rollout-start",
        {"env": "staging", "candidate": "models:/m@challenger"},
        "env",
    ),
    "score-model": ("batch-score", "score-shard", {**SHARD_OK, "model": "models:/m@champion"}, "model"),
    "score-format": ("batch-score", "score-shard", {**SHARD_OK, "model": "models:/m@champion"}, "format"),
    # a shard key comes from whoever can name objects in the bucket: data to the script, and checked
    "score-shard": ("batch-score", "score-shard", {**SHARD_OK, "model": "models:/m@champion"}, "shard"),
    "gather-format": ("batch-score", "gather", {"format": "csv"}, "format"),
}


@pytest.mark.parametrize("payload", HOSTILE, ids=range(len(HOSTILE)))
@pytest.mark.parametrize("case", STEPS)
def test_hostile_parameter_values_are_data_never_code(case: str, payload: str, tmp_path: Path) -> None:
    template, step, good, target = STEPS[case]
    code, output, calls = _run_step(template, step, {**good, target: payload}, tmp_path)
    assert not (tmp_path / "PWNED").exists(), f"{template}/{step}: {target} was executed as shell code"
    if case != "checkout":  # the checkout only prints the revision; the others refuse a malformed value
        assert code == 2 and "is not" in output, output
        assert calls == []


@pytest.mark.parametrize("case", ["fetch-digest", "promote-candidate", "score-model", "gather-format"])
def test_good_parameter_values_reach_the_tools_as_single_arguments(case: str, tmp_path: Path) -> None:
    template, step, good, _ = STEPS[case]
    code, output, calls = _run_step(template, step, good, tmp_path)
    assert code == 0, output
    expected = {
        "fetch-digest": [
            ["dvc", "pull", "package"],
            ["sluice", "model", "info", "artifacts/model", "--json"],
        ],
        "promote-candidate": [
            [
                "sluice",
                "rollout",
                "start",
                "--env=staging",
                "--candidate=models:/m@challenger",
                "--github=sluice-ml/sluice",
            ]
        ],
        "score-model": [
            [
                "sluice",
                "batch",
                "score",
                "--model=models:/m@champion",
                "--input=/tmp/input/records.csv",
                f"--output={tmp_path}/scores/scores.csv",
                "--summary-json=/tmp/scores/scores.summary.json".replace("/tmp/scores", f"{tmp_path}/scores"),
            ]
        ],
        "gather-format": [
            [
                "sluice",
                "batch",
                "gather",
                "/tmp/parts",
                f"--output={tmp_path}/scores/scores.csv",
                "--summary-json=/tmp/outputs/summary.json",
            ]
        ],
    }
    assert calls == expected[case]


@pytest.mark.parametrize(
    "shard",
    ["incoming/$(touch PWNED).csv", 'incoming/a.csv"; touch PWNED; echo ".csv', "../../`touch PWNED`.csv"],
)
def test_a_shard_key_that_ends_in_the_extension_is_still_only_data(shard: str, tmp_path: Path) -> None:
    """Object keys come from whoever can write to the bucket; a key passes the extension check and goes no
    further than the artifact key: the script's commands take fixed local paths."""
    code, output, calls = _run_step(
        "batch-score", "score-shard", {**SHARD_OK, "model": "models:/m@champion", "shard": shard}, tmp_path
    )
    assert not (tmp_path / "PWNED").exists()
    assert code == 0, output
    assert [c[:3] for c in calls] == [["sluice", "batch", "score"]]
    assert not any(shard in arg for arg in calls[0])
