"""Retraining in the cluster: a nightly CronWorkflow and a drift-alert Sensor, each submitting the
`retrain-from-log` WorkflowTemplate (pipelines/retrain_from_log.py) from main.

The drift alert (`SluiceDriftHigh`, gitops/monitoring/prometheusrule.yaml, on the `sluice_drift_score` that
`sluice monitor` exports) reaches Argo Events through an Alertmanager webhook receiver pointed at the
`drift-alerts` EventSource (`http://drift-alerts-eventsource-svc.sluice:12000/alertmanager`); the Sensor
submits a run only for a firing alert of that name. The run reads the routers' prediction log, commits the
labelled live rows as a data version on a branch retrain/<run> (when a trigger fires and enough rows are newly
labelled), trains on it and pushes the branch, like `sluice loop` on one machine and the retrain GitHub
workflow.
Like events.py, the Argo Events objects are typed dicts checked against gitops/schemas/.
"""

from __future__ import annotations

from typing import Any

from hera.workflows import CronWorkflow
from hera.workflows.models import Arguments, WorkflowTemplateRef
from hera.workflows.models import Parameter as ModelParameter

from pipelines import steps
from pipelines.conventions import EVENTS_SERVICE_ACCOUNT, NAMESPACE, labels, ui_annotations
from pipelines.events import Resource
from pipelines.retrain_from_log import NAME as RETRAIN_TEMPLATE

CRON_NAME = "train-nightly"
EVENT_SOURCE_NAME = "drift-alerts"
EVENT_NAME = "alertmanager"
SENSOR_NAME = "train-on-drift"
ALERT = "SluiceDriftHigh"
PORT = "12000"
WEBHOOK_SECRET = "sluice-drift-webhook"  # a Secret with `token`: the bearer token Alertmanager sends


def build_cron() -> CronWorkflow:
    """Every night at 03:30 UTC, retrain from the log (a no-op when no trigger fires or too few new labels)."""
    return CronWorkflow(
        name=CRON_NAME,
        namespace=NAMESPACE,
        labels=labels("train"),
        annotations=ui_annotations(
            "Nightly retraining",
            "Every night at 03:30 UTC: run `retrain-from-log` from main (the schedule is one of its triggers).",
        ),
        schedules=["30 3 * * *"],
        timezone="UTC",
        concurrency_policy="Forbid",
        starting_deadline_seconds=600,
        successful_jobs_history_limit=3,
        failed_jobs_history_limit=7,
        workflow_template_ref=WorkflowTemplateRef(name=RETRAIN_TEMPLATE),
        workflow_metadata=steps.run_metadata(
            "retrain", "Nightly retraining", "Scheduled run of `retrain-from-log` from main."
        ),
        arguments=Arguments(parameters=[ModelParameter(name="revision", value="main")]),
    )


def event_source() -> Resource:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "EventSource",
        "metadata": {
            "name": EVENT_SOURCE_NAME,
            "namespace": NAMESPACE,
            "labels": labels("drift-alerts"),
            "annotations": {
                "sluice.dev/description": "Receives Alertmanager's webhook notifications (point a receiver for "
                f"the {ALERT} alert at port {PORT}, path /alertmanager)."
            },
        },
        # Only a caller with the token (Alertmanager's webhook_config: http_config.authorization.credentials)
        # may start a training: the endpoint is otherwise anyone's in the cluster.
        "spec": {
            "webhook": {
                EVENT_NAME: {
                    "endpoint": "/alertmanager",
                    "method": "POST",
                    "port": PORT,
                    "authSecret": {"name": WEBHOOK_SECRET, "key": "token"},
                }
            }
        },
    }


def dependency() -> dict[str, Any]:
    """Only a firing SluiceDriftHigh notification (Alertmanager's webhook body: status, commonLabels)."""
    return {
        "name": "drift",
        "eventSourceName": EVENT_SOURCE_NAME,
        "eventName": EVENT_NAME,
        "filters": {
            "data": [
                {"path": "body.status", "type": "string", "value": ["firing"]},
                {"path": "body.commonLabels.alertname", "type": "string", "value": [ALERT]},
            ]
        },
    }


def workflow_to_submit() -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "generateName": "retrain-drift-",
            "namespace": NAMESPACE,
            "labels": {**labels("retrain"), "sluice.dev/trigger": "drift"},
        },
        "spec": {
            "workflowTemplateRef": {"name": RETRAIN_TEMPLATE},
            "arguments": {"parameters": [{"name": "revision", "value": "main"}]},
        },
    }


def sensor() -> Resource:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Sensor",
        "metadata": {
            "name": SENSOR_NAME,
            "namespace": NAMESPACE,
            "labels": labels("train"),
            "annotations": {
                "sluice.dev/description": f"Submits the retrain-from-log template when {ALERT} fires."
            },
        },
        "spec": {
            "template": {"serviceAccountName": EVENTS_SERVICE_ACCOUNT},
            "dependencies": [dependency()],
            "triggers": [
                {
                    "template": {
                        "name": "submit-retrain",
                        "argoWorkflow": {"operation": "submit", "source": {"resource": workflow_to_submit()}},
                    },
                    # Alertmanager notifies again every repeat_interval: at most one training an hour.
                    "rateLimit": {"unit": "Hour", "requestsPerUnit": 1},
                    "retryStrategy": {"steps": 3, "duration": "10s", "factor": 2},
                }
            ],
        },
    }
