"""What `sluice gitops check` runs on a pull request: every manifest against its schema, plus checks that
plug in by kind (the rollout guardrails on SeldonDeployments and InferenceServices) and a validator for policy
files.

This module knows nothing of rollout/: the CLI passes the guardrail and policy checks in, so the layers stay
apart and any other check (a team's own rule) plugs in the same way. Results are per file, and render as
Markdown for a GitHub job summary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.schemas import SCHEMA_DIR, describe, load_documents, validate_document

# (field, problem) pairs: what a plugged-in check returns.
Issues = list[tuple[str, str]]
DocumentCheck = Callable[[dict[str, Any]], Issues]
FileCheck = Callable[[Path], Issues]


@dataclass(frozen=True)
class KindCheck:
    """A check run on every document of one kind (None: every document)."""

    name: str
    kind: str | None
    run: DocumentCheck


@dataclass(frozen=True)
class Checks:
    documents: tuple[KindCheck, ...] = ()
    policy: FileCheck | None = None


@dataclass(frozen=True)
class Finding:
    file: str
    obj: str
    check: str
    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}: {self.obj}: {self.field or '(document)'}: {self.problem} [{self.check}]"


@dataclass
class FileReport:
    path: Path
    objects: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def is_policy(path: Path) -> bool:
    return path.parent.name == "policies"


def discover(paths: Iterable[Path]) -> list[Path]:
    """YAML files under the given paths (files are taken as given); the schemas themselves are skipped."""
    found: set[Path] = set()
    for path in paths:
        if path.is_dir():
            found.update(p for p in path.rglob("*.y*ml") if p.suffix in {".yaml", ".yml"})
        else:
            found.add(path)
    schemas = SCHEMA_DIR.resolve()
    return sorted(p for p in found if not p.resolve().is_relative_to(schemas))


def check_file(path: Path, checks: Checks) -> FileReport:
    report = FileReport(path)
    where = str(path)
    if not path.is_file():
        report.findings.append(Finding(where, "-", "read", "", "no such file"))
        return report
    if is_policy(path):
        report.objects.append("policy")
        if checks.policy is not None:
            report.checks.append("policy")
            for fld, problem in checks.policy(path):
                report.findings.append(Finding(where, "policy", "policy", fld, problem))
        return report
    docs, parse_problems = load_documents(path)
    report.checks.append("schema")
    for p in parse_problems:
        report.findings.append(Finding(where, "-", "yaml", p.field, p.message))
    for doc in docs:
        obj = describe(doc) if isinstance(doc, dict) else "?"
        report.objects.append(obj)
        for p in validate_document(doc, where):
            report.findings.append(Finding(where, obj, "schema", p.field, p.message))
        if not isinstance(doc, dict):
            continue
        for check in checks.documents:
            if check.kind is None or doc.get("kind") == check.kind:
                if check.name not in report.checks:
                    report.checks.append(check.name)
                for fld, problem in check.run(doc):
                    report.findings.append(Finding(where, obj, check.name, fld, problem))
    return report


def check_paths(paths: Iterable[Path], checks: Checks) -> list[FileReport]:
    return [check_file(path, checks) for path in discover(paths)]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(reports: list[FileReport]) -> str:
    """A GitHub job summary: a verdict line, one row per file, then one row per problem."""
    bad = [r for r in reports if not r.ok]
    findings = [f for r in bad for f in r.findings]
    lines = [
        "## sluice gitops check",
        "",
        (
            f"**{len(findings)} problem(s)** in {len(bad)} of {len(reports)} file(s)."
            if bad
            else f"All {len(reports)} file(s) pass: schemas, guardrails and policies."
        ),
        "",
        "| file | objects | checks | result |",
        "| --- | --- | --- | --- |",
    ]
    for r in reports:
        verdict = "pass" if r.ok else f"**{len(r.findings)} problem(s)**"
        lines.append(
            f"| `{_cell(str(r.path))}` | {_cell(', '.join(r.objects) or '-')} | {', '.join(r.checks)} | {verdict} |"
        )
    if findings:
        lines += [
            "",
            "### Problems",
            "",
            "| file | object | field | problem | check |",
            "| --- | --- | --- | --- | --- |",
        ]
        for f in findings:
            lines.append(
                f"| `{_cell(f.file)}` | {_cell(f.obj)} | `{_cell(f.field or '(document)')}` | {_cell(f.problem)} | {f.check} |"
            )
    return "\n".join(lines) + "\n"


def github_annotations(reports: list[FileReport]) -> list[str]:
    """`::error file=...` workflow commands, so each problem shows on the PR's Files tab."""

    def escape(text: str) -> str:
        return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    def prop(text: str) -> str:
        return escape(text).replace(":", "%3A").replace(",", "%2C")

    return [
        f"::error file={prop(f.file)},title={prop(f'{f.check}: {f.field or f.obj}')}::{escape(f.problem)}"
        for r in reports
        for f in r.findings
    ]
