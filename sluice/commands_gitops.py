"""`sluice gitops check`: the manifests and policies a pull request touches, checked before Argo CD sees them.

Schemas for every manifest (pipelines/schemas.py), the rollout guardrails on SeldonDeployments and KServe
InferenceServices (rollout.guardrails.check_manifest), policy validity (rollout.policy.load_policy), and whether the environment's
traffic path can deliver what the policy needs (serving.router.capabilities). Registered on the top-level app
by sluice/cli.py.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sluice.console import console, report

if TYPE_CHECKING:
    from pipelines.gitops_check import Checks, FileReport, Issues

app = typer.Typer(help="Check GitOps manifests and promotion policies (what CI runs on pull requests).")


class Format(StrEnum):
    table = "table"
    github = "github"


def guardrail_issues(doc: dict[str, Any]) -> Issues:
    from rollout.guardrails import check_manifest

    return [(v.path, f"{v.message} [{v.rule}]") for v in check_manifest(doc)]


def policy_issues(path: Path) -> Issues:
    from rollout.policy import PolicyError, load_policy

    try:
        policy = load_policy(path)
    except PolicyError as e:
        # "file: field: reason; field: reason" -> one issue per field
        text = str(e).removeprefix(f"{path}: ")
        issues = []
        for part in text.split("; "):
            fld, sep, reason = part.partition(": ")
            issues.append((fld, reason) if sep and " " not in fld else ("", part))
        return issues
    return traffic_issues(path, policy.model_dump())


def traffic_issues(path: Path, policy: dict[str, Any]) -> Issues:
    """Features the policy needs that its environment's traffic path cannot deliver (policies/<env>.yaml is
    the policy of gitops/environments/<env>/ in the same repository)."""
    from serving.router.capabilities import problems, traffic_path

    repo = path.resolve().parent.parent
    env_dir = repo / "gitops" / "environments" / path.stem
    if not env_dir.is_dir():
        return []
    return problems(policy, path.stem, traffic_path(env_dir, repo))


def default_checks() -> Checks:
    from pipelines.gitops_check import Checks, KindCheck

    return Checks(
        documents=(
            KindCheck("guardrails", "SeldonDeployment", guardrail_issues),
            KindCheck("guardrails", "InferenceService", guardrail_issues),
        ),
        policy=policy_issues,
    )


def objects_summary(objects: list[str]) -> str:
    """`SeldonDeployment/sluice-classifier`, or `ConfigMap x4` / `Role x2, RoleBinding x2` for many."""
    if len(objects) <= 1:
        return objects[0] if objects else "-"
    kinds: dict[str, int] = {}
    for obj in objects:
        kind = obj.split("/")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    return ", ".join(f"{kind} x{n}" if n > 1 else kind for kind, n in kinds.items())


def _table(reports: list[FileReport]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="sluice gitops check", title_justify="left")
    table.add_column("file", overflow="fold")
    table.add_column("objects", overflow="fold")
    table.add_column("checks")
    table.add_column("result")
    for r in reports:
        result = "[green]pass[/]" if r.ok else f"[red]{len(r.findings)} problem(s)[/]"
        table.add_row(escape(str(r.path)), escape(objects_summary(r.objects)), ", ".join(r.checks), result)
    console.print(table)
    for r in reports:
        for f in r.findings:
            # Everything but the colours comes from the files checked: printed as text, never as markup.
            where = escape(f"{f.file}: {f.obj}: ")
            console.print(
                f"[red]✗[/] {where}[bold]{escape(f.field or '(document)')}[/]: {escape(f.problem)} "
                f"[dim]({escape(f.check)})[/]",
                highlight=False,
            )


@app.command("check")
def check(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Files or directories to check (default: gitops/, policies/, pipelines/rendered/)."
        ),
    ] = None,
    output: Annotated[
        Format,
        typer.Option(
            "--format",
            help="table: a terminal table. github: Markdown to $GITHUB_STEP_SUMMARY + annotations.",
        ),
    ] = Format.table,
) -> None:
    """Validate manifests (schemas, guardrails) and policies; exit 1 naming file, field and problem."""
    from pipelines.gitops_check import check_paths, github_annotations, to_markdown

    targets = paths or [
        p for p in (Path("gitops"), Path("policies"), Path("pipelines/rendered")) if p.exists()
    ]
    if not targets:
        report("nothing to check: no gitops/ or policies/ here, and no paths given")
    reports = check_paths(targets, default_checks())
    if not reports:
        report(f"no YAML files under {', '.join(map(str, targets))}")
    if output is Format.github:
        markdown = to_markdown(reports)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            with open(summary, "a", encoding="utf-8") as f:
                f.write(markdown)
        print(markdown)
        for line in github_annotations(reports):
            print(line)
    else:
        _table(reports)
    problems = sum(len(r.findings) for r in reports)
    if problems:
        report(f"{problems} problem(s) in {sum(not r.ok for r in reports)} file(s)")
    if output is Format.table:
        console.print(f"[green]{len(reports)} file(s) pass[/]", highlight=False)


def register(app_: typer.Typer) -> None:
    """Add this module's commands to the `sluice` app."""
    app_.add_typer(app, name="gitops")
