"""Names, images, labels and secret references shared by every Argo object Sluice renders.

They are chosen for how they read in the Argo UI and in `kubectl get`: one namespace, `app.kubernetes.io/*`
labels, and a `workflows.argoproj.io/title` / `description` pair on every template. Secrets are only ever
referenced by name and key (secretKeyRef); no value is rendered.

What a submitter may not choose is fixed here, not offered as a parameter: the images (pinned by digest: a
tag can be moved to other content, a digest cannot), the repository the git credentials are sent to, the
registry repository the image is pushed to, and the bucket endpoint the bucket credentials are sent to.
"""

from __future__ import annotations

from dataclasses import dataclass

NAMESPACE = "sluice-pipelines"
# The pipeline steps run the `runtime` target of serving/Dockerfile (the project installed, no bundle).
# Build and push it (`docker build -f serving/Dockerfile --target runtime .`), put the pushed digest here
# and `make render`: until then the all-zero digest below cannot be pulled, so nothing runs unpinned.
RUNTIME_IMAGE = "ghcr.io/sluice-ml/sluice-runtime:0.1.0@sha256:" + "0" * 64
SERVING_IMAGE_REPO = "ghcr.io/sluice-ml/sluice-serving"
# BuildKit v0.32.2, rootless (builds as uid 1000 through a user namespace, no root and no privileged pod), by
# the digest of its multi-platform index. Bump tag and digest together; check the pair with
# `docker buildx imagetools inspect moby/buildkit:<tag>` (or `crane digest`) before committing it.
BUILDKIT_IMAGE = (
    "docker.io/moby/buildkit:v0.32.2-rootless"
    "@sha256:504731e577c20559c00f968f33219f30115e70be29ab96728d1d06e963fc494b"
)
# Argo injects its executor (`init` and `wait` containers) into every workflow pod; the admission policy
# (pipelines/admission.py) accepts it from this repository, at the version the cluster's Argo runs.
ARGOEXEC_REPOSITORY = "quay.io/argoproj/argoexec"
REPO_URL = "https://github.com/sluice-ml/sluice.git"
# The S3 store (MinIO) of the DVC remote and of the batch bucket, and the one TLS setting every S3 client
# here takes it from: DVC in the steps (AWS_ENDPOINT_URL), Argo's S3 artifacts and the Argo Events MinIO
# source (`insecure`). Credentials travel to it, so it is TLS unless this says otherwise.
S3_TLS = True
BUCKET = "sluice-batch"
BUCKET_ENDPOINT = "minio.sluice-pipelines.svc:9000"
S3_ENDPOINT_URL = f"{'https' if S3_TLS else 'http'}://{BUCKET_ENDPOINT}"
S3_INSECURE = not S3_TLS
MODEL_NAME = "sluice-classifier"
WORKFLOW_SERVICE_ACCOUNT = "sluice-pipelines"
EVENTS_SERVICE_ACCOUNT = "sluice-events"
WORKSPACE = "/workspace"
SOURCE_DIR = f"{WORKSPACE}/src"
OUTPUTS_DIR = "/tmp/outputs"

TITLE = "workflows.argoproj.io/title"
DESCRIPTION = "workflows.argoproj.io/description"


@dataclass(frozen=True)
class SecretKey:
    """A reference to one key of a Kubernetes Secret that the cluster admin creates (docs/cluster.md)."""

    secret: str
    key: str


# Every credential a pipeline step needs, by reference. docs/cluster.md lists how to create each.
GIT_USERNAME = SecretKey("sluice-git", "username")
GIT_TOKEN = SecretKey("sluice-git", "token")
DVC_ACCESS_KEY = SecretKey("sluice-dvc-remote", "AWS_ACCESS_KEY_ID")
DVC_SECRET_KEY = SecretKey("sluice-dvc-remote", "AWS_SECRET_ACCESS_KEY")
MLFLOW_TOKEN = SecretKey("sluice-mlflow", "token")
GITHUB_TOKEN = SecretKey("sluice-github", "token")
BUCKET_ACCESS_KEY = SecretKey("sluice-bucket", "accesskey")
BUCKET_SECRET_KEY = SecretKey("sluice-bucket", "secretkey")
# A `kubernetes.io/dockerconfigjson` Secret; the image build reads it as $DOCKER_CONFIG/config.json.
REGISTRY_SECRET = "sluice-registry"
# Non-secret settings (MLflow URL, DVC remote, bucket endpoint) come from one ConfigMap.
CONFIG_MAP = "sluice-config"


def labels(component: str) -> dict[str, str]:
    """The labels every object carries, so `kubectl get -l app.kubernetes.io/part-of=sluice` finds them all."""
    return {
        "app.kubernetes.io/name": component,
        "app.kubernetes.io/part-of": "sluice",
        "app.kubernetes.io/component": "pipeline",
    }


def ui_annotations(title: str, description: str) -> dict[str, str]:
    """The title and description the Argo UI shows in its workflow lists (Markdown allowed)."""
    return {TITLE: title, DESCRIPTION: description}
