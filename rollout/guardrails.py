"""Guardrails on a SeldonDeployment: checked on every manifest the engine writes, and by `sluice gitops check`.

The rules are the deployment contract's (`deployment.seldon.admission`): Seldon Core v1's admission webhook
(non-shadow traffic sums to 100, a lone live predictor takes 0 or 100, at most one shadow and never alone)
plus Sluice's (DNS-label names, unique names, models pinned by digest, images pinned by @sha256). `sluice up`
applies the same rules, so a manifest one side accepts the other does too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deployment import seldon
from deployment.seldon import Violation

__all__ = ["Violation", "check_manifest"]


def check_manifest(doc: Mapping[str, Any] | str) -> list[Violation]:
    """All guardrail violations of one SeldonDeployment (a parsed mapping, or its YAML text). Empty = fine."""
    try:
        sd = seldon.loads(doc) if isinstance(doc, str) else seldon.parse(doc)
    except seldon.ManifestError as e:
        return list(e.violations) or [Violation("(document)", "shape", str(e))]
    return seldon.admission(sd)
