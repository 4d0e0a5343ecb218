"""One monitoring run, as `sluice monitor` and `sluice loop` do it: read the log, assess, export, report."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from model.contract import Contract
from monitor.assess import Assessment, Thresholds, assess
from monitor.follow import Follower
from monitor.records import Log, Scope, read_log


@dataclass
class Run:
    log: Log
    assessments: list[Assessment]
    thresholds: Thresholds
    at: float

    @property
    def reasons(self) -> list[str]:
        out = []
        for a in self.assessments:
            out += [f"{a.predictor}: {r}" for r in a.reasons(self.thresholds)]
        return out


def run_once(
    log_dir: str | Path,  # a directory or a redis:// stream URL (ignored with `follower`)
    contract: Contract,
    thresholds: Thresholds,
    *,
    namespace: str | None = None,
    deployment: str | None = None,
    window: float | None = None,
    label_window: float = 86400.0,
    now: float | None = None,
    follower: Follower | None = None,
) -> Run:
    """Read the log (the whole of it, or with `follower` what is new since its last read), assess, label."""
    now = time.time() if now is None else now
    scope = Scope(namespace, deployment, since=None if window is None else now - window)
    if follower is not None:
        log = follower.read(contract, scope, label_window)
    else:
        log = read_log(log_dir, contract, scope, label_window)
    found = assess(log, contract, thresholds, namespace or "", deployment or "")
    for a in found:  # labels from the records themselves unless given
        ns, dep = log.where.get(a.predictor, ("", ""))
        a.namespace, a.deployment = namespace or ns, deployment or dep
    return Run(log, found, thresholds, now)
