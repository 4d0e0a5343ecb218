"""The `retrain-from-log` WorkflowTemplate: the cluster's side of `sluice loop`. It reads the routers' prediction
log (the Redis stream of gitops/router), commits the labelled live rows as a new data version on a branch
`retrain/<workflow name>`, trains on it, and pushes the branch; the pull request from it to main is where the
retrain is reviewed and merged, as with the retrain GitHub workflow (.github/workflows/retrain.yml).

    checkout (main) -> dvc pull -> collect -> [when rows were committed] train -> dvc push -> register
        -> open rollout -> push branch

`collect` runs `sluice loop LOG --collect`: the triggers (drift, live accuracy, the schedule of the policy's
monitoring section) are checked on the log and, when one fires and enough rows are newly labelled, the data
version is committed with its Sluice-Retrain trailers; otherwise nothing is committed and the run ends there.
`train` runs `sluice loop LOG --once`, which is the loop's train step for the retrain just opened: `dvc repro`
(validate, train, the evaluate gate, package) and the `trained` commit; `open-rollout` runs it once more, the
loop's promote step (the rollout into the first environment, committed on the branch). The log reader keeps its position and
the records it read on the PersistentVolumeClaim `sluice-log-reader` (gitops/cluster/pipelines-storage.yaml),
so each run reads only what is new; a mutex keeps two runs (the CronWorkflow and the drift Sensor) from
sharing it at once. Losing the volume costs one full read, never a different result.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from hera.workflows import DAG, Env, ExistingVolume, Parameter, Script, Task, WorkflowTemplate
from hera.workflows.models import Mutex, Synchronization, TTLStrategy, ValueFrom, VolumeMount

from pipelines import steps
from pipelines.conventions import (
    GIT_TOKEN,
    GIT_USERNAME,
    NAMESPACE,
    OUTPUTS_DIR,
    REPO_URL,
    RUNTIME_IMAGE,
    SOURCE_DIR,
    WORKFLOW_SERVICE_ACCOUNT,
    WORKSPACE,
    SecretKey,
    labels,
    ui_annotations,
)
from pipelines.train import (
    WORKSPACE_MOUNT,
    checkout_template,
    dvc_env,
    dvc_template,
    register_template,
    workspace_claim,
)

NAME = "retrain-from-log"
# The routers' log: redis://[:password@]host:port/db?stream=KEY, the Secret gitops/router reads (one copy in
# this namespace too).
PREDICTION_LOG = SecretKey("sluice-prediction-log", "url")
STATE_CLAIM = "sluice-log-reader"
STATE_DIR = "/var/lib/sluice/log-reader"
ENVIRONMENT = "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
BRANCH_PREFIX = "retrain/"

COLLECT = f"""
cd {SOURCE_DIR}
{steps.require("ENVIRONMENT", ENVIRONMENT, "an environment name")}
{steps.require("MIN_NEW_LABELS", "[1-9][0-9]{0,8}", "a positive count")}
{steps.require("BRANCH", "retrain/[a-z0-9][-a-z0-9.]{0,200}", "a retrain branch name")}
mkdir -p {OUTPUTS_DIR}
# A retry (a network error) finds the branch and maybe its commit already there: keep both, and the base.
[ -f {WORKSPACE}/retrain-base ] || git rev-parse HEAD > {WORKSPACE}/retrain-base
base=$(cat {WORKSPACE}/retrain-base)
git switch -C "$BRANCH"
sluice loop "$SLUICE_PREDICTION_LOG" --repo . --env "$ENVIRONMENT" --collect \\
  --min-new-labels "$MIN_NEW_LABELS" --state {STATE_DIR}
if [ "$(git rev-list --count "$base..HEAD")" = 0 ]; then
  echo false > {OUTPUTS_DIR}/collected
  echo "no data version committed: nothing to train"
else
  echo true > {OUTPUTS_DIR}/collected
  git log --format='%h %s' "$base..HEAD"
fi
"""

TRAIN = """
sluice loop "$SLUICE_PREDICTION_LOG" --repo . --env "$ENVIRONMENT" --once
git log -1 --format='%h %s%n%n%b'
"""

# The loop's promote step: the rollout of the registered model into the first environment, as a commit on the
# branch (gitops/environments/<env>/), reviewed with the rest of the retrain in its pull request.
OPEN_ROLLOUT = """
sluice loop "$SLUICE_PREDICTION_LOG" --repo . --env "$ENVIRONMENT" --once
git log -2 --format='%h %s'
"""

# The token travels as a header from the environment: never in a URL, .git/config or the process list.
PUSH = f"""
cd {SOURCE_DIR}
{steps.require("BRANCH", "retrain/[a-z0-9][-a-z0-9.]{0,200}", "a retrain branch name")}
header=$(printf '%s:%s' "$GIT_USERNAME" "$GIT_TOKEN" | base64 -w0)
export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=http.extraHeader GIT_CONFIG_VALUE_0="Authorization: Basic $header"
git push "$REPOSITORY" "HEAD:refs/heads/$BRANCH"
mkdir -p {OUTPUTS_DIR}
git rev-parse HEAD > {OUTPUTS_DIR}/revision
printf 'pushed %s: open a pull request from it to main\\n' "$BRANCH"
"""


def _env() -> list[Any]:
    return [
        steps.parameter_env("ENVIRONMENT", "environment"),
        steps.parameter_env("BRANCH", "branch"),
        steps.secret_env("SLUICE_PREDICTION_LOG", PREDICTION_LOG),
    ]


STATE_MOUNT = VolumeMount(name="log-reader", mount_path=STATE_DIR)


def collect_template() -> Script:
    return Script(
        name="collect",
        annotations=ui_annotations(
            "Collect labelled live rows",
            "Check the triggers on the prediction log; when one fires, commit the newly labelled live rows as "
            "a data version on the retrain branch.",
        ),
        image=RUNTIME_IMAGE,
        command=["bash"],
        source=steps.bash(COLLECT),
        env=[*dvc_env(), *_env(), steps.parameter_env("MIN_NEW_LABELS", "min-new-labels")],
        volume_mounts=[WORKSPACE_MOUNT, STATE_MOUNT],
        resources=steps.MEDIUM,
        retry_strategy=steps.NETWORK_RETRY,
        outputs=[
            Parameter(
                name="collected",
                value_from=ValueFrom(path=f"{OUTPUTS_DIR}/collected"),
                global_name="collected",
                description="true when a data version was committed (training follows), else false.",
            )
        ],
    )


def push_template() -> Script:
    return Script(
        name="push-branch",
        annotations=ui_annotations(
            "Push the retrain branch", "Push the data version and the training commit to retrain/<run>."
        ),
        image=RUNTIME_IMAGE,
        command=["bash"],
        source=steps.bash(PUSH),
        env=[
            steps.parameter_env("BRANCH", "branch"),
            Env(name="REPOSITORY", value=REPO_URL),
            steps.secret_env("GIT_USERNAME", GIT_USERNAME),
            steps.secret_env("GIT_TOKEN", GIT_TOKEN),
        ],
        volume_mounts=[WORKSPACE_MOUNT],
        resources=steps.SMALL,
        retry_strategy=steps.NETWORK_RETRY,
        outputs=[
            Parameter(
                name="revision",
                value_from=ValueFrom(path=f"{OUTPUTS_DIR}/revision"),
                global_name="revision",
                description="The commit pushed to the retrain branch (data version and training).",
            )
        ],
    )


def build() -> WorkflowTemplate:
    """The `retrain-from-log` WorkflowTemplate (hera object)."""
    with WorkflowTemplate(
        name=NAME,
        namespace=NAMESPACE,
        labels=labels(NAME),
        annotations=ui_annotations(
            "Retrain from the prediction log",
            "Commit the labelled live rows of the routers' prediction log as a data version on a branch "
            "retrain/<run>, train on it (dvc repro), push the outputs and the branch.",
        ),
        entrypoint="retrain",
        service_account_name=WORKFLOW_SERVICE_ACCOUNT,
        security_context=steps.NON_ROOT,
        arguments=[
            Parameter(name="revision", value="main", description=f"Branch of {REPO_URL} to start from."),
            Parameter(
                name="environment",
                value="staging",
                description="The first environment (its policy's monitoring section sets the triggers).",
            ),
            Parameter(
                name="min-new-labels",
                value="50",
                description="A retrain needs at least this many labelled rows not in a data version yet.",
            ),
            Parameter(
                name="branch",
                value=BRANCH_PREFIX + "{{workflow.name}}",
                description="The branch the retrain's commits are pushed to.",
            ),
        ],
        workflow_metadata=steps.run_metadata(
            NAME, "Retrain from the log", "collect labelled live rows, train, push retrain/<run>."
        ),
        volume_claim_templates=[workspace_claim()],
        volumes=[ExistingVolume(name="log-reader", claim_name=STATE_CLAIM)],
        synchronization=Synchronization(mutexes=[Mutex(name=NAME)]),
        ttl_strategy=TTLStrategy(seconds_after_success=86400, seconds_after_failure=604800),
        active_deadline_seconds=3 * 3600,
    ) as template:
        checkout = checkout_template()
        pull = dvc_template(
            "dvc-pull",
            "dvc pull",
            "Fetch the current data version and cached stage outputs from the DVC remote.",
            "dvc pull --allow-missing",
            resources=steps.SMALL,
            retry_strategy=steps.NETWORK_RETRY,
        )
        collect = collect_template()
        train = dvc_template(
            "dvc-repro",
            "Train on the new data version",
            "`sluice loop --once`: dvc repro (validate, train, the evaluate gate, package) and the `trained` "
            "commit with the bundle's digest.",
            TRAIN,
            env=_env(),
            resources=steps.LARGE,
        )
        push = dvc_template(
            "dvc-push",
            "dvc push",
            "Upload the new data version, the model and stage outputs to the DVC remote.",
            "dvc push",
            resources=steps.SMALL,
            retry_strategy=steps.NETWORK_RETRY,
        )
        register = register_template()
        rollout = dvc_template(
            "open-rollout",
            "Open the rollout",
            "`sluice loop --once`: the rollout of the registered model into the first environment, committed on "
            "the retrain branch (the `promoted` commit).",
            OPEN_ROLLOUT,
            env=_env(),
            resources=steps.SMALL,
            retry_strategy=steps.NETWORK_RETRY,
        )
        branch = push_template()
        with DAG(
            name="retrain",
            annotations=ui_annotations(
                "Retrain",
                "checkout -> dvc pull -> collect -> train -> dvc push -> register -> open rollout -> push branch",
            ),
        ):
            tasks = steps.chain(checkout, pull, collect)
            rest = [Task(name=str(t.name), template=t) for t in (train, push, register, rollout, branch)]
            tasks[-1] >> rest[0]
            rest[0].when = "{{tasks.collect.outputs.parameters.collected}} == true"
            for before, after in pairwise(rest):
                before >> after
    return template
