"""Event-triggered batch scoring: an Argo Events EventSource (new object in the bucket) and a Sensor that
submits the `batch-score` WorkflowTemplate for it.

hera builds Argo Workflows objects only; its generated Argo Events models mirror the gRPC API, whose shape
differs from the CRDs' YAML in places (a trigger's `source.resource` is base64 there, an inline object here).
So these two are typed dicts rendered as-is and checked against gitops/schemas/ (pipelines/schemas.py), with
the parts whose shapes agree (the MinIO source, the dependency) also round-tripped through hera's models.
"""

from __future__ import annotations

from typing import Any, TypedDict

from pipelines.batch import NAME as BATCH_TEMPLATE
from pipelines.conventions import (
    BUCKET,
    BUCKET_ACCESS_KEY,
    BUCKET_ENDPOINT,
    BUCKET_SECRET_KEY,
    EVENTS_SERVICE_ACCOUNT,
    NAMESPACE,
    S3_INSECURE,
    labels,
)

EVENT_SOURCE_NAME = "batch-inputs"
EVENT_NAME = "records-uploaded"
SENSOR_NAME = "batch-score-on-upload"
INCOMING_PREFIX = "incoming/"


class ObjectMeta(TypedDict, total=False):
    name: str
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str]


class Resource(TypedDict):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: dict[str, Any]


def _secret(ref: Any) -> dict[str, str]:
    return {"name": ref.secret, "key": ref.key}


def minio_source() -> dict[str, Any]:
    """One MinIO/S3 bucket-notification source: CSV files created under incoming/."""
    return {
        "bucket": {"name": BUCKET},
        "endpoint": BUCKET_ENDPOINT,
        "events": ["s3:ObjectCreated:Put", "s3:ObjectCreated:CompleteMultipartUpload"],
        "filter": {"prefix": INCOMING_PREFIX, "suffix": ".csv"},
        "insecure": S3_INSECURE,
        "accessKey": _secret(BUCKET_ACCESS_KEY),
        "secretKey": _secret(BUCKET_SECRET_KEY),
    }


def event_source() -> Resource:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "EventSource",
        "metadata": {
            "name": EVENT_SOURCE_NAME,
            "namespace": NAMESPACE,
            "labels": labels("batch-inputs"),
            "annotations": {
                "sluice.dev/description": "Emits an event for every CSV file uploaded under incoming/ "
                f"in the {BUCKET} bucket."
            },
        },
        "spec": {"minio": {EVENT_NAME: minio_source()}},
    }


def dependency() -> dict[str, Any]:
    return {"name": "new-records", "eventSourceName": EVENT_SOURCE_NAME, "eventName": EVENT_NAME}


# The MinIO notification carries the key at notification[0].s3.object.key; scores go to scores/<file name>.
OBJECT_KEY = "notification.0.s3.object.key"
SCORES_KEY_TEMPLATE = "scores/{{ (index .Input.notification 0).s3.object.key | base }}"


def workflow_to_submit() -> dict[str, Any]:
    """The Workflow the sensor creates: a run of `batch-score` whose keys the parameters below fill in."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "generateName": "batch-score-upload-",
            "namespace": NAMESPACE,
            "labels": {**labels("batch-score"), "sluice.dev/trigger": "upload"},
        },
        "spec": {
            "workflowTemplateRef": {"name": BATCH_TEMPLATE},
            "arguments": {
                "parameters": [
                    {"name": "input-key", "value": "set-by-sensor"},
                    {"name": "output-key", "value": "set-by-sensor"},
                ]
            },
        },
    }


def sensor() -> Resource:
    dep = dependency()["name"]
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Sensor",
        "metadata": {
            "name": SENSOR_NAME,
            "namespace": NAMESPACE,
            "labels": labels("batch-score"),
            "annotations": {
                "sluice.dev/description": "Submits the batch-score template for every new file in the bucket."
            },
        },
        "spec": {
            "template": {"serviceAccountName": EVENTS_SERVICE_ACCOUNT},
            "dependencies": [dependency()],
            "triggers": [
                {
                    "template": {
                        "name": "submit-batch-score",
                        "argoWorkflow": {
                            "operation": "submit",
                            "source": {"resource": workflow_to_submit()},
                            "parameters": [
                                {
                                    "src": {"dependencyName": dep, "dataKey": OBJECT_KEY},
                                    "dest": "spec.arguments.parameters.0.value",
                                },
                                {
                                    "src": {"dependencyName": dep, "dataTemplate": SCORES_KEY_TEMPLATE},
                                    "dest": "spec.arguments.parameters.1.value",
                                },
                            ],
                        },
                    },
                    "retryStrategy": {"steps": 3, "duration": "10s", "factor": 2},
                }
            ],
        },
    }
