"""The demo's report, computed from what happened: the manifest's Git history and the client's request log.

- `summary.json`: every decision (commit, time, weights, message) and client counts per act;
- `rollout.png` / `rollout.html`: weights per predictor over time with decisions marked, and the share of
  client requests each predictor actually answered;
- `strategies.md`: the seed talk's table of deployment strategies (no downtime, condition-based, rollback
  time, additional cost) filled in from this run's measurements, then the evidence each act's final decision
  rested on: every gate's sample per arm, estimate, interval, limit, margin, confidence and verdict.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from demo.traffic import RequestRecord
from deployment import seldon

MANIFEST = "gitops/environments/local/seldondeployment.yaml"

# One gate result as the demo records it: the columns of the gate table, then the numbers behind them.
GATE_KEYS = ("gate", "metric", "n", "estimate", "interval", "acceptable", "verdict")
GATE_COLUMNS = ("gate", "metric", "n (candidate / stable)", "estimate", "interval", "acceptable", "verdict")


def gate_record(g: Any) -> dict[str, Any]:
    """A rollout GateResult as plain data for summary.json and the report's gate table."""
    return {**dict(zip(GATE_KEYS, g.row(), strict=True)), **g.evidence(), "detail": g.detail}


@dataclass
class Step:
    """One commit on main that changed the manifest: a decision as Git recorded it."""

    at: float
    sha: str
    subject: str
    body: str
    weights: dict[str, float]
    shadow: str | None
    annotations: dict[str, str]

    @property
    def kind(self) -> str:
        s = self.subject.lower()
        for kind in ("rollback", "promote", "advance", "start", "approve", "abort", "freeze", "init"):
            if kind in s:
                return kind
        return "change"


@dataclass
class DecisionRecord:
    """A decision the reconciler wrote, timed by the demo to the millisecond (Git keeps whole seconds)."""

    at: float  # when the commit was on main
    decided_at: float  # when the reconciler decided (end of its observation window)
    act: str
    action: str
    step: str
    reason: str
    commit: str | None
    gates: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ActResult:
    name: str
    strategy: str
    candidate: str
    stable: str
    expected: str
    env: str = "local"
    outcome: str = "unfinished"
    started: float = 0.0
    ended: float = 0.0
    steps: list[Step] = field(default_factory=list)
    decisions: list[DecisionRecord] = field(default_factory=list)
    requests: int = 0
    failures: int = 0
    served: dict[str, int] = field(default_factory=dict)
    decided_by: list[str] = field(default_factory=list)
    detect_seconds: float | None = None
    rollback_seconds: float | None = None
    stable_at: float | None = None  # when the gateway stopped routing to the candidate after a rollback
    extra_predictor_seconds: float = 0.0
    approval_requested_at: float | None = None  # the promotion waited for a human from here
    approved_at: float | None = None
    approved_by: str | None = None
    converged_at: float | None = None  # when the router routed what the manifest says, after the act

    @property
    def duration(self) -> float:
        return self.ended - self.started


def manifest_history(repo: Path, since: str | None = None, path: str = MANIFEST) -> list[Step]:
    """Commits on the first-parent line of main that changed `path`, oldest first."""
    rng = f"{since}..HEAD" if since else "HEAD"
    log = subprocess.run(
        ["git", "log", "--first-parent", "--reverse", "--format=%H%x1f%ct%x1f%s%x1f%b%x1e", rng, "--", path],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    steps = []
    for entry in filter(None, (e.strip("\n") for e in log.split("\x1e"))):
        sha, ts, subject, body = entry.split("\x1f", 3)
        text = subprocess.run(
            ["git", "show", f"{sha}:{path}"], cwd=repo, capture_output=True, text=True
        ).stdout
        sd = seldon.loads(text, f"{sha}:{path}")
        weights = {p.name: 0.0 if p.shadow else float(p.traffic) for p in sd.predictors}
        shadow = sd.shadow.name if sd.shadow is not None else None
        annotations = dict(sd.annotations)
        steps.append(Step(float(ts), sha, subject, body.strip(), weights, shadow, annotations))
    return steps


def predictor_seconds(steps: list[Step], start: float, end: float) -> float:
    """Extra predictor-seconds: time-integral of (predictors running - 1) between start and end."""
    total = 0.0
    for i, step in enumerate(steps):
        t0 = max(step.at, start)
        t1 = min(steps[i + 1].at if i + 1 < len(steps) else end, end)
        if t1 > t0:
            total += (len(step.weights) - 1) * (t1 - t0)
    return total


def retime(steps: list[Step], decisions: list[DecisionRecord]) -> None:
    """Give each commit the demo's precise decision time where the demo recorded it."""
    precise = {d.commit: d.at for d in decisions if d.commit}
    for step in steps:
        step.at = precise.get(step.sha, step.at)


def measure(act: ActResult, steps: list[Step], records: list[RequestRecord]) -> None:
    """Fill an act's numbers from its decisions, the commits they made and the requests inside its span."""
    commits = {d.commit for d in act.decisions if d.commit}
    act.steps = [s for s in steps if s.sha in commits]
    mine = [r for r in records if r.act == act.name]
    act.requests = len(mine)
    act.failures = sum(1 for r in mine if r.status != 200)
    served: dict[str, int] = {}
    for r in mine:
        if r.predictor:
            served[r.predictor] = served.get(r.predictor, 0) + 1
    act.served = served
    before = [s for s in steps if s.at < act.started]
    act.extra_predictor_seconds = predictor_seconds(
        ([before[-1]] if before else []) + act.steps, act.started, act.ended
    )
    rollback = next((d for d in act.decisions if d.action == "rollback"), None)
    if rollback is not None:
        answered = [r.at for r in mine if r.predictor == act.candidate]
        act.detect_seconds = rollback.decided_at - (answered[0] if answered else act.started)
        last_answer = max((t for t in answered if t >= rollback.decided_at), default=rollback.decided_at)
        back = max(act.stable_at or rollback.at, last_answer)
        act.rollback_seconds = back - rollback.decided_at


def write_requests(out: Path, records: list[RequestRecord]) -> Path:
    """The client's request log, one row per request: the ground truth the report's numbers come from."""
    import csv

    path = out / "requests.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["at", "act", "status", "predictor", "latency_ms", "correct", "smoke"])
        for r in records:
            writer.writerow(
                [
                    f"{r.at:.6f}",
                    r.act,
                    r.status,
                    r.predictor or "",
                    f"{r.latency_ms:.3f}",
                    "" if r.correct is None else int(r.correct),
                    int(r.smoke),
                ]
            )
    return path


def commit_rows(steps: list[Step]) -> list[dict[str, Any]]:
    """Each manifest commit as summary.json lists it."""
    return [
        {"at": s.at, "commit": s.sha, "kind": s.kind, "message": s.subject, "weights": s.weights}
        for s in steps
    ]


def write_summary(out: Path, acts: list[ActResult], steps: list[Step], extra: dict[str, Any]) -> Path:
    data = {
        **extra,
        "acts": [
            {
                **{k: v for k, v in asdict(a).items() if k not in ("steps", "decisions")},
                "duration_seconds": round(a.duration, 2),
                "decisions": [
                    {
                        **asdict(d),
                        "weights": next((s.weights for s in a.steps if s.sha == d.commit), None),
                        "message": next((s.subject for s in a.steps if s.sha == d.commit), None),
                    }
                    for d in a.decisions
                ],
            }
            for a in acts
        ],
        "commits": commit_rows(steps),
    }
    path = out / "summary.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def plot(
    out: Path,
    acts: list[ActResult],
    steps: list[Step],
    records: list[RequestRecord],
    t0: float,
    events: Sequence[tuple[float, str]] = (),
    lanes: Mapping[str, list[Step]] | None = None,
) -> Path:
    """Weights per predictor by commit (the local environment solid, other environments dashed), marked events
    (drift onset, detection, retrain, promotions) as vertical lines, and the client's requests per predictor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_w, ax_r) = plt.subplots(
        2, 1, figsize=(13, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    lanes = lanes or {}
    names = sorted(
        {n for s in steps for n in s.weights}
        | {n for lane in lanes.values() for s in lane for n in s.weights}
        | {r.predictor for r in records if r.predictor}
    )
    colors = {n: plt.cm.tab10(i % 10) for i, n in enumerate(names)}
    roles: dict[str, str] = {}
    for a in acts:
        roles.setdefault(a.stable, "stable")
        roles.setdefault(a.candidate, f"candidate, {a.name}")
    every = [*steps, *(s for lane in lanes.values() for s in lane)]
    end = max([r.at for r in records] + [s.at for s in every] + [t for t, _ in events] + [t0 + 1])
    styles = {"": "-", **{env: ls for env, ls in zip(lanes, ("--", ":", "-."), strict=False)}}
    for env, history in [("", steps), *lanes.items()]:
        for name in names:
            xs, ys = [], []
            for i, s in enumerate(history):
                t1 = history[i + 1].at if i + 1 < len(history) else end
                w = s.weights.get(name)
                if w is None:
                    continue
                xs += [s.at - t0, t1 - t0]
                ys += [w if s.shadow != name else -5, w if s.shadow != name else -5]
            if xs:
                where = f" in {env}" if env else ""
                ax_w.plot(xs, ys, drawstyle="steps-post", color=colors[name], lw=2, ls=styles.get(env, "-"),
                          label=f"{name}{where} ({roles.get(name, '')})")  # fmt: skip
    marks = {
        "rollback": ("v", "red"),
        "promote": ("*", "green"),
        "advance": ("^", "tab:blue"),
        "start": ("o", "gray"),
        "approve": ("s", "purple"),
        "freeze": ("x", "black"),
    }
    for s in every:
        marker, color = marks.get(s.kind, (".", "gray"))
        ax_w.scatter([s.at - t0], [103], marker=marker, color=color, s=70, zorder=5)
    for i, (at, label) in enumerate(events):
        for ax in (ax_w, ax_r):
            ax.axvline(at - t0, color="darkorange", lw=1, ls="--", alpha=0.8)
        late = at - t0 > 0.85 * (end - t0)  # labels near the right edge go to the left of their line
        ha = "right" if late else "left"
        ax_w.text(at - t0, 60 - 9 * (i % 6), f" {label} ", fontsize=7.5, color="darkorange", ha=ha)
    for i, a in enumerate(acts):
        ax_w.axvspan(a.started - t0, a.ended - t0, alpha=0.06 + 0.04 * (i % 2), color="gray")
        label = f"{a.strategy}: {a.outcome}"
        ax_w.text(a.started - t0, 107 + 7 * (i % 3), label, fontsize=7.5, va="bottom")
    ax_w.set_ylim(-10, 125)
    ax_w.set_ylabel("traffic weight % (shadow at -5)")
    ax_w.legend(loc="center left", fontsize=8, bbox_to_anchor=(1.0, 0.5))
    ax_w.set_title(
        "Sluice demo: traffic weights by commit (markers: ▲ advance ★ promote ▼ rollback; dashed: Act 5's events)"
    )

    bucket = 2.0
    if records:
        nb = int((end - t0) / bucket) + 1
        for name in names:
            counts = [0] * nb
            for r in records:
                if r.predictor == name:
                    counts[int((r.at - t0) / bucket)] += 1
            ax_r.plot(
                [i * bucket for i in range(nb)], [c / bucket for c in counts], color=colors[name], lw=1.2
            )
        fails = [0] * nb
        for r in records:
            if r.status != 200:
                fails[int((r.at - t0) / bucket)] += 1
        if any(fails):
            ax_r.bar(
                [i * bucket for i in range(nb)], fails, width=bucket, color="red", alpha=0.6, label="failed"
            )
            ax_r.legend(fontsize=8)
    ax_r.set_ylabel("client requests/s answered")
    ax_r.set_xlabel("seconds since the demo started")
    fig.tight_layout()
    path = out / "rollout.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def act5_html(act5: Mapping[str, Any] | None) -> str:
    """The closing act's section: what drifted, the loop's steps, the approval, and the time to production."""
    if not act5:
        return ""
    parts = act5.get("parts_seconds", {})
    total = act5.get("drift_to_production_seconds")
    part_rows = "".join(
        f"<tr><td>{_esc(k.replace('_', ' '))}</td><td>{'—' if v is None else f'{v:.1f}'}</td></tr>"
        for k, v in parts.items()
    )
    loop_rows = "".join(
        f"<tr><td>{_esc(str(x['step']))}</td><td>{_esc(str(x['detail']))}</td></tr>"
        for x in act5.get("loop", [])
    )
    approval = act5.get("approval") or {}
    accuracy = act5.get("offline_accuracy_on_drifted_rows") or {}
    live = act5.get("live_accuracy_after_drift") or {}
    live_rows = "".join(
        f"<tr><td>{_esc(name)}</td><td>{v['n']}</td><td>{v['accuracy']:.3f}</td></tr>"
        for name, v in live.items()
    )
    return f"""<h2>Act 5: drift, retrain, staging → production</h2>
<p>The client's <code>{_esc(str(act5.get("feature")))}</code> shifted by {act5.get("shift")}; the retrained candidate
<code>{_esc(str(act5.get("candidate")))}</code> replaced <code>{_esc(str(act5.get("stable")))}</code>.
<b>Drift onset to the new model serving 100 % of production: {"—" if total is None else f"{total:.1f} s"}</b>.</p>
<table><tr><th>part</th><th>seconds</th></tr>{part_rows}</table>
<p>The only human step: production's promotion, approved by {_esc(str(approval.get("approved_by")))}
(commit <code>{_esc(str(approval.get("commit") or "")[:12])}</code>).</p>
<p>Accuracy on drifted rows the client never sent (the original training split, shifted): stable {accuracy.get("stable", "—")}, candidate
{accuracy.get("candidate", "—")}.</p>
<h3>Production's answers after the drift, as the ground truth scored them</h3>
<table><tr><th>predictor</th><th>n</th><th>accuracy</th></tr>{live_rows}</table>
<h3>sluice loop's steps</h3><table><tr><th>step</th><th>detail</th></tr>{loop_rows}</table>"""


def write_html(
    out: Path,
    png: Path,
    acts: list[ActResult],
    steps: list[Step],
    t0: float,
    act5: Mapping[str, Any] | None = None,
) -> Path:
    rows = "\n".join(
        f"<tr><td>{s.at - t0:.1f}</td><td><code>{s.sha[:8]}</code></td><td>{s.kind}</td><td>{_esc(s.subject)}</td>"
        f"<td>{_esc(', '.join(f'{k}={v:g}' + (' (shadow)' if k == s.shadow else '') for k, v in s.weights.items()))}</td></tr>"
        for s in steps
    )
    act_rows = "\n".join(
        f"<tr><td>{_esc(a.name)}</td><td>{a.strategy}</td><td>{a.outcome}</td><td>{a.requests}</td><td>{a.failures}</td>"
        f"<td>{a.duration:.1f}</td></tr>"
        for a in acts
    )
    gate_rows = "\n".join(
        "<tr>"
        + "".join(
            f"<td>{_esc(str(x))}</td>"
            for x in (
                a.name,
                d.action,
                g["gate"],
                g["metric"],
                g["n"],
                g["estimate"],
                g["interval"],
                g["acceptable"],
                g.get("margin", ""),
                g["verdict"],
            )
        )
        + "</tr>"
        for a in acts
        if (d := final_decision(a)) is not None
        for g in d.gates
        if g.get("verdict") != "skip"
    )
    image = base64.b64encode(png.read_bytes()).decode()
    html = f"""<!doctype html><html><head><meta charset="utf-8"><title>Sluice demo</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1300px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:14px}}th{{background:#f4f4f4}}</style></head><body>
<h1>Sluice demo</h1><img alt="traffic weights over time" src="data:image/png;base64,{image}" style="max-width:100%">
<h2>Acts</h2><table><tr><th>act</th><th>strategy</th><th>outcome</th><th>requests</th><th>failed</th><th>seconds</th></tr>
{act_rows}</table>
<h2>What each decision rested on</h2><table><tr><th>act</th><th>decision</th><th>gate</th><th>metric</th>
<th>n (candidate / stable)</th><th>estimate</th><th>interval</th><th>acceptable</th><th>margin</th>
<th>verdict</th></tr>{gate_rows}</table>
{act5_html(act5)}
<h2>Every traffic change (a commit on main)</h2><table><tr><th>t (s)</th><th>commit</th><th>decision</th>
<th>message</th><th>weights</th></tr>{rows}</table></body></html>"""
    path = out / "rollout.html"
    path.write_text(html)
    return path


def strategies_table(acts: list[ActResult]) -> str:
    """The seed talk's comparison, with this run's numbers in every cell."""
    lines = [
        "# Deployment strategies, measured",
        "",
        "The comparison table from the talk this project grew from, filled from one `make demo` run. Every",
        "number comes from the client request log or from the manifest's Git history in this run.",
        "",
        "| strategy | act | outcome | no downtime (failed / client requests) | condition-based (what decided) "
        "| rollback time (decision → traffic on stable) | time to decide | additional cost (extra predictor-seconds) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a in acts:
        rollback = f"{a.rollback_seconds:.2f} s" if a.rollback_seconds is not None else "—"
        detect = (
            f"{a.detect_seconds:.1f} s" if a.detect_seconds is not None else f"{a.duration:.1f} s (whole act)"
        )
        decided = "; ".join(a.decided_by) or "—"
        lines.append(
            f"| {a.strategy} | {a.name} | {a.outcome} | {'yes' if a.failures == 0 else 'NO'}: {a.failures} / {a.requests} "
            f"| {decided} | {rollback} | {detect} | {a.extra_predictor_seconds:.0f} |"
        )
    lines += [
        "",
        "- *no downtime*: client requests that failed while the strategy ran (the gateway retries a failed",
        "  request once on another live predictor, so a candidate crash costs the client nothing).",
        "- *rollback time*: from the reconciler's failing observation to the gateway routing only to stable",
        "  (the rollback commit and its merge, the gateway noticing the manifest change and swapping routes).",
        "- *time to decide*: from the candidate's first answer (or its start, for a shadow) to that decision.",
        "- *additional cost*: seconds × (predictors running − 1) while the act ran: what the strategy paid for",
        "  running a second model next to the stable one.",
        "",
        *gate_table(acts),
    ]
    return "\n".join(lines) + "\n"


def final_decision(act: ActResult) -> DecisionRecord | None:
    """The decision that ended the act (its promotion or rollback), else its last written decision."""
    ending = [d for d in act.decisions if d.action in ("promote", "rollback")] or act.decisions
    return ending[-1] if ending else None


def gate_table(acts: list[ActResult]) -> list[str]:
    """Markdown: for each act, the gates of the decision that ended it, interval by interval."""
    lines = [
        "## What each decision rested on",
        "",
        "Every gate asks whether the candidate is worse than the stable model by more than its margin, from",
        "every observation since the stage began, with a confidence sequence (valid however often it is read):",
        "*pass* when the interval lies on the acceptable side of the limit, *fail* when it lies beyond it.",
        "",
        "| act | decision | gate | metric | n (candidate / stable) | estimate | interval | acceptable "
        "| margin | confidence | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for act in acts:
        d = final_decision(act)
        if d is None:
            continue
        for g in d.gates:
            if g.get("verdict") == "skip":
                continue
            lines.append(
                f"| {act.name} | {d.action} | {g['gate']} | {g['metric']} | {g['n']} | {g['estimate']} "
                f"| {g['interval']} | {g['acceptable']} | {g.get('margin', 0):g} | {g.get('confidence', 0):g} "
                f"| {g['verdict']} |"
            )
    methods = sorted({g["method"] for a in acts for d in a.decisions for g in d.gates if g.get("method")})
    if methods:
        lines += ["", "Intervals: " + "; ".join(methods) + "."]
    return lines


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
