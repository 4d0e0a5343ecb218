"""The edge bundle's manifest: every file of the bundle with its size and sha256, checked before loading.

Standard library only: devices verify a bundle with this module and the runtime, nothing else.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
SIGNATURE_FILE = "signature.json"
METADATA_FILE = "metadata.json"
SELFTEST_FILE = "selftest.json"
FORMAT = "sluice-edge/1"
# The files the runtime reads besides the model: each must be listed (and so checked) in the manifest.
RUNTIME_FILES = (SIGNATURE_FILE, METADATA_FILE, SELFTEST_FILE)
MAX_FILES = 64
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


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


def plain_name(name: object) -> bool:
    """A file name that stays inside its directory: no separators, not hidden, not `.` or `..`."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= 255
        and not name.startswith(".")
        and not any(c in name for c in "/\\\0")
    )


def read_manifest(directory: Path) -> EdgeManifest:
    """Parse and check `manifest.json`: every field has the type and form it must have, or the error names it."""
    path = directory / MANIFEST_FILE
    raw = read_json(path)

    def bad(field: str, why: str) -> EdgeBundleError:
        return EdgeBundleError(f"{path}: field {field}: {why}")

    if not isinstance(raw, dict):
        raise EdgeBundleError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    if raw.get("format") != FORMAT:
        raise bad("format", f"expected {FORMAT!r}, got {raw.get('format')!r}")
    files_raw = raw.get("files")
    if not isinstance(files_raw, list) or not files_raw:
        raise bad("files", f"expected a non-empty list of files, got {files_raw!r:.80}")
    if len(files_raw) > MAX_FILES:
        raise bad("files", f"{len(files_raw)} entries, at most {MAX_FILES}")
    files = []
    for i, item in enumerate(files_raw):
        if not isinstance(item, dict):
            raise bad(f"files[{i}]", f"expected an object with name, size and sha256, got {item!r:.80}")
        name, size, sha256 = item.get("name"), item.get("size"), item.get("sha256")
        if not plain_name(name):
            raise bad(f"files[{i}].name", f"{name!r:.80} is not a plain file name")
        if type(size) is not int or size < 0:
            raise bad(f"files[{i}].size", f"{size!r:.80} is not a byte count")
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise bad(f"files[{i}].sha256", f"{sha256!r:.80} is not a lowercase hex sha256")
        files.append(FileEntry(str(name), size, sha256))
    names = [f.name for f in files]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise bad("files", f"{duplicate!r} is listed twice")
    model_file = raw.get("model_file")
    if not plain_name(model_file):
        raise bad("model_file", f"{model_file!r:.80} is not a plain file name")
    for required in (str(model_file), *RUNTIME_FILES):
        if required not in names:
            what = "model_file" if required == model_file else "files"
            raise bad(what, f"{required!r} is not listed in files, so nothing would check it")
    model_digest = raw.get("model_digest")
    if not isinstance(model_digest, str) or not _DIGEST.fullmatch(model_digest):
        raise bad("model_digest", f"{model_digest!r:.80} is not a digest (sha256:<64 hex>)")
    return EdgeManifest(str(model_file), model_digest, tuple(files))


def verify(directory: Path) -> EdgeManifest:
    """Check every file listed in the manifest (presence, size, sha256); raise naming the first bad one."""
    manifest = read_manifest(directory)  # refuses an empty list, and names that leave the directory
    for entry in manifest.files:
        path = directory / entry.name
        if path.is_symlink():
            raise EdgeBundleError(f"{path}: a symbolic link; a bundle holds plain files only")
        if not path.is_file():
            raise EdgeBundleError(f"{path}: listed in the manifest but missing")
        size = path.stat().st_size
        if size != entry.size:
            raise EdgeBundleError(f"{path}: size {size} bytes, the manifest says {entry.size}")
        actual = sha256_file(path)
        if actual != entry.sha256:
            raise EdgeBundleError(f"{path}: sha256 {actual}, the manifest says {entry.sha256}")
    return manifest
