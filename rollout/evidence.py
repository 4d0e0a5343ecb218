"""Evidence in Git: the trailers every reconciler commit and pull request carries, rendered and read here.

A proposal's message ends with Git trailers, so that `git log`, `git interpret-trailers --parse` and the
reconciler itself read them back without parsing prose:

    Sluice-Gate: accuracy; n=1204/10873; estimate=-0.0031; interval=[-0.0142, +0.0080]; margin=0.02; limit=>= -0.02; decision=pass
    Sluice-Quarantine: sha256:...
    Sluice-Action: advance
    Sluice-Base: 3f2a...

`Sluice-Gate` is one gate's evidence: its name, sample per arm, estimate, interval, margin, limit and verdict
(the A/B test and the bandit each write one too); `Sluice-Quarantine` names a model a rollback quarantined.
`Sluice-Action` is what merging the proposal does (advance, promote, rollback, reallocate, hold for a freeze,
pause or resume); `Sluice-Base` is the main commit its decision was made on. A proposal recovered after a crash
is merged for the action its trailer names, never for what its title happens to say. The pull request's body
carries the same evidence as a table (`evidence_table`).

Trailer values are single lines: anything a policy or a manifest could smuggle in (line breaks, control
characters) is flattened, so no text can forge a trailer of its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rollout.gates import GateResult

GATE = "Sluice-Gate"
ACTION = "Sluice-Action"
BASE = "Sluice-Base"
QUARANTINE = "Sluice-Quarantine"

_TRAILER = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*): (.*)$")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]+")
_OURS = "Sluice-"


def one_line(text: str) -> str:
    """Text with every line break and control character turned into a single space."""
    return _UNSAFE.sub(" ", text).strip()


def cell(text: str) -> str:
    """Text safe inside one Markdown table cell."""
    return one_line(text).replace("|", "\\|")


def render_trailers(pairs: Sequence[tuple[str, str]]) -> str:
    return "\n".join(f"{key}: {one_line(value)}" for key, value in pairs)


def _paragraphs(message: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", message.strip()) if p.strip()]


def _pairs(paragraph: str) -> list[tuple[str, str]] | None:
    matches = [_TRAILER.match(line) for line in paragraph.splitlines()]
    if not matches or not all(matches):
        return None
    return [(m[1], m[2]) for m in matches if m is not None]


def parse_trailers(message: str) -> list[tuple[str, str]]:
    """The trailers of a commit message or body: its last paragraph, when every line of it is `Key: value`."""
    paragraphs = _paragraphs(message)
    if not paragraphs:
        return []
    return _pairs(paragraphs[-1]) or []


def trailer(message: str, key: str) -> str | None:
    """The last value of one trailer in a message, or None."""
    values = [v for k, v in parse_trailers(message) if k.lower() == key.lower()]
    return values[-1] if values else None


def with_trailers(body: str, pairs: Sequence[tuple[str, str]]) -> str:
    """`body` followed by `pairs` as trailers. When the body already ends with a paragraph of Sluice trailers,
    the new ones join it (Git reads only the last paragraph as trailers); otherwise they start a new one."""
    if not pairs:
        return body
    if not body.strip():
        return render_trailers(pairs) + "\n"
    paragraphs = _paragraphs(body)
    last = _pairs(paragraphs[-1]) if paragraphs else None
    if last and all(k.startswith(_OURS) for k, _ in last):
        return body.rstrip("\n") + "\n" + render_trailers(pairs) + "\n"
    return body.rstrip("\n") + "\n\n" + render_trailers(pairs) + "\n"


def gate_trailer(r: GateResult) -> str:
    n = f"{r.n_candidate:.0f}" if r.n_stable is None else f"{r.n_candidate:.0f}/{r.n_stable:.0f}"
    parts = [
        one_line(r.gate).replace(";", ","),
        f"n={n}",
        f"estimate={r.estimate_text}",
        f"interval={r.interval_text}",
        f"margin={r.margin:g}",
        f"limit={r.threshold}",
        f"decision={r.verdict}",
    ]
    return "; ".join(parts)


def gate_trailers(results: Iterable[GateResult]) -> list[tuple[str, str]]:
    return [(GATE, gate_trailer(r)) for r in results]


def evidence_table(results: Sequence[GateResult]) -> list[str]:
    """The gate table as Markdown lines: one row per gate, with how its interval was computed."""
    if not results:
        return []
    lines = [
        "| gate | metric | n (candidate / stable) | estimate | interval | acceptable | margin | confidence | decision |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cells = (
            r.gate,
            f"{r.metric} ({r.compare})",
            r.sample_text if r.n_candidate or r.n_stable else "-",
            r.estimate_text,
            r.interval_text,
            r.threshold,
            f"{r.margin:g}",
            f"{r.confidence:g}",
            r.verdict,
        )
        lines.append("| " + " | ".join(cell(x) for x in cells) + " |")
    methods = sorted({r.method for r in results if r.method})
    details = [f"- {cell(r.gate)}: {one_line(r.detail)}" for r in results if r.detail]
    if methods:
        lines += ["", "Intervals: " + "; ".join(methods) + ". Each is valid however often it is read."]
    if details:
        lines += ["", *details]
    return lines
