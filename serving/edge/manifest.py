"""The edge bundle's manifest: every file of the bundle with its size and sha256, checked before loading.

Standard library only: devices verify a bundle with this module and the runtime, nothing else.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
SIGNATURE_FILE = "signature.json"
METADATA_FILE = "metadata.json"
SELFTEST_FILE = "selftest.json"
FORMAT = "sluice-edge/1"


class EdgeBundleError(ValueError):
    """An edge bundle that is missing a file, has a malformed file, or fails its checksums."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class FileEntry:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class EdgeManifest:
    """What `manifest.json` says: the format, the model file's name, and each file's checksum."""

    model_file: str
    model_digest: str
    files: tuple[FileEntry, ...]

    def to_json(self) -> str:
        body = {
            "format": FORMAT,
            "model_file": self.model_file,
            "model_digest": self.model_digest,
            "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in self.files],
        }
        return json.dumps(body, indent=2) + "\n"

    @property
    def checksum(self) -> str:
        """One sha256 naming the whole bundle: over the manifest's file list (names and checksums)."""
        h = hashlib.sha256()
        for f in sorted(self.files, key=lambda f: f.name):
            h.update(f"{f.name}\0{f.sha256}\n".encode())
        return h.hexdigest()


def write_manifest(directory: Path, model_file: str, model_digest: str) -> EdgeManifest:
    """Checksum every file in `directory` (except the manifest) and write `manifest.json`."""
    files = tuple(
        FileEntry(p.name, p.stat().st_size, sha256_file(p))
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != MANIFEST_FILE
    )
    if model_file not in {f.name for f in files}:
        raise EdgeBundleError(f"{directory}: model file {model_file} is missing")
    manifest = EdgeManifest(model_file, model_digest, files)
    (directory / MANIFEST_FILE).write_text(manifest.to_json())
    return manifest


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise EdgeBundleError(f"{path}: missing")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgeBundleError(f"{path}: not valid JSON ({e})") from e


def read_manifest(directory: Path) -> EdgeManifest:
    path = directory / MANIFEST_FILE
    raw = read_json(path)
    try:
        if raw.get("format") != FORMAT:
            raise EdgeBundleError(f"{path}: field format: expected {FORMAT!r}, got {raw.get('format')!r}")
        files = tuple(FileEntry(str(f["name"]), int(f["size"]), str(f["sha256"])) for f in raw["files"])
        return EdgeManifest(str(raw["model_file"]), str(raw["model_digest"]), files)
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        if isinstance(e, EdgeBundleError):
            raise
        raise EdgeBundleError(f"{path}: malformed manifest ({type(e).__name__}: {e})") from e


def verify(directory: Path) -> EdgeManifest:
    """Check every file listed in the manifest (presence, size, sha256); raise naming the first bad one."""
    manifest = read_manifest(directory)
    for entry in manifest.files:
        if "/" in entry.name or entry.name.startswith("."):
            raise EdgeBundleError(f"{directory / MANIFEST_FILE}: file name {entry.name!r} is not allowed")
        path = directory / entry.name
        if not path.is_file():
            raise EdgeBundleError(f"{path}: listed in the manifest but missing")
        size = path.stat().st_size
        if size != entry.size:
            raise EdgeBundleError(f"{path}: size {size} bytes, the manifest says {entry.size}")
        actual = sha256_file(path)
        if actual != entry.sha256:
            raise EdgeBundleError(f"{path}: sha256 {actual}, the manifest says {entry.sha256}")
    return manifest
