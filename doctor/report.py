"""What a check found: one row of the doctor's table (fine, missing, a warning, or skipped), with how to fix it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    OK = "ok"
    MISSING = "missing"  # required and not there: `sluice doctor` exits non-zero
    WARN = "warn"  # worth fixing, but nothing breaks without it
    SKIPPED = "skipped"  # not configured here (no URL, no token): says how to enable it


@dataclass(frozen=True)
class Finding:
    """One check's outcome. `where` names the file and field (or the URL) the finding is about."""

    area: str
    check: str
    status: Status
    detail: str
    fix: str = ""
    where: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": str(self.status)}


def ok(area: str, check: str, detail: str, where: str = "") -> Finding:
    return Finding(area, check, Status.OK, detail, "", where)


def missing(area: str, check: str, detail: str, fix: str, where: str = "") -> Finding:
    return Finding(area, check, Status.MISSING, detail, fix, where)


def warn(area: str, check: str, detail: str, fix: str, where: str = "") -> Finding:
    return Finding(area, check, Status.WARN, detail, fix, where)


def skipped(area: str, check: str, detail: str, fix: str = "") -> Finding:
    return Finding(area, check, Status.SKIPPED, detail, fix)


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    def extend(self, findings: Iterable[Finding]) -> None:
        self.findings.extend(findings)

    @property
    def healthy(self) -> bool:
        """True when nothing required is missing (warnings and skipped checks do not count)."""
        return all(f.status is not Status.MISSING for f in self.findings)

    def counts(self) -> dict[str, int]:
        return {s.value: sum(f.status is s for f in self.findings) for s in Status}

    def as_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "counts": self.counts(),
            "findings": [f.as_dict() for f in self.findings],
        }
