"""Batch scoring on a bucket: the `batch-score` WorkflowTemplate and the nightly CronWorkflow that runs it.

Argo moves the files (S3 input and output artifacts, credentials by secret reference); the step itself is
`sluice batch score` on local paths, exactly as on one machine.
"""

from __future__ import annotations

from hera.workflows import (
    DAG,
    CronWorkflow,
    NoneArchiveStrategy,
    Parameter,
    S3Artifact,
    Script,
    WorkflowTemplate,
)
from hera.workflows.models import (
    Arguments,
    SecretKeySelector,
    TTLStrategy,
    WorkflowTemplateRef,
)
from hera.workflows.models import Parameter as ModelParameter

from pipelines import steps
from pipelines.conventions import (
    BUCKET,
    BUCKET_ACCESS_KEY,
    BUCKET_ENDPOINT,
    BUCKET_SECRET_KEY,
    MLFLOW_TOKEN,
    MODEL_NAME,
    NAMESPACE,
    RUNTIME_IMAGE,
    S3_INSECURE,
    WORKFLOW_SERVICE_ACCOUNT,
    labels,
    ui_annotations,
)

NAME = "batch-score"
CRON_NAME = "batch-score-nightly"

FORMATS = ["csv", "parquet", "jsonl"]
SCORE = f"""
{steps.require("MODEL", steps.MODEL_URI, "a registry URI (models:/name@alias or models:/name/version)")}
{steps.require("FORMAT", "|".join(FORMATS), "one of " + ", ".join(FORMATS))}
mkdir -p /tmp/scores
sluice batch score --model="$MODEL" --input="/tmp/input/records.$FORMAT" --output="/tmp/scores/scores.$FORMAT"
"""


def _s3(name: str, path: str, key: str, optional: bool = False) -> S3Artifact:
    # archive: none keeps the object a plain CSV/Parquet file instead of Argo's default tar.gz.
    return S3Artifact(
        name=name,
        archive=NoneArchiveStrategy(),
        path=path,
        bucket=BUCKET,
        endpoint=BUCKET_ENDPOINT,  # fixed: the bucket credentials go to this endpoint and no other
        insecure=S3_INSECURE,
        key=key,
        optional=optional or None,
        access_key_secret=SecretKeySelector(name=BUCKET_ACCESS_KEY.secret, key=BUCKET_ACCESS_KEY.key),
        secret_key_secret=SecretKeySelector(name=BUCKET_SECRET_KEY.secret, key=BUCKET_SECRET_KEY.key),
    )


def score_template() -> Script:
    return Script(
        name="score",
        annotations=ui_annotations(
            "Score a file",
            "Download `input-key`, run `sluice batch score` with `model`, upload the scores to `output-key`.",
        ),
        image=RUNTIME_IMAGE,
        command=["bash"],
        source=steps.bash(SCORE),
        env=[
            *steps.quiet_env(),
            steps.parameter_env("MODEL", "model"),
            steps.parameter_env("FORMAT", "format"),
            steps.config_env("MLFLOW_TRACKING_URI", "mlflow-tracking-uri"),
            steps.secret_env("MLFLOW_TRACKING_TOKEN", MLFLOW_TOKEN, optional=True),
        ],
        inputs=[
            _s3(
                "records",
                "/tmp/input/records.{{workflow.parameters.format}}",
                "{{workflow.parameters.input-key}}",
            )
        ],
        outputs=[
            _s3(
                "scores",
                "/tmp/scores/scores.{{workflow.parameters.format}}",
                "{{workflow.parameters.output-key}}",
            ),
            # Rows the signature refused, one JSON object per line with the reason (absent when none were).
            _s3(
                "rejects",
                "/tmp/scores/scores.rejects.jsonl",
                "{{workflow.parameters.output-key}}.rejects.jsonl",
                optional=True,
            ),
        ],
        resources=steps.MEDIUM,
        retry_strategy=steps.NETWORK_RETRY,
    )


def build() -> WorkflowTemplate:
    """The `batch-score` WorkflowTemplate (hera object)."""
    with WorkflowTemplate(
        name=NAME,
        namespace=NAMESPACE,
        labels=labels("batch-score"),
        annotations=ui_annotations(
            "Batch score",
            "Score one file of records from the bucket with a registered model and write the "
            "predictions next to it. Submitted nightly and whenever a new file lands.",
        ),
        entrypoint="batch-score",
        service_account_name=WORKFLOW_SERVICE_ACCOUNT,
        security_context=steps.NON_ROOT,
        workflow_metadata=steps.run_metadata(
            "batch-score",
            "Batch score",
            "One file of records scored with a registered model.",
        ),
        arguments=[
            Parameter(
                name="model",
                value=f"models:/{MODEL_NAME}@champion",
                description="Model to score with: models:/name@alias or models:/name/version.",
            ),
            Parameter(name="input-key", description="Object key of the records to score (CSV or Parquet)."),
            Parameter(name="output-key", description="Object key to write the predictions to."),
            Parameter(
                name="format",
                value="csv",
                enum=FORMATS,
                description="File format of input and output (the file extension sluice batch reads).",
            ),
        ],
        ttl_strategy=TTLStrategy(seconds_after_success=3600, seconds_after_failure=604800),
        active_deadline_seconds=3600,
    ) as template:
        score = score_template()
        with DAG(
            name="batch-score", annotations=ui_annotations("Batch score", "download -> score -> upload")
        ):
            score()
    return template


def build_cron() -> CronWorkflow:
    """Every night at 02:00 UTC, score the day's drop (incoming/<date>.csv) with the champion."""
    date = (
        "{{workflow.creationTimestamp.Y}}-{{workflow.creationTimestamp.m}}-{{workflow.creationTimestamp.d}}"
    )
    return CronWorkflow(
        name=CRON_NAME,
        namespace=NAMESPACE,
        labels=labels("batch-score"),
        annotations=ui_annotations(
            "Nightly batch scoring",
            "Every night at 02:00 UTC: score `incoming/<date>.csv` with the champion model into "
            "`scores/<date>.csv` (runs the `batch-score` template).",
        ),
        schedules=["0 2 * * *"],
        timezone="UTC",
        concurrency_policy="Forbid",
        starting_deadline_seconds=600,
        successful_jobs_history_limit=3,
        failed_jobs_history_limit=7,
        workflow_template_ref=WorkflowTemplateRef(name=NAME),
        workflow_metadata=steps.run_metadata(
            "batch-score", "Nightly batch scoring", "Scheduled run of `batch-score` on the day's drop."
        ),
        arguments=Arguments(
            parameters=[
                ModelParameter(name="input-key", value=f"incoming/{date}.csv"),
                ModelParameter(name="output-key", value=f"scores/{date}.csv"),
            ]
        ),
    )
