"""Guardrails on a SeldonDeployment: checked on every manifest the engine writes, and by `sluice gitops check`.

They mirror Seldon Core v1's admission webhook (non-shadow traffic sums to 100, a single predictor is at 0 or
100, at most one shadow and never alone) and add Sluice's pinning rule: every predictor names its model by
digest (`model_digest` = 'sha256:' + 64 hex), and container images, when given, are pinned by @sha256.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
IMAGE_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Violation:
    """One broken rule: where (a path into the manifest), which rule, and what was found."""

    path: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} [{self.rule}]"


def _params(graph: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in graph.get("parameters") or []:
        if isinstance(p, Mapping) and "name" in p:
            out[str(p["name"])] = p.get("value")
    return out


def check_manifest(doc: Mapping[str, Any] | str) -> list[Violation]:
    """All guardrail violations of one SeldonDeployment (a parsed mapping, or its YAML text). Empty = fine."""
    if isinstance(doc, str):
        import yaml

        doc = yaml.safe_load(doc)
    if not isinstance(doc, Mapping):
        return [Violation("(document)", "shape", "a SeldonDeployment must be a mapping")]
    out: list[Violation] = []
    if doc.get("kind") != "SeldonDeployment":
        out.append(Violation("kind", "shape", f"expected SeldonDeployment, got {doc.get('kind')!r}"))
    spec = doc.get("spec")
    predictors = spec.get("predictors") if isinstance(spec, Mapping) else None
    if not isinstance(predictors, list) or not predictors:
        out.append(Violation("spec.predictors", "shape", "at least one predictor is required"))
        return out

    names: list[str] = []
    shadows: list[str] = []
    live_total = 0
    live: list[tuple[str, int]] = []
    for i, p in enumerate(predictors):
        where = f"spec.predictors[{i}]"
        if not isinstance(p, Mapping):
            out.append(Violation(where, "shape", "a predictor must be a mapping"))
            continue
        name = str(p.get("name") or "")
        where = f"spec.predictors[{i}] ({name or 'unnamed'})"
        if not name:
            out.append(Violation(where, "shape", "a predictor needs a name"))
        names.append(name)
        # Seldon gives a lone predictor without `traffic` all of it.
        traffic = p.get("traffic", 100 if len(predictors) == 1 else 0)
        if isinstance(traffic, bool) or not isinstance(traffic, int) or not 0 <= traffic <= 100:
            out.append(Violation(f"{where}.traffic", "weights", f"traffic must be 0..100, got {traffic!r}"))
            traffic = 0
        if p.get("shadow") is True:
            shadows.append(name)
        else:
            live_total += traffic
            live.append((name, traffic))
        graph = p.get("graph")
        graph = graph if isinstance(graph, Mapping) else {}
        digest = _params(graph).get("model_digest")
        if not isinstance(digest, str) or not DIGEST.match(digest):
            out.append(
                Violation(
                    f"{where}.graph.parameters.model_digest",
                    "pinning",
                    f"the model must be pinned by digest ('sha256:' + 64 hex), got {digest!r}",
                )
            )
        for j, cs in enumerate(p.get("componentSpecs") or []):
            containers = ((cs or {}).get("spec") or {}).get("containers") or []
            for k, c in enumerate(containers):
                image = (c or {}).get("image")
                if image is not None and not IMAGE_DIGEST.search(str(image)):
                    out.append(
                        Violation(
                            f"{where}.componentSpecs[{j}].spec.containers[{k}].image",
                            "pinning",
                            f"image must be pinned by @sha256 digest, got {image!r}",
                        )
                    )

    dupes = sorted({n for n in names if n and names.count(n) > 1})
    if dupes:
        out.append(
            Violation("spec.predictors", "names", f"predictor names must be unique, repeated: {dupes}")
        )
    if len(shadows) > 1:
        out.append(Violation("spec.predictors", "shadow", f"at most one shadow predictor, found {shadows}"))
    if shadows and not live:
        out.append(Violation("spec.predictors", "shadow", "a shadow predictor cannot be the only predictor"))
    if live and live_total != 100:
        weights = ", ".join(f"{n}={t}" for n, t in live)
        out.append(
            Violation(
                "spec.predictors",
                "weights",
                f"non-shadow traffic must sum to 100, got {live_total} ({weights})",
            )
        )
    return out
