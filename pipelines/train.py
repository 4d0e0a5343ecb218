"""The `train` WorkflowTemplate: check out a commit, `dvc pull`, `dvc repro`, `dvc push`, register in MLflow.

Its outputs (the bundle digest, the metrics JSON and the registry version) become workflow-level outputs,
so the Argo UI shows them on the run and `build-serving-image` can take the digest as its input.
"""

from __future__ import annotations

from typing import Any

from hera.workflows import (
    DAG,
    Env,
    GitArtifact,
    Parameter,
    Script,
    WorkflowTemplate,
)
from hera.workflows.models import ObjectMeta as ModelObjectMeta
from hera.workflows.models import (
    PersistentVolumeClaim,
    PersistentVolumeClaimSpec,
    SecretKeySelector,
    TTLStrategy,
    ValueFrom,
    VolumeMount,
    VolumeResourceRequirements,
)

from pipelines import steps
from pipelines.conventions import (
    DVC_ACCESS_KEY,
    DVC_SECRET_KEY,
    GIT_TOKEN,
    GIT_USERNAME,
    MLFLOW_TOKEN,
    NAMESPACE,
    OUTPUTS_DIR,
    REPO_URL,
    RUNTIME_IMAGE,
    S3_ENDPOINT_URL,
    SOURCE_DIR,
    WORKFLOW_SERVICE_ACCOUNT,
    WORKSPACE,
    labels,
    ui_annotations,
)

NAME = "train"


def workspace_claim(size: str = "2Gi") -> PersistentVolumeClaim:
    """A volume the steps of one run share (the checkout, the DVC cache, the bundle); deleted with the run."""
    return PersistentVolumeClaim(
        metadata=ModelObjectMeta(name="workspace"),
        spec=PersistentVolumeClaimSpec(
            access_modes=["ReadWriteOnce"],
            resources=VolumeResourceRequirements(requests={"storage": size}),
        ),
    )


WORKSPACE_MOUNT = VolumeMount(name="workspace", mount_path=WORKSPACE)


def checkout_template(name: str = "checkout", revision: str = "{{workflow.parameters.revision}}") -> Script:
    """Argo fetches the configured repository (never one a submitter names: the git credentials go to it) at
    `revision` (git input artifact); the step copies it to the workspace."""
    return Script(
        name=name,
        annotations=ui_annotations(
            "Check out", "Fetch the repository at `revision` into the shared workspace."
        ),
        image=RUNTIME_IMAGE,
        command=["bash"],
        source=steps.bash(
            f"""
mkdir -p {SOURCE_DIR}
cp -a /tmp/checkout/. {SOURCE_DIR}/
git_head=$(cat {SOURCE_DIR}/.git/HEAD)
printf 'checked out %s (%s) into {SOURCE_DIR}\\n' "$REVISION" "$git_head"
"""
        ),
        env=[Env(name="REVISION", value=revision)],
        inputs=[
            GitArtifact(
                name="source",
                path="/tmp/checkout",
                repo=REPO_URL,
                revision=revision,
                username_secret=SecretKeySelector(name=GIT_USERNAME.secret, key=GIT_USERNAME.key),
                password_secret=SecretKeySelector(name=GIT_TOKEN.secret, key=GIT_TOKEN.key),
            )
        ],
        volume_mounts=[WORKSPACE_MOUNT],
        resources=steps.SMALL,
        retry_strategy=steps.NETWORK_RETRY,
    )


def dvc_env() -> list[Any]:
    return [
        *steps.quiet_env(),
        steps.secret_env("AWS_ACCESS_KEY_ID", DVC_ACCESS_KEY),
        steps.secret_env("AWS_SECRET_ACCESS_KEY", DVC_SECRET_KEY),
        Env(name="AWS_ENDPOINT_URL", value=S3_ENDPOINT_URL),  # the DVC remote, over TLS like every S3 client
        steps.config_env("MLFLOW_TRACKING_URI", "mlflow-tracking-uri"),
        steps.secret_env("MLFLOW_TRACKING_TOKEN", MLFLOW_TOKEN, optional=True),
    ]


def dvc_template(
    name: str, title: str, description: str, command: str, env: list[Any] | None = None, **kwargs: Any
) -> Script:
    return Script(
        name=name,
        annotations=ui_annotations(title, description),
        image=RUNTIME_IMAGE,
        command=["bash"],
        source=steps.bash(f"cd {SOURCE_DIR}\n{command}"),
        env=[*dvc_env(), *(env or [])],
        volume_mounts=[WORKSPACE_MOUNT],
        **kwargs,
    )


REGISTER = f"""
mkdir -p {OUTPUTS_DIR}
sluice model info artifacts/model --json > {OUTPUTS_DIR}/bundle.json
python - <<'PY'
import json
info = json.load(open("{OUTPUTS_DIR}/bundle.json"))
open("{OUTPUTS_DIR}/bundle-digest", "w").write(info["digest"])
json.dump(info["metrics"], open("{OUTPUTS_DIR}/metrics.json", "w"), sort_keys=True)
PY
# `dvc repro`'s package stage registered the bundle; this finds it by digest and marks it the challenger.
sluice model promote-alias "$(cat {OUTPUTS_DIR}/bundle-digest)" --alias challenger \
  | tee {OUTPUTS_DIR}/registry.txt
"""


def register_template() -> Script:
    return dvc_template(
        "register",
        "Register in MLflow",
        "Read the bundle's digest and metrics; point the `challenger` alias at its registry version.",
        REGISTER,
        resources=steps.SMALL,
        retry_strategy=steps.NETWORK_RETRY,
        outputs=[
            Parameter(
                name="bundle-digest",
                value_from=ValueFrom(path=f"{OUTPUTS_DIR}/bundle-digest"),
                global_name="bundle-digest",
                description="sha256 digest of the model bundle: names the model version everywhere.",
            ),
            Parameter(
                name="metrics",
                value_from=ValueFrom(path=f"{OUTPUTS_DIR}/metrics.json"),
                global_name="metrics",
                description="Held-out metrics of the bundle (JSON), as written by the evaluate stage.",
            ),
            Parameter(
                name="registry",
                value_from=ValueFrom(path=f"{OUTPUTS_DIR}/registry.txt"),
                global_name="registry",
                description="The MLflow registry version the challenger alias now points at.",
            ),
        ],
    )


def build() -> WorkflowTemplate:
    """The `train` WorkflowTemplate (hera object)."""
    with WorkflowTemplate(
        name=NAME,
        namespace=NAMESPACE,
        labels=labels("train"),
        annotations=ui_annotations(
            "Train a model",
            "Check out a commit, run the DVC pipeline (validate, train, evaluate, package), push the "
            "outputs to the DVC remote and register the bundle in MLflow. Outputs the bundle digest.",
        ),
        entrypoint="train",
        service_account_name=WORKFLOW_SERVICE_ACCOUNT,
        security_context=steps.NON_ROOT,
        arguments=[
            Parameter(
                name="revision",
                value="main",
                description=f"Commit SHA (or branch) of {REPO_URL} to train; CI passes the pushed commit.",
            ),
        ],
        workflow_metadata=steps.run_metadata(
            "train", "Train", "dvc pull, dvc repro, dvc push at one commit; the bundle registered in MLflow."
        ),
        volume_claim_templates=[workspace_claim()],
        ttl_strategy=TTLStrategy(seconds_after_success=86400, seconds_after_failure=604800),
        active_deadline_seconds=3 * 3600,
    ) as template:
        checkout = checkout_template()
        pull = dvc_template(
            "dvc-pull",
            "dvc pull",
            "Fetch data and cached stage outputs from the DVC remote (missing ones are rebuilt).",
            "dvc pull --allow-missing",
            resources=steps.SMALL,
            retry_strategy=steps.NETWORK_RETRY,
        )
        repro = dvc_template(
            "dvc-repro",
            "dvc repro",
            "Run the pipeline: prepare, validate (Great Expectations), train, evaluate (gate against "
            "the champion), package. Stops on the first failed check.",
            "dvc repro\ndvc metrics show",
            resources=steps.LARGE,
        )
        push = dvc_template(
            "dvc-push",
            "dvc push",
            "Upload data, the model and stage outputs to the DVC remote.",
            "dvc push",
            resources=steps.SMALL,
            retry_strategy=steps.NETWORK_RETRY,
        )
        register = register_template()
        with DAG(
            name="train",
            annotations=ui_annotations("Train", "checkout -> dvc pull -> dvc repro -> dvc push -> register"),
        ):
            steps.chain(checkout, pull, repro, push, register)
    return template
