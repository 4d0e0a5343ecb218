"""Retraining in the cluster: the nightly CronWorkflow and the drift Sensor submit the `retrain-from-log` template with
parameters it declares, and the Sensor listens for the drift alert the PrometheusRule really defines, behind a
token."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipelines import retrain, retrain_from_log

REPO = Path(__file__).resolve().parents[2]


def declared() -> set[str]:
    return {p["name"] for p in retrain_from_log.build().to_dict()["spec"]["arguments"]["parameters"]}


def test_the_cron_runs_the_retrain_from_main_with_declared_parameters() -> None:
    spec = retrain.build_cron().to_dict()["spec"]
    assert spec["workflowSpec"]["workflowTemplateRef"]["name"] == retrain_from_log.NAME
    assert {p["name"] for p in spec["workflowSpec"]["arguments"]["parameters"]} <= declared()
    assert spec["concurrencyPolicy"] == "Forbid"


def test_the_sensor_submits_the_retrain_only_for_the_firing_drift_alert() -> None:
    rules = yaml.safe_load((REPO / "gitops/monitoring/prometheusrule.yaml").read_text())
    alerts = {r["alert"]: r for g in rules["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert "sluice_drift_score" in alerts[retrain.ALERT]["expr"]
    sensor = retrain.sensor()
    filters = {f["path"]: f["value"] for f in sensor["spec"]["dependencies"][0]["filters"]["data"]}
    assert filters == {"body.status": ["firing"], "body.commonLabels.alertname": [retrain.ALERT]}
    trigger = sensor["spec"]["triggers"][0]
    workflow = trigger["template"]["argoWorkflow"]["source"]["resource"]
    assert workflow["spec"]["workflowTemplateRef"]["name"] == retrain_from_log.NAME
    assert {p["name"] for p in workflow["spec"]["arguments"]["parameters"]} <= declared()
    assert trigger["rateLimit"] == {"unit": "Hour", "requestsPerUnit": 1}


def test_the_webhook_demands_a_token() -> None:
    (hook,) = retrain.event_source()["spec"]["webhook"].values()
    assert hook["authSecret"] == {"name": retrain.WEBHOOK_SECRET, "key": "token"}
