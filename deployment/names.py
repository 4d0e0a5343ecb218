"""How things are named in a deployment: model digests, predictor names, the rollout annotation."""

from __future__ import annotations

import re

API_VERSION = "machinelearning.seldon.io/v1"
KIND = "SeldonDeployment"

# The one piece of rollout state in a manifest: JSON on the SeldonDeployment (see rollout/state.py).
ANNOTATION = "sluice.dev/rollout"

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
IMAGE_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# A Kubernetes DNS label: predictor names become Service and label values in a cluster.
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
PREDICTOR_PREFIX = "m-"


def predictor_name(digest: str) -> str:
    """`m-` + the first 12 hex digits of a bundle digest: a predictor's name wherever it serves."""
    if not DIGEST.match(digest):
        raise ValueError(f"{digest!r} is not a bundle digest ('sha256:' + 64 hex digits)")
    return PREDICTOR_PREFIX + digest.split(":", 1)[1][:12]
