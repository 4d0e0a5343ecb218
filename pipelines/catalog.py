"""Every Argo object Sluice renders, by name, and how it is written to pipelines/rendered/.

`sluice pipelines render` writes them; a test renders again and compares with the committed files, the way
hera checks its own examples (set SLUICE_REGENERATE=1 to refresh the files instead).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

RENDERED_DIR = Path(__file__).resolve().parent / "rendered"
MODULE_ADMISSION = "pipelines/admission.py"


@dataclass(frozen=True)
class Pipeline:
    """One renderable object: its name in Argo, the module that defines it, and how to build it."""

    name: str
    kind: str
    module: str
    build: Callable[[], dict[str, Any]]

    @property
    def filename(self) -> str:
        return f"{self.name}.{self.kind.lower()}.yaml"

    @property
    def submittable(self) -> bool:
        return self.kind == "WorkflowTemplate"


def _hera(factory: Callable[[], Any]) -> Callable[[], dict[str, Any]]:
    return lambda: factory().to_dict()


def catalog() -> list[Pipeline]:
    from pipelines import admission, batch, build_image, events, promote, retrain, retrain_from_log, train

    return [
        Pipeline(train.NAME, "WorkflowTemplate", "pipelines/train.py", _hera(train.build)),
        Pipeline(build_image.NAME, "WorkflowTemplate", "pipelines/build_image.py", _hera(build_image.build)),
        Pipeline(promote.NAME, "WorkflowTemplate", "pipelines/promote.py", _hera(promote.build)),
        Pipeline(batch.NAME, "WorkflowTemplate", "pipelines/batch.py", _hera(batch.build)),
        Pipeline(batch.CRON_NAME, "CronWorkflow", "pipelines/batch.py", _hera(batch.build_cron)),
        Pipeline(
            events.EVENT_SOURCE_NAME,
            "EventSource",
            "pipelines/events.py",
            lambda: dict(events.event_source()),
        ),
        Pipeline(events.SENSOR_NAME, "Sensor", "pipelines/events.py", lambda: dict(events.sensor())),
        Pipeline(
            admission.WORKFLOWS_POLICY,
            "ValidatingAdmissionPolicy",
            MODULE_ADMISSION,
            admission.workflows_policy,
        ),
        Pipeline(
            admission.WORKFLOWS_POLICY,
            "ValidatingAdmissionPolicyBinding",
            MODULE_ADMISSION,
            admission.workflows_binding,
        ),
        Pipeline(admission.PODS_POLICY, "ValidatingAdmissionPolicy", MODULE_ADMISSION, admission.pods_policy),
        Pipeline(
            admission.PODS_POLICY,
            "ValidatingAdmissionPolicyBinding",
            MODULE_ADMISSION,
            admission.pods_binding,
        ),
        Pipeline(
            retrain_from_log.NAME,
            "WorkflowTemplate",
            "pipelines/retrain_from_log.py",
            _hera(retrain_from_log.build),
        ),
        Pipeline(retrain.CRON_NAME, "CronWorkflow", "pipelines/retrain.py", _hera(retrain.build_cron)),
        Pipeline(
            retrain.EVENT_SOURCE_NAME,
            "EventSource",
            "pipelines/retrain.py",
            lambda: dict(retrain.event_source()),
        ),
        Pipeline(retrain.SENSOR_NAME, "Sensor", "pipelines/retrain.py", lambda: dict(retrain.sensor())),
    ]


def by_name(name: str) -> Pipeline:
    for pipeline in catalog():
        if pipeline.name == name and pipeline.kind in (
            "WorkflowTemplate",
            "CronWorkflow",
            "EventSource",
            "Sensor",
        ):
            return pipeline
    for pipeline in catalog():
        if pipeline.name == name:
            return pipeline
    known = ", ".join(p.name for p in catalog())
    raise KeyError(f"no pipeline named {name!r} (known: {known})")


def to_yaml(pipeline: Pipeline) -> str:
    header = (
        f"# Rendered by `sluice pipelines render` from {pipeline.module}: edit the Python, not this file.\n"
    )
    return header + yaml.safe_dump(pipeline.build(), sort_keys=False, width=110, allow_unicode=True)


def render_all(directory: Path = RENDERED_DIR) -> dict[Path, str]:
    """The files `render` writes: path -> YAML text."""
    return {directory / p.filename: to_yaml(p) for p in catalog()}


def stale(directory: Path = RENDERED_DIR) -> list[Path]:
    """Files that are missing, extra, or whose content differs from what the Python renders.

    Content, not text: the same object dumped by another PyYAML or hera release (key order, line width) is
    not stale; a changed field, a missing header or a hand edit is.
    """
    files = render_all(directory)
    out = sorted(set(directory.glob("*.yaml")) - set(files))
    for path, text in files.items():
        if not path.exists():
            out.append(path)
            continue
        on_disk = path.read_text()
        if on_disk.splitlines()[:1] != text.splitlines()[:1] or yaml.safe_load(on_disk) != yaml.safe_load(
            text
        ):
            out.append(path)
    return out


def write_all(directory: Path = RENDERED_DIR) -> list[Path]:
    """Write every rendered file and remove stale ones; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    files = render_all(directory)
    for stale in set(directory.glob("*.yaml")) - set(files):
        stale.unlink()
    for path, text in files.items():
        path.write_text(text)
    return sorted(files)
