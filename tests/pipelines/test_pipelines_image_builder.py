"""The serving image is built by BuildKit, rootless, pinned by digest: the rendered step's script run under
BusyBox sh (the shell of BuildKit's Alpine image) against a stand-in `buildctl-daemonless.sh` that records its
argv and answers with the metadata file buildctl writes; hostile parameters never reach it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines import admission
from pipelines.catalog import RENDERED_DIR
from pipelines.conventions import BUILDKIT_IMAGE, SERVING_IMAGE_REPO

SHA = "3f786850e387550fdab836ed7e6dc881de23001b"
DIGEST = "sha256:" + "ab" * 32
PUSHED = "sha256:" + "cd" * 32
# What `buildctl build --metadata-file` writes (json.MarshalIndent of the exporter response), trimmed.
METADATA = {
    "buildx.build.ref": "x",
    "containerimage.config.digest": "sha256:" + "ef" * 32,
    "containerimage.digest": PUSHED,
    "image.name": f"{SERVING_IMAGE_REPO}:{SHA}",
}
FAKE_BUILDCTL = """#!/bin/sh
printf '%s\\n' "$@" > "$CALLS"
for arg in "$@"; do
  case "$arg" in --metadata-file=*) metadata="${arg#--metadata-file=}" ;; esac
done
[ -n "$ANSWER" ] && printf '%s' "$ANSWER" > "$metadata"
exit 0
"""


def _step() -> dict[str, Any]:
    doc = yaml.safe_load((RENDERED_DIR / "build-serving-image.workflowtemplate.yaml").read_text())
    return next(t for t in doc["spec"]["templates"] if t["name"] == "buildkit")


def _shell() -> list[str]:
    busybox = shutil.which("busybox")
    return [busybox, "sh"] if busybox else ["dash"]  # scripts/services.sh installs busybox for `make test`


def _run(tmp_path: Path, revision: str, digest: str, answer: str | None = None) -> tuple[int, str, list[str]]:
    """The rendered container as Argo runs it: its command, env with the parameters substituted."""
    step = _step()["container"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "buildctl-daemonless.sh").write_text(FAKE_BUILDCTL)
    (bin_dir / "buildctl-daemonless.sh").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(tmp_path / "calls")}
    env["ANSWER"] = json.dumps(METADATA, indent=2) if answer is None else answer
    for item in step["env"]:
        value = item["value"].replace("{{workflow.parameters.revision}}", revision)
        env[item["name"]] = value.replace("{{workflow.parameters.bundle-digest}}", digest)
    script = step["command"][2].replace("/tmp/outputs", str(tmp_path / "outputs"))
    result = subprocess.run(
        [*_shell(), "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
    )
    calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    return result.returncode, result.stdout + result.stderr, calls


def test_the_build_pushes_by_tag_and_outputs_the_pushed_digest(tmp_path: Path) -> None:
    code, output, argv = _run(tmp_path, SHA, DIGEST)
    assert code == 0, output
    assert argv[0] == "build" and "--frontend=dockerfile.v0" in argv and "--opt=target=serving" in argv
    assert f"--opt=build-arg:BUNDLE_DIGEST={DIGEST}" in argv
    assert f"--opt=label:org.opencontainers.image.revision={SHA}" in argv
    assert f"--output=type=image,name={SERVING_IMAGE_REPO}:{SHA},push=true" in argv
    assert (tmp_path / "outputs" / "image-digest").read_text() == PUSHED
    assert (tmp_path / "outputs" / "image").read_text() == f"{SERVING_IMAGE_REPO}:{SHA}@{PUSHED}"


HOSTILE = [
    f"{SHA},name=docker.io/attacker/x",  # a second image name in BuildKit's output attributes
    f"{SHA}\n{SHA}",  # one good line among two
    '$(touch PWNED)"',
    "`touch PWNED`",
    "",
]


@pytest.mark.parametrize("which", ["revision", "digest"])
@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_parameters_stop_the_step_before_buildkit_runs(
    tmp_path: Path, which: str, value: str
) -> None:
    revision, digest = (value, DIGEST) if which == "revision" else (SHA, value)
    code, output, argv = _run(tmp_path, revision, digest)
    assert code == 2 and "not a" in output, output
    assert argv == [] and not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    "answer",
    [
        "",
        json.dumps({"image.name": "x"}, indent=2),
        json.dumps({"containerimage.digest": "sha256:12"}, indent=2),
    ],
    ids=["no-metadata", "no-digest", "short-digest"],
)
def test_a_build_that_reports_no_digest_fails_instead_of_outputting_one(tmp_path: Path, answer: str) -> None:
    code, output, _ = _run(tmp_path, SHA, DIGEST, answer=answer)
    assert code != 0 and not (tmp_path / "outputs" / "image-digest").exists(), output


def test_rootless_buildkit_pinned_by_digest_and_admitted() -> None:
    from admission_cel import admitted

    step = _step()
    assert step["container"]["image"] == BUILDKIT_IMAGE
    assert re.fullmatch(r"docker\.io/moby/buildkit:v[0-9.]+-rootless@sha256:[0-9a-f]{64}", BUILDKIT_IMAGE)
    assert BUILDKIT_IMAGE in admission.pinned_images()
    assert not any("kaniko" in image for image in admission.pinned_images())
    pod = {
        "metadata": {"labels": {admission.WORKFLOW_LABEL: "build-serving-image-x7k2p"}},
        "spec": {"containers": [{"name": "main", "image": BUILDKIT_IMAGE}]},
    }
    assert admitted(admission.pods_policy(), pod) == []
    other = BUILDKIT_IMAGE.replace("v0.32.2-rootless", "v0.32.2")  # the root image under the same digest
    pod["spec"]["containers"][0]["image"] = other
    assert admitted(admission.pods_policy(), pod)
    context = step["container"]["securityContext"]
    assert context["seccompProfile"]["type"] == context["appArmorProfile"]["type"] == "Unconfined"
    assert {"name": "BUILDKITD_FLAGS", "value": "--oci-worker-no-process-sandbox"} in step["container"]["env"]
