"""Building blocks of the pipeline templates: a shell step on the runtime image, env from secrets, retries.

Every step gets resource requests and limits (so the scheduler can place it and a runaway step cannot starve
the node) and a retry strategy suited to what it does: network steps retry on transient errors with backoff,
pure computation does not retry at all.
"""

from __future__ import annotations

from itertools import pairwise

from hera.workflows import ConfigMapEnv, Container, Env, Resources, RetryStrategy, Script, SecretEnv, Task
from hera.workflows.models import Backoff, PodSecurityContext, SeccompProfile, WorkflowMetadata

from pipelines.conventions import CONFIG_MAP, SecretKey, labels, ui_annotations

Template = Script | Container

# Retry only what the network can break (pulls, pushes, API calls); a failed `dvc repro` fails for good.
NETWORK_RETRY = RetryStrategy(
    limit="3",
    retry_policy="OnTransientError",
    backoff=Backoff(duration="15s", factor="2", max_duration="5m"),
)
ONCE_MORE = RetryStrategy(limit="1", retry_policy="OnError")

# The runtime image's user (serving/Dockerfile); fsGroup makes the shared workspace volume writable for it.
NON_ROOT = PodSecurityContext(
    run_as_non_root=True,
    run_as_user=10001,
    run_as_group=10001,
    fs_group=10001,
    seccomp_profile=SeccompProfile(type="RuntimeDefault"),
)

SMALL = Resources(cpu_request="100m", cpu_limit="500m", memory_request="128Mi", memory_limit="512Mi")
MEDIUM = Resources(cpu_request="500m", cpu_limit="2", memory_request="1Gi", memory_limit="2Gi")
LARGE = Resources(cpu_request="1", cpu_limit="4", memory_request="2Gi", memory_limit="6Gi")


def secret_env(name: str, ref: SecretKey, optional: bool = False) -> SecretEnv:
    """An env var read from a Secret at run time (rendered as valueFrom.secretKeyRef, never a value)."""
    return SecretEnv(name=name, secret_name=ref.secret, secret_key=ref.key, optional=optional or None)


def config_env(name: str, key: str, optional: bool = False) -> ConfigMapEnv:
    """An env var read from the sluice-config ConfigMap."""
    return ConfigMapEnv(name=name, config_map_name=CONFIG_MAP, config_map_key=key, optional=optional or None)


def quiet_env() -> list[Env]:
    """Turn off the analytics that DVC, Great Expectations and MLflow send by default."""
    return [
        Env(name="DVC_NO_ANALYTICS", value="true"),
        Env(name="GX_ANALYTICS_ENABLED", value="false"),
        Env(name="DO_NOT_TRACK", value="true"),
        Env(name="MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", value="false"),
    ]


def bash(script: str) -> str:
    """A step's shell source, failing on the first error and on unset variables.

    Workflow parameters never appear in it: they arrive as environment variables (`parameter_env`), which
    the shell expands as data, never as code."""
    if "{{" in script:
        raise ValueError(
            f"a step script may not contain Argo expressions (pass them as env): {script[:80]!r}"
        )
    return "set -euo pipefail\n" + script.strip() + "\n"


def parameter_env(name: str, parameter: str) -> Env:
    """A workflow parameter handed to a script as an environment variable."""
    return Env(name=name, value=f"{{{{workflow.parameters.{parameter}}}}}")


def input_env(name: str, parameter: str) -> Env:
    """A template input parameter handed to a script as an environment variable."""
    return Env(name=name, value=f"{{{{inputs.parameters.{parameter}}}}}")


def require(variable: str, pattern: str, what: str) -> str:
    """A shell line that stops the step unless `$variable` matches the extended regex `pattern` in full."""
    return (
        f'[[ "${variable}" =~ ^({pattern})$ ]] || {{ printf \'%s: %q is not %s\\n\' {variable} "${variable}" '
        f"{_quote(what)} >&2; exit 2; }}"
    )


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


# What parameter values must look like before a step uses them.
SHA = "[0-9a-f]{40}"
DIGEST = "sha256:[0-9a-f]{64}"
REF = "[A-Za-z0-9][A-Za-z0-9._/-]{0,199}"  # a commit SHA or a branch name
MODEL_URI = "models:/[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9][A-Za-z0-9._-]*|/[0-9]+)"


def chain(*templates: Template) -> list[Task]:
    """Inside a `with DAG(...)`: one task per template, each depending on the one before (shown as a line)."""
    tasks = [Task(name=str(t.name), template=t) for t in templates]
    for before, after in pairwise(tasks):
        before >> after
    return tasks


def run_metadata(component: str, title: str, description: str) -> WorkflowMetadata:
    """Labels and UI title/description for each run (Workflow) created from a template: the Argo UI's
    workflow list shows these, not the template's own annotations."""
    return WorkflowMetadata(
        labels={**labels(component), "sluice.dev/pipeline": component},
        annotations=ui_annotations(title, description),
    )
