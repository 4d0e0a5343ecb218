"""The images a cluster would pull: the template's placeholder digests and tag-only references are named,
each with where it is, and a project that pins every image by a real digest is fine."""

from __future__ import annotations

import re
from pathlib import Path

from doctor_project import REPO

from doctor import images
from doctor.project import Project
from doctor.report import Status

REAL = "@sha256:" + "ab12" * 16


def _findings(root: Path) -> dict[str, images.Finding]:
    return {f.check: f for f in images.check(Project(root))}


def test_the_template_s_placeholders_are_warned_about_with_their_places() -> None:
    found = _findings(REPO)
    runtime = found["sluice-runtime digest"]
    assert runtime.status is Status.WARN  # `sluice up` needs no image: not a missing piece, a cluster to-do
    assert runtime.where.startswith("pipelines/conventions.py: RUNTIME_IMAGE")
    assert "RUNTIME_IMAGE" in runtime.fix and "make render" in runtime.fix
    serving = found["sluice-serving digest"]
    assert "gitops/environments/staging/seldondeployment.yaml" in serving.where
    assert "environments/local/" not in serving.where  # processes there, no containers
    tag_only = found["sluice-runtime pinned"]
    assert "gitops/router/deployment.yaml" in tag_only.where
    # a build step's push destination is not an image anything pulls
    assert "sluice-serving pinned" not in found


def test_a_project_pinned_by_real_digests_is_fine(project: Path) -> None:
    for file in [
        project / "pipelines/conventions.py",
        *project.glob("gitops/**/*.yaml"),
        *project.glob("pipelines/rendered/*.yaml"),
    ]:
        text = file.read_text()
        pinned = re.sub(r"@sha256:0{64}", REAL, text).replace('"0" * 64', '"ab12" * 16')
        pinned = re.sub(r"(/sluice-(?:runtime|serving|router):[\w.-]+)(?=\s|$|['\"])", rf"\1{REAL}", pinned)
        if pinned != text:
            file.write_text(pinned)
    found = _findings(project)
    assert [f.status for f in found.values()] == [Status.OK], found
    assert "pinned by a real digest" in found["image digests"].detail


def test_one_placeholder_left_behind_is_named(project: Path) -> None:
    conventions = project / "pipelines/conventions.py"
    conventions.write_text(conventions.read_text().replace('"0" * 64', '"cd34" * 16'))
    found = _findings(project)
    # the rendered templates still carry the zeros: `make render` was forgotten, and the doctor says where
    runtime = found["sluice-runtime digest"]
    assert "RUNTIME_IMAGE" not in runtime.where and "pipelines/rendered/" in runtime.where
