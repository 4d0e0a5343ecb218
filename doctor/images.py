"""The project's own images as a cluster would pull them: a placeholder digest (all zeros, what the template
ships until a release builds the image) cannot be pulled, and a tag alone lets a re-pushed tag change what
runs. `sluice up` needs neither, so these are warnings: the cluster path is not wired yet."""

from __future__ import annotations

import re
from collections.abc import Iterator

from doctor.names import IMAGE
from doctor.project import Project, leaves
from doctor.report import Finding, ok, warn

AREA = "images"
PLACEHOLDER = "@sha256:" + "0" * 64
SHOWN = 3  # places named per finding; the count says how many more
# The whole reference: <registry>/<sluice-...>[:tag][@sha256:digest]
REFERENCE = re.compile(IMAGE.pattern + r"(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?")
BUILD = {
    "sluice-runtime": (
        "build and push `serving/Dockerfile --target runtime`, put its digest in RUNTIME_IMAGE "
        "(pipelines/conventions.py) and in gitops/, then `make render` (docs/cluster.md, Images)"
    ),
    "sluice-serving": (
        "the model image is built when a model is promoted (build-image workflow); until then Seldon cannot pull "
        "this predictor's container"
    ),
}


def _places(places: list[str]) -> str:
    shown = ", ".join(places[:SHOWN])
    return shown + (f" and {len(places) - SHOWN} more" if len(places) > SHOWN else "")


def references(project: Project) -> Iterator[tuple[str, str, bool]]:
    """(where, image reference, whether a container pulls it there) of every mention of the project's own
    images in what a cluster runs; a build step's push destination or an admission rule only mentions it."""
    runtime = project.conventions.get("RUNTIME_IMAGE")
    if isinstance(runtime, str):
        for m in REFERENCE.finditer(runtime):
            yield "pipelines/conventions.py: RUNTIME_IMAGE", m[0], True
    for doc in project.documents:
        if doc.path.startswith((".github/", "gitops/environments/local/")):
            continue  # workflows build images; the local environment runs processes, not containers
        for path, value in leaves(doc.body):
            for m in REFERENCE.finditer(value):
                yield doc.where(path), m[0], path.rsplit(".", 1)[-1] == "image"


def check(project: Project) -> Iterator[Finding]:
    placeholder: dict[str, list[str]] = {}
    by_tag: dict[str, list[str]] = {}
    pinned: list[str] = []
    for where, ref, pulled in references(project):
        name = ref.split("@", 1)[0].rsplit("/", 1)[1].split(":", 1)[0]
        if ref.endswith(PLACEHOLDER):
            placeholder.setdefault(name, []).append(where)
        elif pulled and "@sha256:" not in ref:
            by_tag.setdefault(name, []).append(where)
        elif pulled:
            pinned.append(where)
    for name, places in sorted(placeholder.items()):
        yield warn(
            AREA,
            f"{name} digest",
            f"a placeholder (all-zero sha256) in {len(places)} place(s): a cluster cannot pull it",
            BUILD.get(name, "pin the image by the digest you pushed"),
            _places(places),
        )
    for name, places in sorted(by_tag.items()):
        yield warn(
            AREA,
            f"{name} pinned",
            f"by tag only in {len(places)} place(s): a re-pushed tag changes what runs",
            "add @sha256:<digest> of the image you pushed",
            _places(places),
        )
    if not placeholder and not by_tag:
        yield ok(AREA, "image digests", f"{len(pinned)} image reference(s), each pinned by a real digest")
