"""The page as HTML, rendered on the server with Jinja2 (autoescaped): the whole page, and the fragments the
server-sent events carry (an environment's state, timeline and figures), which htmx swaps into place."""

from __future__ import annotations

import functools
import math
import time
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from dashboard import charts
from dashboard.explain import metric_label, quantity

if TYPE_CHECKING:
    from dashboard.board import Board, Part


def clock(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%H:%M:%S UTC", time.gmtime(ts))


def stamp(ts: float | None) -> str:
    return "" if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def percent(x: float | None, digits: int = 2) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x * 100:.{digits}f}%"


def millis(x: float | None) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x * 1000:.3g} ms"


def rate(x: float | None) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.3g}/s"


def number(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.4g}"


@functools.cache
def templates() -> Environment:
    env = Environment(
        loader=PackageLoader("dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        clock=clock,
        stamp=stamp,
        duration=duration,
        percent=percent,
        millis=millis,
        rate=rate,
        number=number,
        short=lambda s: (s or "")[:12],
        metric_label=metric_label,
        quantity=lambda x, metric, compare, signed=False: quantity(x, metric, compare, signed),
    )
    env.globals.update(
        sparkline=lambda values: Markup(charts.sparkline(values)),
        swatch=lambda colour, shape="line": Markup(charts.swatch(colour, shape)),
        split=lambda predictors: Markup(
            charts.split([(p.name, p.traffic, p.role) for p in predictors if not p.shadow])
        ),
        drift_bars=lambda features, drift: Markup(
            charts.drift_bars(
                [(f.feature, f.score, f.over) for f in features],
                drift.threshold,
                max((f.score for p in drift.predictors for f in p.features), default=0.0),
            )
        ),
        kind_colour=charts.KIND_COLOUR,
    )
    return env


def render(name: str, **context: Any) -> str:
    return templates().get_template(name).render(**context)


def fragment(board: Board, env: str, part: Part) -> str:
    """One part of one environment's section, as the page shows it and as its event carries it."""
    now = board.clock()
    if part == "state":
        return render("state.html", env=board.environment(env), now=now)
    if part == "timeline":
        view = board.timeline(env)
        svg = Markup(charts.timeline(view, now))
        return render("timeline.html", timeline=view, svg=svg, colours=charts.colours(view.predictors))
    return render("figures.html", figures=board.figures(env), now=now)


def page(board: Board) -> str:
    now = board.clock()
    sections = [
        {
            "name": name,
            "state": Markup(
                board.fragments.get(board.event(name, "state")) or fragment(board, name, "state")
            ),
            "timeline": Markup(
                board.fragments.get(board.event(name, "timeline")) or fragment(board, name, "timeline")
            ),
            "figures": Markup(
                board.fragments.get(board.event(name, "figures")) or fragment(board, name, "figures")
            ),
        }
        for name in board.names()
    ]
    return render("page.html", sections=sections, now=now, actions=board.actions_enabled)
