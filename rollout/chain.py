"""The environment chain: a model promoted in one environment is proposed to the next, with the evidence.

Environments are ordered (e.g. local -> staging -> production). For each consecutive pair (a, b),
`chain_step` finds the newest promotion in a (a commit on main whose `Sluice-Action` is `promote` and that
changed a's manifest), reads the model a now serves, and opens its rollout in b (`rollout.reconciler.start`),
carrying a's evidence in the proposal: a's gate table (its `Sluice-Gate` trailers: n, estimate, interval,
decision), how long a's rollout took, and the promotion commit, named by a `Sluice-Promoted-In: <a> <commit>`
trailer. The production policy may ask for approval; that stays a person's merge.

It never proposes twice (a proposal already carrying that trailer is in b's history, or b already serves the
model), never preempts a rollout in progress in b, and never proposes a model quarantined in b (rolled back
there before) or one a rolled back: both are reported and left for a person.
"""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PROMOTED_IN = "Sluice-Promoted-In"


@dataclass(frozen=True)
class ChainOutcome:
    source: str
    target: str
    step: str  # proposed, done, waiting, refused, nothing
    detail: str


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def _commits(repo: Path, paths: Sequence[str], main: str = "main") -> list[tuple[str, float, str]]:
    """(sha, time, message) of main's first-parent commits that changed `paths`, newest first."""
    out = _git(repo, "log", "--first-parent", "--format=%x1e%H %ct%n%B", main, "--", *paths)
    commits = []
    for chunk in out.split("\x1e")[1:]:
        head, _, body = chunk.partition("\n")
        sha, stamp = head.split()
        commits.append((sha, float(stamp), body))
    return commits


def chain_step(repo: Path, order: Sequence[str]) -> list[ChainOutcome]:
    """One pass over the chain: at most one proposal per pair."""
    from deployment import kinds
    from rollout import evidence, quarantine
    from rollout.reconciler import start
    from rollout.run import Options, build_environment
    from rollout.scm import manifest_paths
    from rollout.state import StateError

    out = []
    for a, b in itertools.pairwise(order):
        history = _commits(repo, manifest_paths(a))
        promoted = next(
            ((s, t, m) for s, t, m in history if evidence.trailer(m, evidence.ACTION) == "promote"), None
        )
        if promoted is None:
            out.append(ChainOutcome(a, b, "nothing", f"no promotion in {a} yet"))
            continue
        sha, at, message = promoted
        env_a = build_environment(Options(env=a, repo=repo))
        text_a = env_a.scm.read_path(sha, env_a.scm.manifest(a, sha))  # type: ignore[attr-defined]
        try:
            stable = env_a.target.state(text_a).stable_name()
        except StateError as e:
            out.append(ChainOutcome(a, b, "refused", f"{a} at {sha[:12]}: {e}"))
            continue
        predictor = next(p for p in kinds.loads(text_a).predictors if p.name == stable)
        digest, model_uri = predictor.model_digest, predictor.model_uri
        if not digest or not model_uri:
            out.append(ChainOutcome(a, b, "refused", f"{a}: {stable} names no model_digest or model_uri"))
            continue
        now_a = env_a.scm.read(a).text
        if quarantine.find(env_a.target, now_a, digest, stable) is not None:
            out.append(ChainOutcome(a, b, "refused", f"{stable} was rolled back in {a} since: not proposed"))
            continue
        mark = f"{a} {sha}"
        env_b = build_environment(Options(env=b, repo=repo))
        if any(evidence.trailer(m, PROMOTED_IN) == mark for _, _, m in _commits(repo, manifest_paths(b))):
            out.append(
                ChainOutcome(a, b, "done", f"{stable} from {a} ({sha[:12]}) was proposed to {b} already")
            )
            continue
        snap = env_b.scm.read(b)
        state_b = env_b.target.state(snap.text)
        if state_b.rollout is not None and state_b.rollout.active:
            out.append(
                ChainOutcome(a, b, "waiting", f"{b} has a rollout in progress ({state_b.rollout.candidate})")
            )
            continue
        if any(p.name == stable for p in state_b.predictors):
            out.append(ChainOutcome(a, b, "done", f"{b} already serves {stable}"))
            continue
        refused = quarantine.find(env_b.target, snap.text, digest, stable)
        if refused is not None:
            out.append(
                ChainOutcome(a, b, "refused", f"{stable} was rolled back in {b} before: not proposed again")
            )
            continue
        started = next(
            (t for s, t, m in history if t <= at and ": start " in m.splitlines()[0].lower()), None
        )
        gates = [v for k, v in evidence.parse_trailers(message) if k == evidence.GATE]
        lines = [f"Promoted in {a} by {sha[:12]}" + (f" after {at - started:.0f} s" if started else "") + "."]
        lines += (
            ["", f"Gates in {a}:"] + [f"- {g}" for g in gates] if gates else [f"(no gate evidence in {a})"]
        )
        result = start(env_b, model_uri, model_uri, digest, carried=("\n".join(lines), [(PROMOTED_IN, mark)]))
        out.append(
            ChainOutcome(a, b, "proposed", f"{stable} from {a} proposed to {b}: {result.decision.action}")
        )
    return out
