"""The `build-serving-image` WorkflowTemplate: kaniko builds serving/Dockerfile with the bundle baked in.

The bundle comes from the DVC remote at the trained commit and is checked against the digest `train`
produced before anything is built; the image is pushed by digest, and that digest is the template's output.
"""

from __future__ import annotations

from hera.workflows import DAG, Container, Parameter, WorkflowTemplate
from hera.workflows.models import (
    KeyToPath,
    SecretVolumeSource,
    SecurityContext,
    TTLStrategy,
    ValueFrom,
    Volume,
    VolumeMount,
)

from pipelines import steps
from pipelines.conventions import (
    KANIKO_IMAGE,
    NAMESPACE,
    OUTPUTS_DIR,
    REGISTRY_SECRET,
    REPO_URL,
    SERVING_IMAGE_REPO,
    SOURCE_DIR,
    WORKFLOW_SERVICE_ACCOUNT,
    labels,
    ui_annotations,
)
from pipelines.train import WORKSPACE_MOUNT, checkout_template, dvc_template, workspace_claim

NAME = "build-serving-image"

FETCH_BUNDLE = f"""
{steps.require("REVISION", steps.SHA, "a 40-character commit SHA")}
{steps.require("BUNDLE_DIGEST", steps.DIGEST, "a bundle digest (sha256:<64 hex>)")}
dvc pull package
actual=$(sluice model info artifacts/model --json | python -c 'import json,sys; print(json.load(sys.stdin)["digest"])')
if [ "$actual" != "$BUNDLE_DIGEST" ]; then
  echo "bundle at $REVISION has digest $actual, expected $BUNDLE_DIGEST" >&2
  exit 1
fi
echo "bundle $actual ready to bake in"
"""


def kaniko_template() -> Container:
    """kaniko needs no Docker daemon; registry credentials come from a dockerconfigjson Secret."""
    return Container(
        name="kaniko",
        annotations=ui_annotations(
            "Build and push",
            "kaniko builds `serving/Dockerfile` (bundle in `artifacts/model`) and pushes it; outputs the digest.",
        ),
        image=KANIKO_IMAGE,
        args=[
            f"--context=dir://{SOURCE_DIR}",
            "--dockerfile=serving/Dockerfile",
            "--target=serving",
            # argv, not shell; and `fetch-bundle` (before it in the DAG) refused any value not a SHA/digest
            f"--destination={SERVING_IMAGE_REPO}:{{{{workflow.parameters.revision}}}}",
            "--build-arg=BUNDLE_DIGEST={{workflow.parameters.bundle-digest}}",
            "--label=ai.sluice.bundle-digest={{workflow.parameters.bundle-digest}}",
            "--label=org.opencontainers.image.revision={{workflow.parameters.revision}}",
            f"--digest-file={OUTPUTS_DIR}/image-digest",
            f"--image-name-with-digest-file={OUTPUTS_DIR}/image",
            "--snapshot-mode=redo",
            "--cache=true",
            f"--cache-repo={SERVING_IMAGE_REPO}/cache",
        ],
        volume_mounts=[
            WORKSPACE_MOUNT,
            VolumeMount(name="registry-credentials", mount_path="/kaniko/.docker", read_only=True),
        ],
        # kaniko unpacks image layers onto its own filesystem, which needs root inside its container.
        security_context=SecurityContext(run_as_user=0, run_as_non_root=False),
        resources=steps.MEDIUM,
        retry_strategy=steps.NETWORK_RETRY,
        outputs=[
            Parameter(
                name="image-digest",
                value_from=ValueFrom(path=f"{OUTPUTS_DIR}/image-digest"),
                global_name="image-digest",
                description="sha256 digest of the pushed serving image: what the SeldonDeployment pins.",
            ),
            Parameter(
                name="image",
                value_from=ValueFrom(path=f"{OUTPUTS_DIR}/image"),
                global_name="image",
                description="The pushed image as repository:tag@sha256:...",
            ),
        ],
    )


def build() -> WorkflowTemplate:
    """The `build-serving-image` WorkflowTemplate (hera object)."""
    with WorkflowTemplate(
        name=NAME,
        namespace=NAMESPACE,
        labels=labels("build-serving-image"),
        annotations=ui_annotations(
            "Build the serving image",
            "Bake the model bundle of a trained commit into `serving/Dockerfile` with kaniko and push it "
            "by digest. Outputs the image digest for the promotion PR.",
        ),
        entrypoint="build",
        service_account_name=WORKFLOW_SERVICE_ACCOUNT,
        security_context=steps.NON_ROOT,
        workflow_metadata=steps.run_metadata(
            "build-serving-image",
            "Build the serving image",
            "kaniko build of serving/Dockerfile with a trained bundle baked in.",
        ),
        arguments=[
            Parameter(
                name="revision",
                description=f"Commit SHA of {REPO_URL} that `train` trained (its DVC outputs are pushed).",
            ),
            Parameter(
                name="bundle-digest",
                description="Digest `train` output (sha256:...); the build refuses a bundle that differs.",
            ),
        ],
        volume_claim_templates=[workspace_claim()],
        volumes=[
            Volume(
                name="registry-credentials",
                secret=SecretVolumeSource(
                    secret_name=REGISTRY_SECRET,
                    items=[KeyToPath(key=".dockerconfigjson", path="config.json")],
                ),
            )
        ],
        ttl_strategy=TTLStrategy(seconds_after_success=86400, seconds_after_failure=604800),
        active_deadline_seconds=3600,
    ) as template:
        checkout = checkout_template()
        fetch = dvc_template(
            "fetch-bundle",
            "Fetch the bundle",
            "`dvc pull package` at the trained commit; check the bundle's digest matches `bundle-digest`.",
            FETCH_BUNDLE,
            env=[
                steps.parameter_env("REVISION", "revision"),
                steps.parameter_env("BUNDLE_DIGEST", "bundle-digest"),
            ],
            resources=steps.SMALL,
            retry_strategy=steps.NETWORK_RETRY,
        )
        kaniko = kaniko_template()
        with DAG(name="build", annotations=ui_annotations("Build", "checkout -> fetch bundle -> kaniko")):
            steps.chain(checkout, fetch, kaniko)
    return template
