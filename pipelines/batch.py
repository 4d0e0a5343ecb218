"""Batch scoring on a bucket: the `batch-score` WorkflowTemplate and the nightly CronWorkflow that runs it.

The input is one object or a folder of shards. Argo lists the folder (a `data` template: Argo's own S3
listing, no code of ours), scores each shard in a pod of its own (`sluice batch score`, at most `PARALLELISM`
at a time), each writing its scores, rejects and summary under `<output-key>.parts/<run>/<shard key>`, and
one last pod gathers them into `output-key` (`sluice batch gather`). A failed shard can be retried alone
(`argo retry`): the shards that finished keep their parts. Argo moves every file (S3 artifacts, credentials by
secret reference); each step works on local paths, exactly as on one machine.
"""

from __future__ import annotations

from hera.workflows import (
    DAG,
    CronWorkflow,
    Data,
    NoneArchiveStrategy,
    Parameter,
    S3Artifact,
    Script,
    Task,
    WorkflowTemplate,
)
from hera.workflows.models import (
    Arguments,
    SecretKeySelector,
    TTLStrategy,
    ValueFrom,
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
    OUTPUTS_DIR,
    RUNTIME_IMAGE,
    S3_INSECURE,
    WORKFLOW_SERVICE_ACCOUNT,
    labels,
    ui_annotations,
)

NAME = "batch-score"
CRON_NAME = "batch-score-nightly"

FORMATS = ["csv", "parquet", "jsonl"]
PARALLELISM = 8  # shard pods at once: fixed here, not a parameter, so a submitter cannot flood the cluster
# Where a run keeps its shards' outputs (one folder per run, so a rerun never gathers another run's parts).
PARTS = "{{workflow.parameters.output-key}}.parts/{{workflow.name}}"
# The shards to score: the keys Argo listed under `input-key` that end in a known extension, or `input-key`
# itself when it is one object (Argo lists nothing under a file). An expression tag: the listed keys and the
# parameter are values to it, never text spliced into it.
SHARDS = (
    "{{=toJson(len(fromJSON(tasks['list-shards'].outputs.result)) == 0 ? "
    "[workflow.parameters['input-key']] : filter(fromJSON(tasks['list-shards'].outputs.result), "
    + "{"
    + " || ".join(f"# endsWith '.{fmt}'" for fmt in FORMATS)
    + "}))}}"
)

SCORE = f"""
{steps.require("MODEL", steps.MODEL_URI, "a registry URI (models:/name@alias or models:/name/version)")}
{steps.require("FORMAT", "|".join(FORMATS), "one of " + ", ".join(FORMATS))}
if [[ "$SHARD" != *".$FORMAT" ]]; then
  printf 'shard %q is not a .%s file (every shard of a run has the format parameter'"'"'s extension)\n' "$SHARD" "$FORMAT" >&2
  exit 2
fi
mkdir -p /tmp/scores
sluice batch score --model="$MODEL" --input="/tmp/input/records.$FORMAT" --output="/tmp/scores/scores.$FORMAT" \
  --summary-json=/tmp/scores/scores.summary.json
"""

GATHER = f"""
{steps.require("FORMAT", "|".join(FORMATS), "one of " + ", ".join(FORMATS))}
mkdir -p /tmp/scores {OUTPUTS_DIR}
sluice batch gather /tmp/parts --output="/tmp/scores/scores.$FORMAT" --summary-json={OUTPUTS_DIR}/summary.json
"""


def _s3(name: str, path: str | None, key: str, optional: bool = False) -> S3Artifact:
    # archive: none keeps the object a plain CSV/Parquet file instead of Argo's default tar.gz.
    return S3Artifact(
        name=name,
        archive=NoneArchiveStrategy() if path else None,
        path=path,
        bucket=BUCKET,
        endpoint=BUCKET_ENDPOINT,  # fixed: the bucket credentials go to this endpoint and no other
        insecure=S3_INSECURE,
        key=key,
        optional=optional or None,
        access_key_secret=SecretKeySelector(name=BUCKET_ACCESS_KEY.secret, key=BUCKET_ACCESS_KEY.key),
        secret_key_secret=SecretKeySelector(name=BUCKET_SECRET_KEY.secret, key=BUCKET_SECRET_KEY.key),
    )


def list_template() -> Data:
    """Argo's executor lists the keys under `input-key` (a JSON list, empty for a single object)."""
    return Data(
        name="list-shards",
        annotations=ui_annotations("List the shards", "The objects under `input-key` in the bucket."),
        source=_s3("input", None, "{{workflow.parameters.input-key}}"),
        retry_strategy=steps.NETWORK_RETRY,
    )


def score_template() -> Script:
    part = f"{PARTS}/{{{{inputs.parameters.shard}}}}"
    return Script(
        name="score-shard",
        annotations=ui_annotations(
            "Score a shard",
            "Download one shard, run `sluice batch score` with `model`, upload its scores, rejects and summary.",
        ),
        image=RUNTIME_IMAGE,
        command=["bash"],
        source=steps.bash(SCORE),
        env=[
            *steps.quiet_env(),
            steps.parameter_env("MODEL", "model"),
            steps.parameter_env("FORMAT", "format"),
            steps.input_env("SHARD", "shard"),
            steps.config_env("MLFLOW_TRACKING_URI", "mlflow-tracking-uri"),
            steps.secret_env("MLFLOW_TRACKING_TOKEN", MLFLOW_TOKEN, optional=True),
        ],
        inputs=[
            Parameter(name="shard", description="Object key of the shard to score."),
            _s3(
                "records", "/tmp/input/records.{{workflow.parameters.format}}", "{{inputs.parameters.shard}}"
            ),
        ],
        outputs=[
            _s3("scores", "/tmp/scores/scores.{{workflow.parameters.format}}", part),
            _s3("summary", "/tmp/scores/scores.summary.json", f"{part}.summary.json"),
            # Rows the signature refused, one JSON object per line with the reason (absent when none were).
            _s3(
                "rejects",
                "/tmp/scores/scores.{{workflow.parameters.format}}.rejects.jsonl",  # sluice's default name
                f"{part}.rejects.jsonl",
                optional=True,
            ),
        ],
        resources=steps.MEDIUM,
        retry_strategy=steps.NETWORK_RETRY,
    )


def gather_template() -> Script:
    return Script(
        name="gather",
        annotations=ui_annotations(
            "Gather the shards",
            "Join every shard's scores and rejects into `output-key` (`sluice batch gather`), in key order.",
        ),
        image=RUNTIME_IMAGE,
        command=["bash"],
        source=steps.bash(GATHER),
        env=[*steps.quiet_env(), steps.parameter_env("FORMAT", "format")],
        inputs=[_s3("parts", "/tmp/parts", PARTS)],
        outputs=[
            _s3(
                "scores",
                "/tmp/scores/scores.{{workflow.parameters.format}}",
                "{{workflow.parameters.output-key}}",
            ),
            _s3(
                "rejects",
                "/tmp/scores/scores.{{workflow.parameters.format}}.rejects.jsonl",
                "{{workflow.parameters.output-key}}.rejects.jsonl",
                optional=True,
            ),
            Parameter(
                name="summary",
                value_from=ValueFrom(path=f"{OUTPUTS_DIR}/summary.json"),
                global_name="summary",
                description="Shards, rows, scored and rejected (JSON), as the Argo UI shows the run's outputs.",
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
            "Score a file, or a folder of shards (one pod per shard), with a registered model and write the "
            "predictions to one file. Submitted nightly and whenever a new file lands.",
        ),
        entrypoint="batch-score",
        service_account_name=WORKFLOW_SERVICE_ACCOUNT,
        security_context=steps.NON_ROOT,
        workflow_metadata=steps.run_metadata(
            "batch-score",
            "Batch score",
            "Records scored with a registered model, one pod per shard, gathered into one file.",
        ),
        arguments=[
            Parameter(
                name="model",
                value=f"models:/{MODEL_NAME}@champion",
                description="Model to score with: models:/name@alias or models:/name/version.",
            ),
            Parameter(
                name="input-key",
                description="Object key of the records to score, or a folder (a key prefix ending in /) whose "
                "objects with the format's extension are the shards.",
            ),
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
        listing, score, join = list_template(), score_template(), gather_template()
        with DAG(
            name="batch-score",
            annotations=ui_annotations("Batch score", "list shards -> score each shard -> gather"),
            parallelism=PARALLELISM,
        ):
            shards = Task(name="list-shards", template=listing)
            scored = Task(
                name="score-shards",
                template=score,
                with_param=SHARDS,
                arguments=[Parameter(name="shard", value="{{item}}")],
            )
            gathered = Task(name="gather", template=join)
            shards >> scored
            scored >> gathered
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
