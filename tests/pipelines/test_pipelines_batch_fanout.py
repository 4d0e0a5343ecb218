"""The batch-score workflow fans out over the shards of an input folder, one pod per shard, and gathers them:
its DAG, the expression that picks the shards, the admission of the pod Argo lists the bucket in, and the
rendered steps run for real (sluice itself) over a folder standing in for the bucket."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from admission_cel import admitted

from pipelines import admission, batch
from pipelines.catalog import RENDERED_DIR
from pipelines.conventions import ARGOEXEC_REPOSITORY

REPO = Path(__file__).resolve().parents[2]
ARGOEXEC = f"{ARGOEXEC_REPOSITORY}:v3.6.4"


def _doc() -> dict[str, Any]:
    return yaml.safe_load((RENDERED_DIR / "batch-score.workflowtemplate.yaml").read_text())


def _template(name: str) -> dict[str, Any]:
    return next(t for t in _doc()["spec"]["templates"] if t["name"] == name)


def test_the_dag_lists_scores_each_shard_and_gathers() -> None:
    dag = _template("batch-score")
    tasks = {t["name"]: t for t in dag["dag"]["tasks"]}
    assert [t["name"] for t in dag["dag"]["tasks"]] == ["list-shards", "score-shards", "gather"]
    assert tasks["score-shards"]["depends"] == "list-shards" and tasks["gather"]["depends"] == "score-shards"
    assert dag["parallelism"] == batch.PARALLELISM and isinstance(dag["parallelism"], int)
    assert tasks["score-shards"]["arguments"]["parameters"] == [{"name": "shard", "value": "{{item}}"}]
    listing = _template("list-shards")["data"]["source"]["artifactPaths"]["s3"]
    assert listing["key"] == "{{workflow.parameters.input-key}}"
    # each run keeps its parts apart; the gather reads exactly the folder the shards wrote to
    score, gather = _template("score-shard"), _template("gather")
    parts = "{{workflow.parameters.output-key}}.parts/{{workflow.name}}"
    keys = {a["name"]: a["s3"]["key"] for a in score["outputs"]["artifacts"]}
    assert keys["scores"] == f"{parts}/{{{{inputs.parameters.shard}}}}"
    assert (
        keys["summary"] == keys["scores"] + ".summary.json"
        and keys["rejects"] == keys["scores"] + ".rejects.jsonl"
    )
    assert gather["inputs"]["artifacts"][0]["s3"]["key"] == parts
    assert {a["name"]: a["s3"]["key"] for a in gather["outputs"]["artifacts"]}["scores"] == (
        "{{workflow.parameters.output-key}}"
    )
    assert gather["outputs"]["parameters"][0]["globalName"] == "summary"


def test_the_shard_expression_takes_values_never_spliced_text() -> None:
    expression = _template("batch-score")["dag"]["tasks"][1]["withParam"]
    assert expression.startswith("{{=") and expression.endswith("}}")
    assert expression.count("{{") == 1, (
        "a simple tag inside the expression would splice a value into its text"
    )
    body = expression[3:-2]
    # the listing (keys anyone with write access to the bucket names) and the input key are variables
    assert set(re.findall(r"tasks\['([a-z-]+)'\]", body)) == {"list-shards"}
    assert set(re.findall(r"workflow\.parameters\['([a-z-]+)'\]", body)) == {"input-key"}
    assert sorted(re.findall(r"endsWith '\.(\w+)'", body)) == sorted(batch.FORMATS)


def _data_pod(command: list[str], image: str = ARGOEXEC) -> dict[str, Any]:
    """A pod as Argo's controller creates it for a data template: its executor as `main`, no wait container."""
    return {
        "metadata": {"labels": {admission.WORKFLOW_LABEL: "batch-score-x7k2p"}},
        "spec": {"containers": [{"name": "main", "image": image, "command": command}]},
    }


def test_the_pod_that_lists_the_bucket_is_admitted_and_only_that_one() -> None:
    policy = admission.pods_policy()
    listing = ["argoexec", "data", json.dumps(_template("list-shards")["data"]), "--loglevel", "info"]
    assert admitted(policy, _data_pod(listing)) == []
    for command in (
        ["argoexec", "emissary", "--", "sh", "-c", "env"],
        ["sh", "-c", "cat /argo/secret/*"],
        [],
    ):
        assert admitted(policy, _data_pod(command)), command
    assert admitted(policy, _data_pod(listing, image="docker.io/attacker/argoexec:v3.6.4"))
    pod = _data_pod(listing)
    del pod["spec"]["containers"][0]["command"]
    assert admitted(policy, pod)


# running the rendered steps ------------------------------------------------------------------------------


def _resolve(text: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value)
    assert "{{" not in text, f"unresolved in {text!r}"
    return text


class Bucket:
    """A folder standing in for the bucket, and Argo's executor for one step: S3 artifacts in (a key or a
    folder of keys), the script with its env, S3 artifacts out (optional ones may be absent)."""

    def __init__(self, root: Path, pods: Path, tools: Path):
        self.root, self.pods, self.tools = root, pods, tools
        self.parameters: dict[str, str] = {}  # output parameters of the last step

    def run(self, template: dict[str, Any], values: dict[str, str]) -> subprocess.CompletedProcess[str]:
        pod = self.pods / f"pod-{len(list(self.pods.glob('pod-*')))}"
        local = lambda path: pod / path.lstrip("/")  # noqa: E731 - the pod's own /tmp
        for artifact in template.get("inputs", {}).get("artifacts", []):
            source = self.root / _resolve(artifact["s3"]["key"], values)
            target = local(_resolve(artifact["path"], values))
            target.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if source.is_dir() else shutil.copyfile)(source, target)
        script = template["script"]
        env = {
            "PATH": f"{self.tools}:{Path(sys.executable).parent}:{os.environ['PATH']}",
            "PYTHONPATH": str(REPO),
        }
        env |= {e["name"]: _resolve(str(e["value"]), values) for e in script["env"] if "value" in e}
        source = re.sub(r"(?<![\w/])/tmp/", f"{pod}/tmp/", script["source"])
        result = subprocess.run(
            ["bash", "-c", source], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )
        if result.returncode == 0:
            for artifact in template.get("outputs", {}).get("artifacts", []):
                produced = local(_resolve(artifact["path"], values))
                if not produced.exists():
                    assert artifact.get("optional"), f"{artifact['name']} was not produced"
                    continue
                target = self.root / _resolve(artifact["s3"]["key"], values)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(produced, target)
            for parameter in template.get("outputs", {}).get("parameters", []):
                self.parameters[parameter["name"]] = local(parameter["valueFrom"]["path"]).read_text()
        return result


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_rendered_steps_score_a_folder_shard_by_shard_and_gather_it(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """What the workflow does with a folder of three shards (and a stray file), step by step as its pods
    would, against a registry-free bundle path: the same rows as scoring the shards' concatenation."""
    test_frame = pd.read_csv(bundle_dir.parent / "data" / "prepared" / "test.csv").drop(columns=["target"])
    test_frame.insert(0, "id", [f"r{i}" for i in range(len(test_frame))])
    shim = tmp_path / "shim"
    bucket = Bucket(tmp_path / "bucket", tmp_path / "pods", shim)
    folder = tmp_path / "bucket" / "incoming" / "2026-11-30"
    folder.mkdir(parents=True)
    for i, start in enumerate(range(0, 143, 48)):
        shard = test_frame.iloc[start : start + 48].copy()
        shard.iloc[0, shard.columns.get_loc("mean_area")] = None
        shard.to_csv(folder / f"part-{i:04d}.csv", index=False)
    (folder / "_SUCCESS").write_text("")  # what writers leave behind: not a shard
    listed = sorted(str(p.relative_to(bucket.root)) for p in folder.rglob("*") if p.is_file())
    shards = [key for key in listed if key.endswith(tuple(f".{f}" for f in batch.FORMATS))]  # the expression
    values = {
        "workflow.parameters.model": "models:/sluice-classifier@champion",
        "workflow.parameters.format": "csv",
        "workflow.parameters.input-key": "incoming/2026-11-30/",
        "workflow.parameters.output-key": "scores/2026-11-30.csv",
        "workflow.name": "batch-score-x7k2p",
    }
    # the registry is not here: the steps' `sluice` resolves the model URI to the suite's bundle
    shim.mkdir()
    (shim / "sluice").write_text(
        f"#!/bin/sh\nexec {sys.executable} -c 'import sys; from sluice.cli import main; "
        f'sys.argv = ["sluice"] + [a.replace("models:/sluice-classifier@champion", "{bundle_dir}") '
        f'for a in sys.argv[1:]]; main()\' "$@"\n'
    )
    (shim / "sluice").chmod(0o755)
    for key in shards:
        result = bucket.run(_template("score-shard"), values | {"inputs.parameters.shard": key})
        assert result.returncode == 0, result.stderr
    result = bucket.run(_template("gather"), values)
    assert result.returncode == 0, result.stderr
    summary = json.loads(bucket.parameters["summary"])
    assert (summary["shards"], summary["rows"], summary["scored"], summary["rejected"]) == (3, 143, 140, 3)
    out = pd.read_csv(bucket.root / "scores" / "2026-11-30.csv")
    assert out["id"].tolist() == [i for n, i in enumerate(test_frame["id"]) if n % 48 != 0]
    rejects = (bucket.root / "scores" / "2026-11-30.csv.rejects.jsonl").read_text().splitlines()
    assert [json.loads(r)["shard"] for r in rejects] == [
        f"incoming/2026-11-30/part-{i:04d}.csv" for i in range(3)
    ]
    parts = bucket.root / "scores" / "2026-11-30.csv.parts" / "batch-score-x7k2p" / "incoming" / "2026-11-30"
    assert sorted(p.name for p in parts.iterdir() if p.suffix == ".csv") == [
        f"part-{i:04d}.csv" for i in range(3)
    ]
