"""The project as the doctor reads it: its YAML documents (manifests, policies, workflows, rendered
pipelines), the literal settings of pipelines/conventions.py (read with `ast`, never imported: the project
checked need not be the one installed) and params.yaml."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

# Where the names live: every YAML file under these folders is read.
YAML_ROOTS = ("gitops", "policies", "pipelines/rendered", ".github/workflows")
SKIP = ("gitops/schemas",)
LOADER = getattr(
    yaml, "CSafeLoader", yaml.SafeLoader
)  # libyaml's parser when PyYAML was built with it  # upstream schemas, not the project's objects


class ProjectError(Exception):
    """A project file the doctor cannot read (it names the file and why)."""


@dataclass(frozen=True)
class Document:
    path: str  # relative to the project root
    index: int  # the document's position in a multi-document file
    body: Any

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", "")) if isinstance(self.body, dict) else ""

    @property
    def name(self) -> str:
        meta = self.body.get("metadata") if isinstance(self.body, dict) else None
        return str(meta.get("name", "")) if isinstance(meta, dict) else ""

    @property
    def namespace(self) -> str | None:
        meta = self.body.get("metadata") if isinstance(self.body, dict) else None
        value = meta.get("namespace") if isinstance(meta, dict) else None
        return None if value is None else str(value)

    def where(self, field_path: str) -> str:
        doc = f"#{self.index}" if self.index else ""
        return f"{self.path}{doc}: {field_path}"


def first_visit(node: Any, seen: set[int]) -> bool:
    """False when `node` is a mapping or list already walked: a YAML alias is the very object of its anchor."""
    if not isinstance(node, dict | list):
        return True
    if id(node) in seen:
        return False
    seen.add(id(node))
    return True


def leaves(node: Any, prefix: str = "", seen: set[int] | None = None) -> Iterator[tuple[str, str]]:
    """Every string leaf of a YAML tree with its dotted path (`spec.predictors.0.graph.parameters.0.value`).

    A YAML alias is the same object as its anchor: each mapping and list is walked once, so a file of nested
    aliases (a "billion laughs" document in a pull request) costs its size, not its expansion."""
    seen = set() if seen is None else seen
    if not first_visit(node, seen):
        return
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, f"{prefix}.{key}" if prefix else str(key), seen)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from leaves(value, f"{prefix}.{i}" if prefix else str(i), seen)
    elif isinstance(node, str):
        yield prefix, node


@dataclass
class Project:
    root: Path
    problems: list[str] = field(default_factory=list)  # files that could not be read

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    @cached_property
    def documents(self) -> list[Document]:
        docs: list[Document] = []
        for top in YAML_ROOTS:
            base = self.root / top
            if not base.is_dir():
                continue
            for file in sorted([*base.rglob("*.yaml"), *base.rglob("*.yml")]):
                rel = file.relative_to(self.root).as_posix()
                if rel.startswith(SKIP):
                    continue
                try:
                    bodies = list(yaml.load_all(file.read_text(), Loader=LOADER))
                except (yaml.YAMLError, UnicodeDecodeError) as exc:
                    self.problems.append(f"{rel}: not valid YAML ({exc.__class__.__name__}: {exc})")
                    continue
                docs.extend(Document(rel, i, b) for i, b in enumerate(bodies) if b is not None)
        return docs

    def under(self, prefix: str) -> list[Document]:
        return [d for d in self.documents if d.path.startswith(prefix)]

    @cached_property
    def params(self) -> dict[str, Any]:
        path = self.root / "params.yaml"
        if not path.is_file():
            return {}
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            self.problems.append(f"params.yaml: not valid YAML ({exc})")
            return {}
        return loaded if isinstance(loaded, dict) else {}

    @cached_property
    def conventions(self) -> dict[str, Any]:
        """The module-level constants of pipelines/conventions.py that are literals or f-strings of literals."""
        path = self.root / "pipelines" / "conventions.py"
        if not path.is_file():
            return {}
        try:
            tree = ast.parse(path.read_text(), filename=str(path))
        except SyntaxError as exc:
            self.problems.append(f"pipelines/conventions.py: {exc}")
            return {}
        values: dict[str, Any] = {}
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            ):
                try:
                    values[node.targets[0].id] = _evaluate(node.value, values)
                except ValueError:
                    continue
        return values

    def environments(self) -> list[str]:
        """The environments with a directory of manifests (gitops/environments/<env>/)."""
        base = self.root / "gitops" / "environments"
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def serving_document(self, env: str) -> Document | None:
        """The environment's SeldonDeployment or InferenceService (what the rollout engine edits)."""
        for doc in self.under(f"gitops/environments/{env}/"):
            if doc.kind in ("SeldonDeployment", "InferenceService"):
                return doc
        return None


def _evaluate(node: ast.expr, known: dict[str, Any]) -> Any:
    """A constant expression of literals, names assigned before, `+`, f-strings and conditional expressions."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in known:
        return known[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return not _evaluate(node.operand, known)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mult):
        left, right = _evaluate(node.left, known), _evaluate(node.right, known)
        return left + right if isinstance(node.op, ast.Add) else left * right
    if isinstance(node, ast.IfExp):
        return _evaluate(node.body if _evaluate(node.test, known) else node.orelse, known)
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                parts.append(str(_evaluate(value.value, known)))
            else:
                parts.append(str(_evaluate(value, known)))
        return "".join(parts)
    raise ValueError(ast.dump(node))
