"""Evidence in Git: what every reconciler commit and pull request says about why it was written.

A decision's report (a commit body, a pull-request body) ends with Git trailers, one `Sluice-Gate:` per gate
with its name, sample per arm, estimate, interval, margin and verdict, so that `git log` and
`git interpret-trailers --parse` can read the evidence back without parsing prose:

    Sluice-Gate: accuracy; n=1204/10873; estimate=-0.0031; interval=[-0.0142, +0.0080]; margin=0.02; limit=>= -0.02; decision=pass
    Sluice-Quarantine: sha256:...

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
QUARANTINE = "Sluice-Quarantine"

_TRAILER = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*): (.*)$")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]+")


def one_line(text: str) -> str:
    """Text with every line break and control character turned into a single space."""
    return _UNSAFE.sub(" ", text).strip()


def cell(text: str) -> str:
    """Text safe inside one Markdown table cell."""
    return one_line(text).replace("|", "\\|")


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


def render_trailers(pairs: Sequence[tuple[str, str]]) -> str:
    return "\n".join(f"{key}: {one_line(value)}" for key, value in pairs)


def parse_trailers(message: str, prefix: str = "Sluice-") -> list[tuple[str, str]]:
    """Sluice's trailers in a commit message or body: its last paragraph, when every line of it is a
    `Key: value` trailer whose key starts with `prefix` (so a body's last line of prose is never one)."""
    paragraphs = [p for p in re.split(r"\n\s*\n", message.strip()) if p.strip()]
    if not paragraphs:
        return []
    matches = [_TRAILER.match(line) for line in paragraphs[-1].splitlines()]
    if not all(m is not None and m[1].startswith(prefix) for m in matches):
        return []
    return [(m[1], m[2]) for m in matches if m is not None]


def with_trailers(body: str, pairs: Sequence[tuple[str, str]]) -> str:
    """`body` followed by a trailer paragraph (nothing added when there are no trailers)."""
    if not pairs:
        return body
    return body.rstrip("\n") + "\n\n" + render_trailers(pairs) + "\n"


def evidence_table(results: Sequence[GateResult]) -> list[str]:
    """The gate table as Markdown lines: one row per gate, with how its interval was computed."""
    if not results:
        return []
    lines = [
        "| gate | metric | n (candidate / stable) | estimate | interval | acceptable | margin | confidence | decision |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            "| "
            + " | ".join(
                cell(x)
                for x in (
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
            )
            + " |"
        )
    methods = sorted({r.method for r in results if r.method})
    details = [f"- {cell(r.gate)}: {one_line(r.detail)}" for r in results if r.detail]
    if methods:
        lines += ["", "Intervals: " + "; ".join(methods) + ". Each is valid however often it is read."]
    if details:
        lines += ["", *details]
    return lines
