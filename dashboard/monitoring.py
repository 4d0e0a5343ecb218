"""The cluster's side of the pane of glass: a Grafana dashboard with the panels of `sluice ui` (from Prometheus)
and PrometheusRule alerts, rendered from the PromQL of dashboard/promql.py into gitops/monitoring/.

`python -m dashboard.monitoring` writes the files; `--check` says whether the committed ones are current (the
tests fail when they are not). Alerts: a rollout stuck past its stage deadline, a gate failing, the
reconciler not ticking (or not scraped at all), the router answering with errors, and drift over a threshold
(on `sluice_drift_score`, which `sluice monitor` exports).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from dashboard import promql
from deployment import metric_names as n
from rollout.policy import MonitoringSpec

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "gitops" / "monitoring"
DASHBOARD_UID = "sluice-rollouts"
# The namespaces the alert rules watch: every environment's (sluice, sluice-staging, sluice-production).
NAMESPACES = "sluice(-.+)?"
RECONCILER_NAMESPACE = "sluice-system"  # where the reconcilers run (gitops/cluster/reconciler.yaml)
ERROR_RATIO = 0.05
# Turns of `sluice loop` failed in a row before SluiceLoopFailing fires: with the back-off, 7 intervals (35 min at
# a 5m interval) of a fault that outlasts a restart of whatever was down.
LOOP_FAILURES = 3
# The alert rules' threshold: the policy's default (an environment whose policy sets another is shown with its
# own by `sluice ui`; the rules are rendered once for every namespace).
DRIFT_THRESHOLD = float(MonitoringSpec.model_fields["drift_threshold"].default)
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


# Grafana -------------------------------------------------------------------------------------------------------
def target(
    expr: str, ref: str, legend: str = "", instant: bool = False, table: bool = False
) -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": DATASOURCE, "refId": ref, "expr": expr, "editorMode": "code"}
    if legend:
        t["legendFormat"] = legend
    if instant:
        t["instant"], t["range"] = True, False
    if table:
        t["format"] = "table"
    return t


def _grid(x: int, y: int, w: int, h: int) -> dict[str, int]:
    return {"x": x, "y": y, "w": w, "h": h}


def _defaults(
    unit: str = "", lo: float | None = None, hi: float | None = None, **more: Any
) -> dict[str, Any]:
    d: dict[str, Any] = {**more}
    if unit:
        d["unit"] = unit
    if lo is not None:
        d["min"] = lo
    if hi is not None:
        d["max"] = hi
    return {"defaults": d, "overrides": []}


def timeseries(
    pid: int,
    title: str,
    description: str,
    grid: dict[str, int],
    targets: list[dict[str, Any]],
    unit: str = "",
    **kw: Any,
) -> dict[str, Any]:
    custom: dict[str, Any] = {"lineWidth": 2, "fillOpacity": 0, "showPoints": "never", "spanNulls": False}
    if kw.pop("step", False):
        custom["lineInterpolation"] = "stepAfter"
    if kw.pop("bars", False):
        custom["drawStyle"] = "bars"
        custom["fillOpacity"] = 80
    return {
        "type": "timeseries",
        "id": pid,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": grid,
        "targets": targets,
        "fieldConfig": _defaults(unit, custom=custom, **kw),
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(
    pid: int,
    title: str,
    description: str,
    grid: dict[str, int],
    targets: list[dict[str, Any]],
    unit: str = "",
    **kw: Any,
) -> dict[str, Any]:
    text_mode = kw.pop("text_mode", "value")
    thresholds = kw.pop("thresholds", None)
    fc = _defaults(unit, **kw)
    if thresholds:
        fc["defaults"]["thresholds"] = {"mode": "absolute", "steps": thresholds}
        fc["defaults"]["color"] = {"mode": "thresholds"}
    return {
        "type": "stat",
        "id": pid,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": grid,
        "targets": targets,
        "fieldConfig": fc,
        "options": {
            "graphMode": "none",
            "colorMode": "value",
            "justifyMode": "auto",
            "textMode": text_mode,
            "wideLayout": True,
            "showPercentChange": False,
            "percentChangeColorMode": "standard",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "values": False, "fields": ""},
        },
    }


def row(pid: int, title: str, y: int) -> dict[str, Any]:
    return {
        "type": "row",
        "id": pid,
        "title": title,
        "collapsed": False,
        "gridPos": _grid(0, y, 24, 1),
        "panels": [],
    }


def grafana_dashboard() -> dict[str, Any]:
    """The Grafana dashboard: one environment at a time (the `namespace` variable), one deployment in it."""
    s = promql.Scope.grafana()
    w = "$__rate_interval"
    sel = s.selector()
    panels: list[dict[str, Any]] = [
        row(1, "Rollout (from the reconciler's last tick)", 0),
        stat(
            2,
            "Rollout",
            "Strategy and candidate of the rollout in progress (none: no rollout).",
            _grid(0, 1, 6, 4),
            [
                target(
                    f"max by ({n.STRATEGY}, {n.CANDIDATE}, {n.STATUS}) ({n.ROLLOUT_INFO}{sel})",
                    "A",
                    "{{strategy}} of {{candidate}} ({{status}})",
                    instant=True,
                )
            ],
            text_mode="name",
        ),
        stat(
            3,
            "Stage",
            "Index of the stage in the strategy's plan (0 is the first).",
            _grid(6, 1, 3, 4),
            [target(promql.stage(s), "A", instant=True)],
        ),
        stat(
            4,
            "Time in stage",
            "Since the rollout entered its stage.",
            _grid(9, 1, 4, 4),
            [target(promql.time_in_stage(s), "A", instant=True)],
            unit="s",
        ),
        stat(
            5,
            "Stage deadline in",
            "Until the stage must have moved on (bake time or the longest no-data wait, plus a window and two "
            "ticks). Negative: stuck past its deadline.",
            _grid(13, 1, 5, 4),
            [target(promql.deadline_in(s), "A", instant=True)],
            unit="s",
            thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 0}],
        ),
        stat(
            6,
            "Since the reconciler's last tick",
            "The reconciler's heartbeat: seconds since it last finished a tick.",
            _grid(18, 1, 6, 4),
            [target(promql.since_last_tick(s), "A", instant=True)],
            unit="s",
            thresholds=[
                {"color": "green", "value": None},
                {"color": "orange", "value": 120},
                {"color": "red", "value": 600},
            ],
        ),
        timeseries(
            7,
            "Traffic per predictor (as in Git)",
            "Each predictor's share of live traffic as the manifest on main says (a shadow: its mirrored share).",
            _grid(0, 5, 12, 8),
            [target(promql.weights(s), "A", "{{predictor_name}}")],
            unit="percent",
            lo=0,
            hi=100,
            step=True,
        ),
        {
            "type": "table",
            "id": 8,
            "title": "Gates at the last tick",
            "description": "Each gate's verdict, estimate, interval and limit as the reconciler judged them.",
            "datasource": DATASOURCE,
            "gridPos": _grid(12, 5, 12, 8),
            "targets": [
                target(promql.gate_verdicts(s), "verdict", instant=True, table=True),
                target(promql.gate_field(s, n.GATE_ESTIMATE), "estimate", instant=True, table=True),
                target(promql.gate_field(s, n.GATE_LOW), "low", instant=True, table=True),
                target(promql.gate_field(s, n.GATE_HIGH), "high", instant=True, table=True),
                target(promql.gate_field(s, n.GATE_LIMIT), "limit", instant=True, table=True),
            ],
            "transformations": [
                {"id": "merge", "options": {}},
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True},
                        "renameByName": {
                            "Value #verdict": "shown",
                            "Value #estimate": "estimate",
                            "Value #low": "low",
                            "Value #high": "high",
                            "Value #limit": "limit",
                        },
                    },
                },
            ],
            "fieldConfig": _defaults(),
            "options": {"frameIndex": 0, "showHeader": True},
        },
        timeseries(
            9,
            "Decisions written to Git",
            "Advances, promotions and rollbacks the reconciler wrote, per interval.",
            _grid(0, 13, 24, 5),
            [target(promql.decisions(s, "$__interval"), "A", "{{action}}")],
            bars=True,
        ),
        row(10, "Live figures per predictor", 18),
        timeseries(
            11,
            "Requests per second",
            "Prediction requests (feedback excluded).",
            _grid(0, 19, 8, 8),
            [target(promql.requests_per_second(s, w), "A", "{{predictor_name}}")],
            unit="reqps",
        ),
        timeseries(
            12,
            "Error ratio",
            "Share of prediction requests answered with a 5xx.",
            _grid(8, 19, 8, 8),
            [target(promql.error_ratio(s, w), "A", "{{predictor_name}}")],
            unit="percentunit",
            lo=0,
        ),
        timeseries(
            13,
            "Latency",
            "p50, p95 and p99 of prediction request seconds at the router.",
            _grid(16, 19, 8, 8),
            [
                target(promql.latency_quantile(s, 0.5, w), "A", "p50 {{predictor_name}}"),
                target(promql.latency_quantile(s, 0.95, w), "B", "p95 {{predictor_name}}"),
                target(promql.latency_quantile(s, 0.99, w), "C", "p99 {{predictor_name}}"),
            ],
            unit="s",
        ),
        timeseries(
            14,
            "Accuracy from feedback",
            "Mean reward of the feedback each predictor received.",
            _grid(0, 27, 8, 8),
            [target(promql.accuracy(s, w), "A", "{{predictor_name}}")],
            unit="percentunit",
            lo=0,
            hi=1,
        ),
        timeseries(
            15,
            "Feedback per second",
            "Feedback received, per predictor that answered.",
            _grid(8, 27, 8, 8),
            [target(promql.feedback_per_second(s, w), "A", "{{predictor_name}}")],
            unit="reqps",
        ),
        timeseries(
            16,
            "Shadow disagreement",
            "Share of a shadow's answers unlike the live model's.",
            _grid(16, 27, 8, 8),
            [target(promql.disagreement(s, w), "A", "{{predictor_name}}")],
            unit="percentunit",
            lo=0,
        ),
        row(17, "Drift", 35),
        timeseries(
            18,
            "Drift score per feature",
            f"{n.DRIFT_SCORE}, the population stability index `sluice monitor` exports per feature (its "
            f"--metrics-port or textfile); no data until it runs. The alert fires above {DRIFT_THRESHOLD:g}.",
            _grid(0, 36, 24, 7),
            [target(promql.drift(s), "A", "{{predictor_name}} {{feature}}")],
        ),
        row(19, "Retraining loop (`sluice loop --metrics-port`)", 43),
        stat(
            20,
            "Turns failed in a row",
            f"Each is retried with a back-off; no retrain moves meanwhile. The alert fires at {LOOP_FAILURES}.",
            _grid(0, 44, 6, 5),
            [target(promql.loop_failures(s), "A", instant=True)],
            thresholds=[
                {"color": "green", "value": None},
                {"color": "orange", "value": 1},
                {"color": "red", "value": LOOP_FAILURES},
            ],
        ),
        stat(
            21,
            "Since the loop's last turn",
            "A turn that trains lasts as long as `dvc repro`; an idle loop turns every interval.",
            _grid(6, 44, 6, 5),
            [target(promql.since_last_turn(s), "A", instant=True)],
            unit="s",
        ),
        timeseries(
            22,
            "Loop turns by step",
            "What each turn did: waiting, data (a data version committed), trained, rejected, promoted, error; "
            "chain-*: promotions carried to the next environment.",
            _grid(12, 44, 12, 5),
            [target(promql.loop_turns(s, "$__interval"), "A", "{{step}}")],
            bars=True,
        ),
    ]
    label_source = f"{n.SERVER_REQUESTS}_count"
    marked = f'{n.ACTION}=~"rollback|promote"'
    return {
        "uid": DASHBOARD_UID,
        "title": "Sluice rollouts",
        "description": "Rollouts, gates, traffic and live figures of one Sluice environment (the panels of sluice ui).",
        "tags": ["sluice", "seldon", "rollouts"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "schemaVersion": 39,
        "version": 1,
        "templating": {
            "list": [
                {"type": "datasource", "name": "datasource", "label": "Prometheus", "query": "prometheus"},
                {
                    "type": "query",
                    "name": "namespace",
                    "label": "Environment (namespace)",
                    "datasource": DATASOURCE,
                    "query": f'label_values({label_source}{{{n.NAMESPACE}=~"{NAMESPACES}"}}, {n.NAMESPACE})',
                    "refresh": 2,
                    "sort": 1,
                },
                {
                    "type": "query",
                    "name": "deployment",
                    "label": "Deployment",
                    "datasource": DATASOURCE,
                    "query": f'label_values({label_source}{{{n.NAMESPACE}="$namespace"}}, {n.DEPLOYMENT})',
                    "refresh": 2,
                    "sort": 1,
                },
            ]
        },
        "annotations": {
            "list": [
                {
                    "name": "Rollbacks and promotions",
                    "datasource": DATASOURCE,
                    "enable": True,
                    "iconColor": "red",
                    "expr": f"changes({n.total(n.RECONCILER_DECISIONS)}{s.selector(marked)}[2m]) > 0",
                    "titleFormat": "{{action}}",
                    "step": "60s",
                }
            ]
        },
        "panels": panels,
    }


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every query in a Grafana dashboard: targets, variables and annotations."""
    out = []
    for p in dashboard["panels"]:
        for t in p.get("targets", []):
            out.append((f"panel {p['id']} {p['title']} / {t['refId']}", t["expr"]))
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            query = v["query"]
            inner = query[query.index("(") + 1 : query.rindex(",")]  # label_values(SELECTOR, label)
            out.append((f"variable {v['name']}", inner))
    for a in dashboard["annotations"]["list"]:
        if "expr" in a:
            out.append((f"annotation {a['name']}", a["expr"]))
    return out


# alert rules ---------------------------------------------------------------------------------------------------
def rules() -> list[dict[str, Any]]:
    s = promql.Scope(NAMESPACES, pattern=True)
    env_labels = f"{n.NAMESPACE}, {n.ENVIRONMENT}"
    by_rollout = f"{env_labels}, {n.DEPLOYMENT}"
    predictions = f"{promql.REQUESTS}_count{s.selector(promql.PREDICTIONS)}"
    errors = f"{promql.REQUESTS}_count{s.selector(promql.PREDICTIONS, promql.ERRORS)}"
    up = f'up{{{n.NAMESPACE}="{RECONCILER_NAMESPACE}",job=~".*sluice-reconciler.*"}}'
    failed = f'{n.VERDICT}="fail"'
    look = "Open sluice ui (or the Sluice rollouts Grafana dashboard) for the gates and the history."
    return [
        {
            "alert": "SluiceRolloutStuck",
            "expr": f"(time() - max by ({by_rollout}) ({n.ROLLOUT_DEADLINE}{s.selector()})) > 0",
            "for": "2m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "A rollout in {{ $labels.namespace }} is stuck past its stage deadline",
                "description": "The stage should have moved on by its bake time or its longest no-data wait; it "
                "is {{ $value | humanizeDuration }} past that. A step waiting for approval, a frozen or paused "
                "rollout, or a reconciler whose writes to Git fail keeps it there. " + look,
            },
        },
        {
            "alert": "SluiceGateFailing",
            "expr": f"max by ({by_rollout}, {n.GATE}) (max_over_time({n.GATE_VERDICT}{s.selector(failed)}[10m])) == 1",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "Gate {{ $labels.gate }} failed in {{ $labels.namespace }}",
                "description": "The gate's evidence put the candidate beyond its limit (or its data never came) in "
                "the last 10 minutes; the reconciler rolls the candidate back, or freezes the rollout, as "
                "the policy says. " + look,
            },
        },
        {
            "alert": "SluiceReconcilerNotTicking",
            "expr": f"(time() - max by ({env_labels}) ({n.RECONCILER_LAST_TICK}{s.selector(deployment=False)})) "
            f"> on ({env_labels}) (3 * max by ({env_labels}) ({n.RECONCILER_TICK_INTERVAL}{s.selector(deployment=False)}) + 120)",
            "for": "2m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "The reconciler of {{ $labels.environment }} has not ticked for {{ $value | humanizeDuration }}",
                "description": "Its loop runs every policy interval, rollout or not; no tick for three intervals "
                "(and two minutes) means it is stuck. Rollbacks wait until it ticks again.",
            },
        },
        {
            "alert": "SluiceReconcilerDown",
            "expr": f"max by ({n.NAMESPACE}, pod) ({up} == 0) or absent({up})",
            "for": "5m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "A Sluice reconciler is not being scraped",
                "description": "Prometheus cannot scrape a reconciler's /metrics (or finds none): it is down or "
                "crash-looping, and no rollout moves or rolls back meanwhile.",
            },
        },
        {
            "alert": "SluiceLoopFailing",
            "expr": f"max by ({env_labels}) ({n.LOOP_FAILURES}{s.selector(deployment=False)}) >= {LOOP_FAILURES}",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "The retraining loop of {{ $labels.environment }} failed its last {{ $value | humanize }} turns",
                "description": "Each failed turn is retried with a back-off, and meanwhile no retrain is collected, "
                "trained or opened. `sluice loop`'s log says why: Git, the registry or the DVC remote down, or a "
                "contract or pipeline that a change broke. (Reads sluice_loop_consecutive_failures, which `sluice "
                "loop --metrics-port` exports.)",
            },
        },
        {
            "alert": "SluiceRouterErrorRate",
            "expr": f"(sum by ({n.NAMESPACE}, {n.DEPLOYMENT}) (rate({errors}[5m])) / "
            f"sum by ({n.NAMESPACE}, {n.DEPLOYMENT}) (rate({predictions}[5m]))) > {ERROR_RATIO:g}",
            "for": "5m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "{{ $labels.deployment_name }} in {{ $labels.namespace }} answers {{ $value | humanizePercentage }} of predictions with a 5xx",
                "description": f"More than {ERROR_RATIO:.0%} of prediction requests through the router failed for "
                "five minutes, whichever predictor answered. " + look,
            },
        },
        {
            "alert": "SluiceDriftHigh",
            "expr": f"{promql.drift(s)} > {DRIFT_THRESHOLD:g}",
            "for": "30m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "Feature {{ $labels.feature }} drifted in {{ $labels.namespace }}",
                "description": f"Model monitoring's drift score stayed above {DRIFT_THRESHOLD:g} for 30 minutes: "
                "live inputs no longer look like the training data. (Reads sluice_drift_score, which "
                "`sluice monitor` exports.)",
            },
        },
    ]


def prometheus_rule() -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "sluice-rollouts",
            "namespace": RECONCILER_NAMESPACE,
            "labels": {"app.kubernetes.io/part-of": "sluice", "release": "kube-prometheus-stack"},
        },
        "spec": {"groups": [{"name": "sluice-rollouts", "interval": "30s", "rules": rules()}]},
    }


def configmap(dashboard_json: str) -> dict[str, Any]:
    """The dashboard as Grafana's sidecar (kube-prometheus-stack) loads it: a ConfigMap labelled grafana_dashboard."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "sluice-grafana-dashboard",
            "namespace": RECONCILER_NAMESPACE,
            "labels": {"app.kubernetes.io/part-of": "sluice", "grafana_dashboard": "1"},
        },
        "data": {"sluice-rollouts.json": dashboard_json},
    }


HEADER = (
    "# Rendered by `python -m dashboard.monitoring` from dashboard/promql.py: edit that, not this file.\n"
)


class _Dumper(yaml.SafeDumper):
    """YAML with multi-line strings as literal blocks (the dashboard's JSON stays readable in its ConfigMap)."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def _yaml(doc: dict[str, Any]) -> str:
    return HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)


def render() -> dict[Path, str]:
    dashboard_json = json.dumps(grafana_dashboard(), indent=2) + "\n"
    return {
        OUT / "grafana-dashboard.json": dashboard_json,
        OUT / "grafana-dashboard-configmap.yaml": _yaml(configmap(dashboard_json)),
        OUT / "prometheusrule.yaml": _yaml(prometheus_rule()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dashboard.monitoring", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a committed file differs")
    args = parser.parse_args(argv)
    stale = []
    for path, text in render().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    for path in stale:
        print(
            f"{path.relative_to(ROOT)} is not what dashboard/monitoring.py renders: run python -m dashboard.monitoring"
        )
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
