"""Guardrails on a deployment manifest: checked on every manifest the engine writes, and by `sluice gitops check`.

The rules are the deployment contract's, by kind (`deployment.kinds.admission`): for a SeldonDeployment, Seldon
Core v1's admission webhook (non-shadow traffic sums to 100, a lone live predictor takes 0 or 100, at most one
shadow and never alone); for an InferenceService, KServe's webhook and controller (canaries only in Standard
mode, named and unique, trafficPercent summing to at most 100, fixed replicas, fetchable storage URIs); and
Sluice's own for both (DNS-label names, unique names, models pinned by digest, images pinned by @sha256).
`sluice up` applies the same rules, so a manifest one side accepts the other does too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deployment import kinds
from deployment.view import ManifestError, Violation

__all__ = ["Violation", "check_manifest"]


def check_manifest(doc: Mapping[str, Any] | str) -> list[Violation]:
    """All guardrail violations of one deployment manifest (a parsed mapping, or its YAML text). Empty = fine."""
    try:
        deployment = kinds.loads(doc) if isinstance(doc, str) else kinds.parse(doc)
    except ManifestError as e:
        return list(e.violations) or [Violation("(document)", "shape", str(e))]
    return kinds.admission(deployment)
