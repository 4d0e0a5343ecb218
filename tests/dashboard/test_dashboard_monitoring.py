"""The cluster's monitoring: the Grafana dashboard against Grafana's own JSON schemas, every PromQL expression
(panels, variables, annotations, alert rules) parsed by Prometheus' promtool, every selector naming the
namespace, and the alert rules' behaviour checked with `promtool test rules` on series written for each alert."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from testkit.services import need

from dashboard import monitoring
from deployment import metric_names as n

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "gitops" / "schemas" / "grafana"
GRAFANA_MACROS = {
    "$__rate_interval": "2m",
    "$__interval": "1m",
    "$namespace": "sluice-staging",
    "$deployment": "sluice-classifier",
}


def schema(name: str, definition: str | None = None) -> Any:
    from jsonschema import Draft7Validator

    doc = json.loads((SCHEMAS / f"{name}.jsonschema.json").read_text())
    if definition is not None:
        doc = {**doc, "$ref": f"#/definitions/{definition}"}
    return Draft7Validator(doc)


def problems(validator: Any, value: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(value)]


def grafana_problems(dashboard: dict[str, Any]) -> list[str]:
    found = problems(schema("dashboard"), dashboard)
    target = schema("prometheus")
    options = {kind: schema(kind, "Options") for kind in ("timeseries", "stat", "table")}
    custom = schema("timeseries", "FieldConfig")
    for p in dashboard["panels"]:
        where = f"panel {p['id']} ({p['title']})"
        for t in p.get("targets", []):
            found += [f"{where} target {t.get('refId')}: {m}" for m in problems(target, t)]
        if p["type"] in options:
            found += [f"{where} options: {m}" for m in problems(options[p["type"]], p["options"])]
        if p["type"] == "timeseries":
            found += [
                f"{where} custom: {m}" for m in problems(custom, p["fieldConfig"]["defaults"]["custom"])
            ]
    return found


def test_the_committed_files_are_what_the_code_renders() -> None:
    assert monitoring.main(["--check"]) == 0, "run `python -m dashboard.monitoring`"
    committed = json.loads((monitoring.OUT / "grafana-dashboard.json").read_text())
    configmap = yaml.safe_load((monitoring.OUT / "grafana-dashboard-configmap.yaml").read_text())
    assert json.loads(configmap["data"]["sluice-rollouts.json"]) == committed
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_the_grafana_dashboard_follows_grafanas_schema() -> None:
    dashboard = json.loads((monitoring.OUT / "grafana-dashboard.json").read_text())
    assert grafana_problems(dashboard) == []
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:  # every panel inside the 24-column grid, none overlapping the next row
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
    titles = {p["title"] for p in dashboard["panels"]}
    # the panels of sluice ui
    assert {
        "Traffic per predictor (as in Git)",
        "Gates at the last tick",
        "Requests per second",
        "Error ratio",
        "Latency",
        "Accuracy from feedback",
        "Shadow disagreement",
        "Since the reconciler's last tick",
        "Drift score per feature",
    } <= titles


@pytest.mark.parametrize(
    "break_it, where",
    [
        (lambda d: d.pop("templating"), "templating"),
        (lambda d: d["panels"][1].update(gridPos={"x": 0, "y": 0, "w": 30, "h": 4}), "panels/1/gridPos/w"),
        (lambda d: d["panels"][1]["targets"][0].update(exprr="up"), "target A"),
        (lambda d: d["panels"][1]["options"].update(textMode="shout"), "options"),
        (lambda d: d["panels"][6]["fieldConfig"]["defaults"]["custom"].update(lineWidht=2), "custom"),
        (lambda d: d["panels"][1].update(gridpos={}), "panels/1"),
    ],
    ids=["no-templating", "too-wide", "typo-in-target", "bad-option", "typo-in-custom", "typo-in-panel"],
)
def test_the_schema_check_catches_a_broken_dashboard(break_it: Any, where: str) -> None:
    dashboard = copy.deepcopy(monitoring.grafana_dashboard())
    break_it(dashboard)
    found = grafana_problems(dashboard)
    assert found and any(where in p or where.split("/")[0] in p for p in found), found


def all_expressions() -> list[tuple[str, str]]:
    exprs = monitoring.expressions(monitoring.grafana_dashboard())
    exprs += [(f"alert {r['alert']}", r["expr"]) for r in monitoring.rules()]
    return exprs


def concrete(expr: str) -> str:
    for macro, value in GRAFANA_MACROS.items():
        expr = expr.replace(macro, value)
    return expr


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need("promtool", "Debian's prometheus package"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_expression_parses_with_promtool(tmp_path: Path) -> None:
    exprs = all_expressions()
    assert len(exprs) >= 25
    group = {
        "name": "every-sluice-expression",
        "rules": [{"record": f"sluice:check:{i}", "expr": concrete(e)} for i, (_, e) in enumerate(exprs)],
    }
    (tmp_path / "expressions.yaml").write_text(yaml.safe_dump({"groups": [group]}))
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(monitoring.prometheus_rule()["spec"]))
    for name in ("expressions.yaml", "alerts.yaml"):
        checked = promtool("check", "rules", name, cwd=tmp_path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    # and promtool does refuse a broken one
    group["rules"] = [{"record": "sluice:check:broken", "expr": 'sum by (a (x{namespace="n"})'}]
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump({"groups": [group]}))
    assert promtool("check", "rules", "broken.yaml", cwd=tmp_path).returncode != 0


SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?\s*(\[[^\]]*\])?")
KEYWORDS = {
    "sum", "max", "min", "by", "on", "rate", "increase", "time", "histogram_quantile", "max_over_time", "changes",
    "absent", "label_values", "and", "or", "le", "s", "m", "h",
}  # fmt: skip


def test_every_selector_names_the_namespace() -> None:
    """staging and production run the same deployment and predictor names: a query without the namespace would
    mix them. Every series a query reads is selected by namespace, and is one of deployment/metric_names.py's."""
    known = {v for k, v in vars(n).items() if k.isupper() and isinstance(v, str)}
    known |= {n.total(v) for v in list(known)} | {
        f"{v}_{s}" for v in list(known) for s in ("count", "bucket")
    }
    for where, expr in all_expressions():
        blank = lambda m: " " * len(m[0])  # noqa: E731 (same length: positions stay those of `expr`)
        text = re.sub(r'"[^"]*"', lambda m: '"' + " " * (len(m[0]) - 2) + '"', expr)  # values out of the way
        text = re.sub(r"\b(?:by|on) \([^)]*\)", blank, text)
        names = []
        for m in SELECTOR.finditer(text):
            name, braces = m[1], m[2]
            if name in KEYWORDS or name.replace(".", "").isdigit() or (braces is None and m[3] is None):
                continue
            names.append(name)
            original = expr[m.start() :]
            selector = original[original.index("{") : original.index("}") + 1] if braces else ""
            assert re.search(r"\bnamespace\s*=~?\s*\"", selector), (
                f"{where}: {name} without a namespace: {expr}"
            )
            assert name == "up" or name in known, (
                f"{where}: {name} is not a name from deployment/metric_names.py"
            )
        assert names, f"{where}: no selector found in {expr}"


# `promtool test rules`: series for each alert, and what must (and must not) fire ------------------------------
def alert_tests() -> dict[str, Any]:
    ns = 'namespace="sluice-production",environment="production",deployment_name="sluice-classifier"'
    nse = 'namespace="sluice-production",environment="production"'
    req = f"{n.SERVER_REQUESTS}_count"
    pred = 'namespace="sluice-production",deployment_name="sluice-classifier",predictor_name="m-1",service="predictions"'
    return {
        "rule_files": ["alerts.yaml"],
        "evaluation_interval": "30s",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # a stage whose deadline was at t=5m (300 s); another environment's is far ahead
                    {"series": f"{n.ROLLOUT_DEADLINE}{{{ns}}}", "values": "300x20"},
                    {
                        "series": f'{n.ROLLOUT_DEADLINE}{{namespace="sluice-staging",environment="staging",deployment_name="sluice-classifier"}}',
                        "values": "100000x20",
                    },
                    # a gate that failed once at t=3m, then the rollout ended
                    {
                        "series": f'{n.GATE_VERDICT}{{{ns},gate="accuracy",metric="accuracy",verdict="fail"}}',
                        "values": "0 0 0 1",
                    },
                    # a reconciler whose heartbeat stopped at t=2m (interval 30 s)
                    {"series": f"{n.RECONCILER_LAST_TICK}{{{nse}}}", "values": "0 60 120 120x20"},
                    {"series": f"{n.RECONCILER_TICK_INTERVAL}{{{nse}}}", "values": "30x25"},
                    # 10 % errors from t=0 on one deployment
                    {"series": f'{req}{{{pred},code="200"}}', "values": "0+540x20"},
                    {"series": f'{req}{{{pred},code="500"}}', "values": "0+60x20"},
                    # feedback failing does not count as prediction errors
                    {
                        "series": f'{req}{{{pred.replace("predictions", "feedback")},code="500"}}',
                        "values": "0+6000x20",
                    },
                    # a retraining loop whose turns fail from t=1m, then one works at t=5m
                    {"series": f"{n.LOOP_FAILURES}{{{nse}}}", "values": "0 1 2 3 4 0 0"},
                    {
                        "series": f'{n.DRIFT_SCORE}{{{ns},predictor_name="m-1",feature="age"}}',
                        "values": "0.5x60",
                    },
                ],
                "alert_rule_test": [
                    {"eval_time": "4m", "alertname": "SluiceRolloutStuck", "exp_alerts": []},
                    {
                        "eval_time": "8m",
                        "alertname": "SluiceRolloutStuck",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "namespace": "sluice-production",
                                    "environment": "production",
                                    "deployment_name": "sluice-classifier",
                                },
                                "exp_annotations": _annotations("SluiceRolloutStuck", {"value": "3m 0s"}),
                            }
                        ],
                    },
                    {"eval_time": "2m", "alertname": "SluiceGateFailing", "exp_alerts": []},
                    {
                        "eval_time": "5m",
                        "alertname": "SluiceGateFailing",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "namespace": "sluice-production",
                                    "environment": "production",
                                    "deployment_name": "sluice-classifier",
                                    "gate": "accuracy",
                                },
                                "exp_annotations": _annotations("SluiceGateFailing", {}),
                            }
                        ],
                    },
                    {"eval_time": "15m", "alertname": "SluiceGateFailing", "exp_alerts": []},
                    {"eval_time": "5m", "alertname": "SluiceReconcilerNotTicking", "exp_alerts": []},
                    {
                        "eval_time": "10m",
                        "alertname": "SluiceReconcilerNotTicking",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "namespace": "sluice-production",
                                    "environment": "production",
                                },
                                "exp_annotations": _annotations(
                                    "SluiceReconcilerNotTicking", {"value": "8m 0s"}
                                ),
                            }
                        ],
                    },
                    {"eval_time": "2m", "alertname": "SluiceLoopFailing", "exp_alerts": []},
                    {
                        "eval_time": "3m",
                        "alertname": "SluiceLoopFailing",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "namespace": "sluice-production",
                                    "environment": "production",
                                },
                                "exp_annotations": _annotations("SluiceLoopFailing", {"value": "3"}),
                            }
                        ],
                    },
                    {"eval_time": "5m", "alertname": "SluiceLoopFailing", "exp_alerts": []},
                    {"eval_time": "4m", "alertname": "SluiceRouterErrorRate", "exp_alerts": []},
                    {
                        "eval_time": "12m",
                        "alertname": "SluiceRouterErrorRate",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "namespace": "sluice-production",
                                    "deployment_name": "sluice-classifier",
                                },
                                "exp_annotations": _annotations("SluiceRouterErrorRate", {"value": "10%"}),
                            }
                        ],
                    },
                    {"eval_time": "20m", "alertname": "SluiceDriftHigh", "exp_alerts": []},
                    {
                        "eval_time": "40m",
                        "alertname": "SluiceDriftHigh",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "namespace": "sluice-production",
                                    "deployment_name": "sluice-classifier",
                                    "predictor_name": "m-1",
                                    "feature": "age",
                                },
                                "exp_annotations": _annotations("SluiceDriftHigh", {}),
                            }
                        ],
                    },
                ],
            }
        ],
    }


def _annotations(alert: str, values: dict[str, str]) -> dict[str, str]:
    """The rule's annotations as Prometheus renders them for the test's labels and value."""
    rule = next(r for r in monitoring.rules() if r["alert"] == alert)
    labels = {
        "namespace": "sluice-production",
        "environment": "production",
        "deployment_name": "sluice-classifier",
        "gate": "accuracy",
        "feature": "age",
    }
    out = {}
    for key, text in rule["annotations"].items():
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m[1]], text)
        text = re.sub(r"\{\{ \$value \| \w+ \}\}", lambda _: values["value"], text)
        out[key] = text
    return out


def test_the_alerts_fire_when_they_should_and_only_then(tmp_path: Path) -> None:
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(monitoring.prometheus_rule()["spec"]))
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(alert_tests(), sort_keys=False))
    result = promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_prometheus_scrapes_every_reconciler_and_keeps_its_namespace_label() -> None:
    from pipelines.schemas import validate_file

    monitor_path = monitoring.OUT / "reconciler-podmonitor.yaml"
    reconcilers = [
        d
        for d in yaml.safe_load_all((REPO / "gitops" / "cluster" / "reconciler.yaml").read_text())
        if d and d["kind"] == "Deployment"
    ]
    monitor = yaml.safe_load(monitor_path.read_text())
    assert validate_file(monitor_path) == []
    assert validate_file(monitoring.OUT / "prometheusrule.yaml") == []
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["honorLabels"] is True  # the series' namespace is the environment's, not sluice-system
    assert reconcilers
    for d in reconcilers:
        pod = d["spec"]["template"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        assert d["metadata"]["namespace"] in monitor["spec"]["namespaceSelector"]["matchNames"]
        (container,) = pod["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        args = container["args"]
        assert str(ports[endpoint["port"]]) == args[args.index("--metrics-port") + 1]
        assert args[args.index("--metrics-host") + 1] == "0.0.0.0"
    # the rule watching for reconcilers that are not scraped at all names this PodMonitor's job
    down = next(r for r in monitoring.rules() if r["alert"] == "SluiceReconcilerDown")
    assert monitor["metadata"]["name"] in down["expr"] and monitor["metadata"]["namespace"] in down["expr"]
