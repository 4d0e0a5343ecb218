"""What every kind of deployment manifest shares: rule violations, the error that names file and field, the
predictor-set methods both views offer, and finding and reading the one manifest of an environment.

`deployment.seldon` (SeldonDeployment) and `deployment.kserve` (InferenceService) build their typed views on
this; `deployment.kinds` picks between them by the document's `kind`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml


@dataclass(frozen=True)
class Violation:
    """One broken rule: where (a path into the manifest), which rule, and what was found."""

    path: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} [{self.rule}]"


class ManifestError(ValueError):
    """A manifest that cannot be read or that breaks the admission rules; the message names file and field."""

    def __init__(self, message: str, violations: tuple[Violation, ...] = ()):
        super().__init__(message)
        self.violations = violations


class _Routed(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def traffic(self) -> int: ...
    @property
    def shadow(self) -> bool: ...


class PredictorSet[P: _Routed]:
    """The questions every deployment view answers about its predictors (in manifest order)."""

    predictors: tuple[P, ...]

    @property
    def live(self) -> tuple[P, ...]:
        return tuple(p for p in self.predictors if not p.shadow)

    @property
    def shadow(self) -> P | None:
        return next((p for p in self.predictors if p.shadow), None)

    def predictor(self, name: str) -> P | None:
        return next((p for p in self.predictors if p.name == name), None)

    def weights(self) -> dict[str, int]:
        """Effective weights of every predictor by name (a shadow's is its mirror percentage)."""
        return {p.name: p.traffic for p in self.predictors}


def image_parts(image: str) -> tuple[str, str]:
    """(name, tag) of an image reference, without its digest; the tag is '' when there is none."""
    image = image.split("@", 1)[0]
    if ":" in image.rsplit("/", 1)[-1]:
        name, _, tag = image.rpartition(":")
        return name, tag
    return image, ""


def refuse(violations: list[Violation], source: str | Path) -> None:
    """Raise ManifestError naming the file and every broken rule, or return when there is none."""
    if violations:
        detail = "; ".join(f"field {v.path}: {v.message}" for v in violations)
        raise ManifestError(f"{source}: {detail}", tuple(violations))


# --- reading ------------------------------------------------------------------------------------------------


def shape_error(source: str | Path, where: str, message: str) -> ManifestError:
    """A document that cannot be read as its kind at all: names the file and the field."""
    return ManifestError(f"{source}: field {where}: {message}", (Violation(where, "shape", message),))


@dataclass(frozen=True)
class Header:
    """What every kind's document carries above its spec."""

    name: str
    namespace: str | None
    annotations: dict[str, str]
    spec: Mapping[str, Any]


def header(doc: Any, kind: str, api_version: str, source: str | Path, spec_holds: str) -> Header:
    """Kind, apiVersion, metadata and a spec mapping, checked alike for every kind; ManifestError naming the
    file and the field otherwise. `spec_holds` says what a spec must hold (for its error)."""
    if not isinstance(doc, Mapping):
        article = "an" if kind[0] in "AEIOU" else "a"
        raise shape_error(
            source, "(document)", f"{article} {kind} must be a mapping, got {type(doc).__name__}"
        )
    if doc.get("kind") != kind:
        raise shape_error(source, "kind", f"expected {kind}, got {doc.get('kind')!r}")
    if doc.get("apiVersion") != api_version:
        raise shape_error(source, "apiVersion", f"expected {api_version}, got {doc.get('apiVersion')!r}")
    meta = doc.get("metadata")
    if not isinstance(meta, Mapping):
        raise shape_error(source, "metadata", "a mapping with a name is required")
    spec = doc.get("spec")
    if not isinstance(spec, Mapping):
        raise shape_error(source, "spec", f"a mapping with {spec_holds} is required")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise shape_error(source, "metadata.name", f"a non-empty string is required, got {name!r}")
    namespace = meta.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise shape_error(source, "metadata.namespace", f"expected a string, got {namespace!r}")
    return Header(name, namespace, string_map(meta.get("annotations"), "metadata.annotations", source), spec)


def string_map(value: Any, where: str, source: str | Path) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise shape_error(source, where, f"expected a mapping, got {value!r}")
    return {str(k): str(v) for k, v in value.items()}


def the_one(text: str, kinds: Collection[str], source: str | Path) -> Mapping[str, Any]:
    """The one document of one of `kinds` in a YAML text (other documents are ignored)."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise ManifestError(f"{source}: not valid YAML ({first_line(e)})") from e
    found = [d for d in docs if isinstance(d, Mapping) and d.get("kind") in kinds]
    if len(found) != 1:
        raise ManifestError(
            f"{source}: expected one document with kind: {_either(kinds)}, found {len(found)}"
        )
    return found[0]


def read_text(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: cannot read ({e})") from e


def find(path: str | Path, kinds: Collection[str]) -> Path:
    """A directory's one YAML file holding a document of one of `kinds` (or `path` itself when it is a file)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise ManifestError(f"{path}: no such file or directory")
    found: list[tuple[Path, str]] = []
    for candidate in sorted([*path.glob("*.yaml"), *path.glob("*.yml")]):
        try:
            docs = list(yaml.safe_load_all(candidate.read_text()))
        except (yaml.YAMLError, OSError, UnicodeDecodeError):
            named = [k for k in kinds if k.lower() in candidate.name.lower()]
            if named:
                found.append((candidate, named[0]))  # let the reader report the error with its position
            continue
        kind = next((d["kind"] for d in docs if isinstance(d, Mapping) and d.get("kind") in kinds), None)
        if kind is not None:
            found.append((candidate, kind))
    if not found:
        raise ManifestError(f"{path}: no YAML file with kind: {_either(kinds)}")
    if len(found) > 1:
        names = ", ".join(p.name for p, _ in found)
        what = _either(sorted({k for _, k in found}), "and")
        raise ManifestError(f"{path}: more than one {what} ({names}); an environment has one")
    return found[0][0]


def _either(kinds: Collection[str], word: str = "or") -> str:
    return f" {word} ".join(kinds)


def first_line(e: Exception) -> str:
    return " ".join(str(e).split())[:300]
