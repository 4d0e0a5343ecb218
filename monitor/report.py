"""`sluice monitor`'s report: one HTML page (self-contained: the PNG is a file beside it) and one PNG plot per
run, for a person deciding whether the model still fits its traffic."""

from __future__ import annotations

import html
import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from monitor.assess import Assessment, Thresholds
from monitor.records import LabelCounts, Skipped

PLOT = "drift.png"
PAGE = "index.html"
SUMMARY = "summary.json"


def write_report(
    directory: str | Path,
    assessments: Sequence[Assessment],
    labels: LabelCounts,
    skipped: Skipped,
    thresholds: Thresholds,
    source: str,
) -> Path:
    """Write index.html, drift.png and summary.json into `directory`; return the page's path."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    _plot(out / PLOT, assessments, thresholds)
    (out / SUMMARY).write_text(json.dumps(summary(assessments, labels, skipped, thresholds), indent=2) + "\n")
    page = out / PAGE
    page.write_text(_page(assessments, labels, skipped, thresholds, source))
    return page


def summary(
    assessments: Sequence[Assessment], labels: LabelCounts, skipped: Skipped, thresholds: Thresholds
) -> dict[str, object]:
    return {
        "computed_at": time.time(),
        "thresholds": asdict(thresholds),
        "labels": asdict(labels),
        "skipped": dict(skipped.counts),
        "predictors": [
            {
                "predictor": a.predictor,
                "digest": a.digest,
                "rows": a.n,
                "judged": a.enough,
                "drifted": a.drifted,
                "accuracy": a.accuracy,
                "error": a.error,
                "labelled": a.labelled,
                "prediction_drift": a.prediction.score if a.prediction else None,
                "features": {x.feature: {"psi": x.score, "p_value": x.p_value, "ks": x.ks} for x in a.drifts},
                "retrain_because": a.reasons(thresholds),
            }
            for a in assessments
        ],
    }


def _plot(path: Path, assessments: Sequence[Assessment], t: Thresholds) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [a for a in assessments if a.drifts] or list(assessments)
    rows = max(1, len(shown))
    fig, axes = plt.subplots(rows, 2, figsize=(13, 0.9 + 3.6 * rows), squeeze=False)
    for (bars, detail), a in zip(axes, shown, strict=False):
        ordered = sorted(a.drifts, key=lambda x: x.score, reverse=True)[:20]
        names = [x.feature for x in ordered][::-1]
        scores = [x.score for x in ordered][::-1]
        colours = ["tab:red" if x.drifted else "tab:blue" for x in ordered][::-1]
        bars.barh(names, scores, color=colours)
        bars.axvline(t.drift, color="black", linestyle="--", linewidth=1, label=f"threshold {t.drift:g}")
        bars.set_title(f"{a.predictor}: drift by feature (PSI, top {len(ordered)}), {a.n} rows")
        bars.tick_params(axis="y", labelsize=7)
        bars.legend(loc="lower right", fontsize=8)
        if ordered:
            top = ordered[0]
            x = range(len(top.bins))
            detail.bar([i - 0.2 for i in x], top.expected, width=0.4, label="reference", color="tab:gray")
            detail.bar([i + 0.2 for i in x], top.observed, width=0.4, label="live", color="tab:orange")
            detail.set_xticks(list(x), top.bins, rotation=30, ha="right", fontsize=7)
            detail.set_title(f"{top.feature}: share of rows per bin (PSI {top.score:.3f})")
            detail.legend(fontsize=8)
        else:
            detail.axis("off")
    if not assessments:
        axes[0][0].text(0.5, 0.5, "no predictions in the window", ha="center", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _page(
    assessments: Sequence[Assessment], labels: LabelCounts, skipped: Skipped, t: Thresholds, source: str
) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>sluice monitor</title>",
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;text-align:right}"
        "th{background:#eee}.bad{color:#b00;font-weight:bold}td:first-child{text-align:left}</style></head><body>",
        f"<h1>Model monitoring</h1><p>Log: {e(source)} &middot; computed {e(time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()))}"
        f" &middot; drift threshold PSI {t.drift:g}, test level {t.alpha:g} (Bonferroni over features)</p>",
        f"<p>Labels: {labels.joined} joined, {labels.late} late (outside the label window), {labels.unmatched} "
        f"matching no prediction read. Skipped records: {e(json.dumps(dict(skipped.counts))) or 'none'}.</p>",
        f"<img src='{PLOT}' alt='drift by feature' style='max-width:100%'>",
    ]
    for a in assessments:
        reasons = a.reasons(t)
        quality = (
            f"accuracy {a.accuracy:.3f}" if a.accuracy is not None
            else f"mean absolute error {a.error:.4g}" if a.error is not None else "no labels yet"
        )  # fmt: skip
        parts.append(
            f"<h2>{e(a.predictor)}</h2><p>model {e(a.digest or 'unknown')} &middot; {a.n} rows"
            f"{'' if a.enough else f' (fewer than {t.min_records}: not judged)'} &middot; {e(quality)} on "
            f"{a.labelled} labelled rows &middot; prediction drift "
            f"{'-' if a.prediction is None else f'{a.prediction.score:.3f}'}</p>"
        )
        if reasons:
            parts.append("<p class='bad'>Retrain: " + e("; ".join(reasons)) + "</p>")
        parts.append(
            "<table><tr><th>feature</th><th>kind</th><th>rows</th><th>PSI</th><th>p-value</th><th>KS</th><th>drifted</th></tr>"
        )
        for x in sorted(a.drifts, key=lambda x: x.score, reverse=True):
            ks = "-" if x.ks is None else f"{x.ks:.3f}"
            cls = " class='bad'" if x.drifted else ""
            parts.append(
                f"<tr{cls}><td>{e(x.feature)}</td><td>{x.kind}</td><td>{x.n}</td><td>{x.score:.4f}</td>"
                f"<td>{x.p_value:.3g}</td><td>{ks}</td><td>{'yes' if x.drifted else ''}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
