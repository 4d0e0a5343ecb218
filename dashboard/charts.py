"""Charts drawn on the server as SVG: the traffic timeline of the manifest's Git history, and sparklines of the
live figures. No script draws them, so they read the same in any browser, in a screenshot, and in a test.
Colours and shapes are SVG presentation attributes (the page's Content-Security-Policy forbids inline styles).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from html import escape

from dashboard.views import TimelineView

PALETTE = ("#2563eb", "#d97706", "#059669", "#7c3aed", "#db2777", "#0891b2", "#65a30d", "#9f1239")
KIND_COLOUR = {
    "rollback": "#dc2626",
    "abort": "#dc2626",
    "promote": "#16a34a",
    "start": "#7c3aed",
    "approve": "#0891b2",
    "init": "#475569",
}
KIND_LABEL = {"rollback": "rollback", "abort": "abort", "promote": "promotion"}


def colours(names: Sequence[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts))


def _f(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def timeline(view: TimelineView, now: float, width: int = 960, height: int = 240) -> str:
    """Traffic per predictor over the manifest's commits: a step line per predictor (dashed for a shadow's
    mirror share), a marker per commit linking to its diff, rollbacks and promotions drawn across the chart."""
    left, right, top, bottom = 44, 12, 26, 26
    inner_w, inner_h = width - left - right, height - top - bottom
    label = f"Traffic per predictor over {len(view.points)} commits of the {view.env} manifest"
    head = (
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(label)}">'
    )
    if not view.points:
        return head + f'<text x="{left}" y="{height / 2}" fill="#64748b">no commits yet</text></svg>'
    first = view.points[0].at
    t1 = max(now, view.points[-1].at)
    t0 = first - max(2.0, (t1 - first) * 0.03)  # room for the first marker
    span = t1 - t0

    def x(t: float) -> float:
        return left + (t - t0) / span * inner_w

    def y(w: float) -> float:
        return top + (1 - w / 100) * inner_h

    out = [head]
    for w in (0, 50, 100):  # grid
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{_f(y(w))}" y2="{_f(y(w))}" stroke="#e2e8f0"/>'
            f'<text x="{left - 6}" y="{_f(y(w) + 4)}" text-anchor="end" font-size="11" fill="#64748b">{w}%</text>'
        )
    ticks = 5
    for i in range(ticks + 1):
        t = t0 + span * i / ticks
        anchor = "start" if i == 0 else "end" if i == ticks else "middle"
        out.append(
            f'<text x="{_f(x(t))}" y="{height - 8}" text-anchor="{anchor}" font-size="11" fill="#64748b">'
            f"{clock(t)}</text>"
        )
    palette = colours(view.predictors)
    for name in view.predictors:
        for shadow in (False, True):
            runs: list[list[tuple[float, float]]] = []
            run: list[tuple[float, float]] = []
            for i, p in enumerate(view.points):
                weight = (p.shadows if shadow else p.weights).get(name)
                end = view.points[i + 1].at if i + 1 < len(view.points) else t1
                if weight is None:
                    if run:
                        runs.append(run)
                        run = []
                    continue
                run += [(x(p.at), y(weight)), (x(end), y(weight))]
            if run:
                runs.append(run)
            for r in runs:
                points = " ".join(f"{_f(a)},{_f(b)}" for a, b in r)
                dash = ' stroke-dasharray="5 4"' if shadow else ""
                out.append(
                    f'<polyline class="weight" data-predictor="{escape(name)}" data-shadow="{str(shadow).lower()}" '
                    f'points="{points}" fill="none" stroke="{palette[name]}" stroke-width="2.5"{dash}/>'
                )
    for p in view.points:
        px = _f(x(p.at))
        colour = KIND_COLOUR.get(p.kind, "#94a3b8")
        if p.kind in KIND_LABEL:
            out.append(
                f'<line x1="{px}" x2="{px}" y1="{top - 4}" y2="{top + inner_h}" stroke="{colour}" '
                f'stroke-dasharray="3 3" stroke-width="1.5"/>'
                f'<text x="{px}" y="{top - 12}" text-anchor="middle" font-size="10" fill="{colour}">'
                f"{KIND_LABEL[p.kind]}</text>"
            )
        weights = ", ".join(f"{k}={v}%" for k, v in p.weights.items())
        shadows = "".join(f", {k} shadow {v}%" for k, v in p.shadows.items())
        tip = f"{clock(p.at)} UTC · {p.kind} · {p.commit[:12]}\n{p.subject}\n{weights}{shadows}"
        out.append(
            f'<a href="{escape(p.link)}" class="commit" data-commit="{p.commit}" data-kind="{p.kind}">'
            f'<circle cx="{px}" cy="{top - 4}" r="5" fill="{colour}" stroke="#fff" stroke-width="1.5">'
            f"<title>{escape(tip)}</title></circle></a>"
        )
    out.append("</svg>")
    return "".join(out)


def sparkline(values: Sequence[tuple[float, float | None]], width: int = 120, height: int = 28) -> str:
    """A small line of one figure over time (gaps where there was nothing to compute it from)."""
    head = f'<svg class="spark" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" aria-hidden="true">'
    known = [(t, v) for t, v in values if v is not None and math.isfinite(v)]
    if len(known) < 2:
        return head + "</svg>"
    t0, t1 = values[0][0], values[-1][0]
    lo = min(v for _, v in known)
    hi = max(v for _, v in known)
    if hi - lo < 1e-12:
        lo, hi = lo - 1, hi + 1
    span = (t1 - t0) or 1.0

    def at(t: float, v: float) -> str:
        return f"{_f((t - t0) / span * (width - 2) + 1)},{_f((1 - (v - lo) / (hi - lo)) * (height - 4) + 2)}"

    runs: list[list[str]] = [[]]
    for t, v in values:
        if v is None or not math.isfinite(v):
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append(at(t, v))
    lines = "".join(
        f'<polyline points="{" ".join(r)}" fill="none" stroke="#2563eb" stroke-width="1.5"/>'
        for r in runs
        if r
    )
    return head + lines + "</svg>"


def swatch(colour: str, shape: str = "line") -> str:
    """A legend key: a short line (a predictor) or a dot (a kind of commit)."""
    if shape == "dot":
        return (
            f'<svg class="key" viewBox="0 0 12 12" width="12" height="12" aria-hidden="true">'
            f'<circle cx="6" cy="6" r="5" fill="{colour}"/></svg>'
        )
    return (
        f'<svg class="key" viewBox="0 0 18 12" width="18" height="12" aria-hidden="true">'
        f'<line x1="1" x2="17" y1="6" y2="6" stroke="{colour}" stroke-width="3"/></svg>'
    )


ROLE_COLOUR = {"stable": "#2563eb", "candidate": "#d97706", "other": "#94a3b8"}


def split(segments: Sequence[tuple[str, int, str]], width: int = 600, height: int = 26) -> str:
    """The live traffic split as one bar: (name, percent, role) per live predictor."""
    total = sum(max(0, w) for _, w, _ in segments) or 1
    out = [
        f'<svg class="split" viewBox="0 0 {width} {height}" preserveAspectRatio="none" role="img" '
        f'aria-label="{escape(", ".join(f"{n} {w}%" for n, w, _ in segments))}">'
    ]
    x = 0.0
    for name, w, role in segments:
        if w <= 0:
            continue
        seg = width * w / total
        out.append(
            f'<rect x="{_f(x)}" y="0" width="{_f(seg)}" height="{height}" fill="{ROLE_COLOUR.get(role, "#94a3b8")}">'
            f"<title>{escape(name)} {w}%</title></rect>"
        )
        if seg > 60:
            out.append(
                f'<text x="{_f(x + 6)}" y="{height / 2 + 4}" font-size="12" fill="#fff">{escape(name)} {w}%</text>'
            )
        x += seg
    out.append("</svg>")
    return "".join(out)


DRIFT_OK, DRIFT_OVER, THRESHOLD_MARK = "#2563eb", "#dc2626", "#0f172a"


def drift_bars(
    features: Sequence[tuple[str, float, bool]],
    threshold: float,
    top: float = 0.0,
    width: int = 600,
    row: int = 18,
) -> str:
    """One horizontal bar per feature (name, score, over the threshold), in the order given, with the threshold
    as a dashed line and bars over it in red. The scale runs to `top` (so several predictors' charts share
    one), at least to twice the threshold and to the highest score."""
    if not features:
        return ""
    label, gap = 180, 70  # the feature names' column, the scores' column
    top = max([top, threshold * 2, *(s for _, s, _ in features if math.isfinite(s))])
    scale = (width - label - gap) / top

    def x(v: float) -> float:
        return label + max(0.0, min(v, top)) * scale

    height = row * len(features) + 16
    out = [
        f'<svg class="drift-bars" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(f"drift score per feature, threshold {threshold:g}")}">'
    ]
    for i, (name, score, over) in enumerate(features):
        y = i * row + 2
        shown = name if len(name) <= 24 else name[:23] + "…"
        colour = DRIFT_OVER if over else DRIFT_OK
        weight = ' font-weight="bold"' if over else ""
        mid = _f(y + row / 2 + 2)
        out.append(
            f'<g class="{"over" if over else "under"}"><title>{escape(name)}: PSI {score:.3f}</title>'
            f'<text x="{label - 6}" y="{mid}" font-size="11" text-anchor="end"{weight}>{escape(shown)}</text>'
            f'<rect x="{label}" y="{y}" width="{_f(x(score) - label)}" height="{row - 5}" fill="{colour}"/>'
            f'<text x="{_f(x(score) + 4)}" y="{mid}" font-size="11" fill="{colour}"{weight}>{score:.3f}</text></g>'
        )
    t = _f(x(threshold))
    out.append(
        f'<line class="threshold" x1="{t}" x2="{t}" y1="0" y2="{height - 14}" stroke="{THRESHOLD_MARK}" '
        f'stroke-width="1.5" stroke-dasharray="4 3"/>'
        f'<text x="{t}" y="{height - 2}" font-size="10" text-anchor="middle">threshold {threshold:g}</text>'
        "</svg>"
    )
    return "".join(out)
