"""The `build-serving-image` WorkflowTemplate: BuildKit (rootless) builds serving/Dockerfile with the bundle
baked in.

The bundle comes from the DVC remote at the trained commit and is checked against the digest `train`
produced before anything is built; the image is pushed by digest, and that digest is the template's output.
BuildKit runs daemonless in the step's own container (`buildctl-daemonless.sh`), as uid 1000 in a user
namespace: no root, no privileged pod, no Docker socket. It still needs two things a default pod does not
allow (its examples/kubernetes/job.rootless.yaml): seccomp and AppArmor unconfined, to create the namespaces
a build runs in, and privilege escalation for the setuid `newuidmap` that maps them.
"""

from __future__ import annotations

from hera.workflows import DAG, Container, Env, Parameter, WorkflowTemplate
from hera.workflows.models import (
    AppArmorProfile,
    Capabilities,
    EmptyDirVolumeSource,
    KeyToPath,
    SeccompProfile,
    SecretVolumeSource,
    SecurityContext,
    TTLStrategy,
    ValueFrom,
    Volume,
    VolumeMount,
)

from pipelines import steps
from pipelines.conventions import (
    BUILDKIT_IMAGE,
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
BUILDER = "buildkit"  # the step's name in the DAG and the Argo UI
BUILDER_UID = 1000  # the user of BuildKit's rootless image
DOCKER_CONFIG = "/home/user/.docker"
CACHE = f"{SERVING_IMAGE_REPO}:buildcache"

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

# What buildctl is asked to build, from the fixed parts of the repository only (the parameters come in as
# environment variables, checked first, and go into the quoted options below).
BUILD_OPTIONS = [
    "--frontend=dockerfile.v0",
    f"--local=context={SOURCE_DIR}",
    f"--local=dockerfile={SOURCE_DIR}/serving",
    "--opt=filename=Dockerfile",
    "--opt=target=serving",
    f"--import-cache=type=registry,ref={CACHE}",
    f"--export-cache=type=registry,ref={CACHE},mode=max",
    f"--metadata-file={OUTPUTS_DIR}/build.json",
]
BUILD_ARGS = ["BUNDLE_DIGEST"]
_OPTIONS = " \\\n  ".join(BUILD_OPTIONS)

# BusyBox sh (the rootless image is Alpine): no bash, so the checks are grep -Ex on a single line.
BUILD = f"""set -eu
check() {{
  case "$2" in *'
'*) printf '%s: not %s (more than one line)\\n' "$1" "$4" >&2; exit 2 ;; esac
  printf '%s' "$2" | grep -Eqx "$3" || {{ printf '%s: not %s\\n' "$1" "$4" >&2; exit 2; }}
}}
check REVISION "$REVISION" '{steps.SHA}' 'a 40-character commit SHA'
check BUNDLE_DIGEST "$BUNDLE_DIGEST" '{steps.DIGEST}' 'a bundle digest (sha256:<64 hex>)'
mkdir -p {OUTPUTS_DIR}
buildctl-daemonless.sh build {_OPTIONS} \\
  --opt="build-arg:BUNDLE_DIGEST=$BUNDLE_DIGEST" \\
  --opt="label:ai.sluice.bundle-digest=$BUNDLE_DIGEST" \\
  --opt="label:org.opencontainers.image.revision=$REVISION" \\
  --output="type=image,name={SERVING_IMAGE_REPO}:$REVISION,push=true"
digest=$(sed -n 's/^ *"containerimage.digest": *"\\(sha256:[0-9a-f]*\\)".*/\\1/p' {OUTPUTS_DIR}/build.json)
check image-digest "$digest" '{steps.DIGEST}' 'the pushed image digest in {OUTPUTS_DIR}/build.json'
printf '%s' "$digest" > {OUTPUTS_DIR}/image-digest
printf '%s' "{SERVING_IMAGE_REPO}:$REVISION@$digest" > {OUTPUTS_DIR}/image
"""


def buildkit_template() -> Container:
    """BuildKit builds and pushes the serving image; registry credentials come from a dockerconfigjson Secret."""
    if "{{" in BUILD:
        raise ValueError("the build script may not contain Argo expressions (pass them as env)")
    return Container(
        name=BUILDER,
        annotations=ui_annotations(
            "Build and push",
            "BuildKit (rootless) builds `serving/Dockerfile` (bundle in `artifacts/model`) and pushes it; "
            "outputs the digest.",
        ),
        image=BUILDKIT_IMAGE,
        command=["sh", "-c", BUILD],
        env=[
            steps.parameter_env("REVISION", "revision"),
            steps.parameter_env("BUNDLE_DIGEST", "bundle-digest"),
            # Rootless BuildKit cannot mount its own /proc in a pod (examples/kubernetes/job.rootless.yaml).
            Env(name="BUILDKITD_FLAGS", value="--oci-worker-no-process-sandbox"),
            Env(name="DOCKER_CONFIG", value=DOCKER_CONFIG),
        ],
        volume_mounts=[
            WORKSPACE_MOUNT,
            VolumeMount(name="registry-credentials", mount_path=DOCKER_CONFIG, read_only=True),
            # BuildKit's state: an emptyDir, because an image VOLUME is mounted nosuid/nodev on some nodes.
            VolumeMount(name="buildkit-state", mount_path="/home/user/.local/share/buildkit"),
        ],
        security_context=SecurityContext(
            run_as_user=BUILDER_UID,
            run_as_group=BUILDER_UID,
            run_as_non_root=True,
            allow_privilege_escalation=True,  # the setuid newuidmap/newgidmap that map the user namespace
            capabilities=Capabilities(drop=["ALL"], add=["SETUID", "SETGID"]),
            seccomp_profile=SeccompProfile(type="Unconfined"),
            app_armor_profile=AppArmorProfile(type="Unconfined"),
        ),
        resources=steps.LARGE,
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
            "Bake the model bundle of a trained commit into `serving/Dockerfile` with BuildKit (rootless) and "
            "push it by digest. Outputs the image digest for the promotion PR.",
        ),
        entrypoint="build",
        service_account_name=WORKFLOW_SERVICE_ACCOUNT,
        security_context=steps.NON_ROOT,
        workflow_metadata=steps.run_metadata(
            "build-serving-image",
            "Build the serving image",
            "BuildKit build of serving/Dockerfile with a trained bundle baked in.",
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
            ),
            Volume(name="buildkit-state", empty_dir=EmptyDirVolumeSource()),
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
        build = buildkit_template()
        with DAG(name="build", annotations=ui_annotations("Build", "checkout -> fetch bundle -> buildkit")):
            steps.chain(checkout, fetch, build)
    return template
