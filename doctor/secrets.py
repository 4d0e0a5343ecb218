"""Secrets are referenced by name only (never a value in Git); each name a manifest, rendered pipeline or
workflow uses must be documented (docs/ or README.md) so whoever sets up a cluster or a repository knows to
create it, in which namespace, with which keys."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from doctor.project import Project, first_visit
from doctor.report import Finding, missing, ok

AREA = "secrets"
WORKFLOW_SECRET = re.compile(r"\$\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
BUILTIN = {"GITHUB_TOKEN"}  # GitHub Actions provides it to every run


def _named(node: Any, parent: str = "", seen: set[int] | None = None) -> Iterator[tuple[str, str]]:
    """(secret name, field) for every reference to a Kubernetes Secret in a manifest tree (each mapping and
    list once: aliases are not expanded)."""
    seen = set() if seen is None else seen
    if not first_visit(node, seen):
        return
    if isinstance(node, dict):
        name = node.get("name")
        if isinstance(name, str) and (parent in ("secretKeyRef", "secretRef") or parent.endswith("Secret")):
            yield name, f"{parent}.name"
        for key, value in node.items():
            if key == "secretName" and isinstance(value, str):
                yield value, key
            elif key == "imagePullSecrets" and isinstance(value, list):
                for item in value:
                    if isinstance(item, dict) and isinstance(item.get("name"), str):
                        yield item["name"], "imagePullSecrets.name"
            else:
                yield from _named(value, str(key), seen)
    elif isinstance(node, list):
        for item in node:
            yield from _named(item, parent, seen)


def referenced(project: Project) -> dict[str, str]:
    """Each secret name and the first place that names it."""
    found: dict[str, str] = {}
    for doc in project.documents:
        for name, field in _named(doc.body):
            found.setdefault(name, doc.where(field))
    workflows = project.root / ".github" / "workflows"
    if workflows.is_dir():
        for file in sorted([*workflows.glob("*.yml"), *workflows.glob("*.yaml")]):
            for m in WORKFLOW_SECRET.finditer(file.read_text(errors="replace")):
                if m[1] not in BUILTIN:
                    found.setdefault(m[1], f"{file.relative_to(project.root).as_posix()}: secrets.{m[1]}")
    return found


def documentation(project: Project) -> str:
    texts = []
    for path in [project.root / "README.md", *sorted((project.root / "docs").glob("**/*.md"))]:
        if path.is_file():
            texts.append(path.read_text(errors="replace"))
    return "\n".join(texts)


def check(project: Project) -> Iterator[Finding]:
    names = referenced(project)
    docs = documentation(project)
    undocumented = {
        n: w for n, w in names.items() if not re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", docs)
    }
    for name, where in sorted(undocumented.items()):
        yield missing(
            AREA,
            f"secret {name}",
            "named in a manifest but documented nowhere (docs/, README.md)",
            "add it to docs/cluster.md, section Secrets: namespace, keys, what reads it, how to create it",
            where,
        )
    if names and not undocumented:
        yield ok(
            AREA, "documented", f"{len(names)} secrets named, each documented: {', '.join(sorted(names))}"
        )
