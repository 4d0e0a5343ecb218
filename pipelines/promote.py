"""The `promote` WorkflowTemplate: opens the promotion PR with `sluice rollout start` and the GitHub adapter.

The reconciler takes it from there (stages, gates, merges); this step only proposes the first change.
"""

from __future__ import annotations

from hera.workflows import DAG, Parameter, Script, WorkflowTemplate
from hera.workflows.models import TTLStrategy

from pipelines import steps
from pipelines.conventions import (
    GITHUB_TOKEN,
    MLFLOW_TOKEN,
    NAMESPACE,
    RUNTIME_IMAGE,
    SOURCE_DIR,
    WORKFLOW_SERVICE_ACCOUNT,
    labels,
    ui_annotations,
)
from pipelines.train import WORKSPACE_MOUNT, checkout_template, workspace_claim

NAME = "promote"
ENVIRONMENTS = ["staging", "production"]
PROMOTION_BASE = "main"  # the branch promotion PRs target and the checkout the step starts from

START = f"""
{steps.require("ENVIRONMENT", "|".join(ENVIRONMENTS), "an environment (" + ", ".join(ENVIRONMENTS) + ")")}
{steps.require("CANDIDATE", steps.MODEL_URI, "a registry URI (models:/name@alias or models:/name/version)")}
cd {SOURCE_DIR}
sluice rollout start --env="$ENVIRONMENT" --candidate="$CANDIDATE" --github="$GITHUB_REPOSITORY"
"""


def start_template() -> Script:
    return Script(
        name="rollout-start",
        annotations=ui_annotations(
            "Open the promotion PR",
            "`sluice rollout start`: add the candidate predictor to the environment's SeldonDeployment "
            "and open a pull request with the first traffic step.",
        ),
        image=RUNTIME_IMAGE,
        command=["bash"],
        source=steps.bash(START),
        env=[
            *steps.quiet_env(),
            steps.parameter_env("ENVIRONMENT", "env"),
            steps.parameter_env("CANDIDATE", "candidate"),
            steps.secret_env("GITHUB_TOKEN", GITHUB_TOKEN),
            steps.config_env("GITHUB_REPOSITORY", "github-repository"),
            steps.config_env("MLFLOW_TRACKING_URI", "mlflow-tracking-uri"),
            steps.secret_env("MLFLOW_TRACKING_TOKEN", MLFLOW_TOKEN, optional=True),
        ],
        volume_mounts=[WORKSPACE_MOUNT],
        resources=steps.SMALL,
        retry_strategy=steps.NETWORK_RETRY,
    )


def build() -> WorkflowTemplate:
    """The `promote` WorkflowTemplate (hera object)."""
    with WorkflowTemplate(
        name=NAME,
        namespace=NAMESPACE,
        labels=labels("promote"),
        annotations=ui_annotations(
            "Promote a model",
            "Open the promotion pull request that starts a rollout of a candidate model in an "
            "environment. The reconciler then advances it stage by stage behind metric gates.",
        ),
        entrypoint="promote",
        service_account_name=WORKFLOW_SERVICE_ACCOUNT,
        security_context=steps.NON_ROOT,
        workflow_metadata=steps.run_metadata(
            "promote",
            "Promote",
            "Opens the promotion pull request of a candidate model.",
        ),
        arguments=[
            Parameter(
                name="env",
                value="staging",
                enum=ENVIRONMENTS,
                description="Environment to promote into (gitops/environments/<env>/).",
            ),
            Parameter(
                name="candidate",
                description="The model to roll out: models:/name/version or models:/name@alias (e.g. @challenger).",
            ),
        ],
        volume_claim_templates=[workspace_claim("256Mi")],
        ttl_strategy=TTLStrategy(seconds_after_success=86400, seconds_after_failure=604800),
        active_deadline_seconds=1800,
    ) as template:
        checkout = checkout_template(revision=PROMOTION_BASE)
        start = start_template()
        with DAG(name="promote", annotations=ui_annotations("Promote", "checkout -> open promotion PR")):
            steps.chain(checkout, start)
    return template
