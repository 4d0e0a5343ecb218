"""Fleet rollout for edge bundles: the canary that a device fleet gets instead of traffic weights.

The publisher packs an edge bundle into a tar.gz and writes an update manifest (version, archive sha256,
rollout percentage, where to fetch it). Each device decides by a stable hash of (version, device id) whether
it is in the rollout, so raising the percentage only adds devices; it verifies the archive's checksum,
unpacks into a new directory (fsynced), swaps its `current` symlink atomically (`previous` keeps the
bundle before), then loads the new bundle and runs its self-test on the golden rows. A bundle that fails to
load or fails the self-test is swapped back out at once and remembered as bad, so it is not retried.

Standard library and the edge runtime only: this is device code.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from serving.edge.manifest import EdgeBundleError, verify
from serving.edge.runtime import EdgeModel

UPDATE_FILE = "update.json"
Outcome = Literal["not-selected", "up-to-date", "known-bad", "rejected", "installed", "rolled-back"]


class UpdateError(ValueError):
    """A malformed update manifest, or an archive that cannot be fetched or unpacked."""


@dataclass(frozen=True)
class UpdateManifest:
    """What the fleet is told: install `version` (archive at `url`, sha256 `sha256`) on `rollout_percent`% of devices."""

    version: str
    sha256: str
    rollout_percent: float
    url: str
    model_digest: str | None = None

    def __post_init__(self) -> None:
        if not self.version or "/" in self.version or self.version.startswith("."):
            raise UpdateError(f"update manifest: field version: {self.version!r} is not a valid version name")
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise UpdateError(f"update manifest: field sha256: {self.sha256!r} is not a hex sha256")
        if not 0 <= self.rollout_percent <= 100:
            raise UpdateError(
                f"update manifest: field rollout_percent: {self.rollout_percent} not in [0, 100]"
            )

    @classmethod
    def from_json(cls, text: str, source: str = "update manifest") -> UpdateManifest:
        try:
            raw = json.loads(text)
            return cls(
                version=str(raw["version"]),
                sha256=str(raw["sha256"]),
                rollout_percent=float(raw["rollout_percent"]),
                url=str(raw["url"]),
                model_digest=raw.get("model_digest"),
            )
        except json.JSONDecodeError as e:
            raise UpdateError(f"{source}: not valid JSON ({e.msg})") from e
        except KeyError as e:
            raise UpdateError(f"{source}: missing field {e.args[0]!r}") from e
        except (TypeError, ValueError, AttributeError) as e:
            if isinstance(e, UpdateError):
                raise
            raise UpdateError(f"{source}: malformed ({e})") from e

    @classmethod
    def read(cls, path: Path) -> UpdateManifest:
        return cls.from_json(path.read_text(), str(path))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


@dataclass(frozen=True)
class UpdateResult:
    outcome: Outcome
    version: str
    current: str | None
    detail: str = ""


def rollout_bucket(version: str, device_id: str) -> float:
    """A stable number in [0, 100) for this device and version: the device is in if it is below the percentage."""
    h = hashlib.sha256(f"{version}\0{device_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 * 100


def in_rollout(update: UpdateManifest, device_id: str) -> bool:
    return rollout_bucket(update.version, device_id) < update.rollout_percent


def _archive_bytes(bundle: Path) -> bytes:
    """A reproducible tar.gz of the bundle's files (sorted, no owners or times): same bundle, same sha256."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        for path in sorted(p for p in bundle.iterdir() if p.is_file()):
            data = path.read_bytes()
            info = tarfile.TarInfo(path.name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def publish(
    bundle: Path, out_dir: Path, version: str, rollout_percent: float, url: str | None = None
) -> UpdateManifest:
    """Pack `bundle` as `<out_dir>/<version>.tar.gz` and write `<out_dir>/update.json` announcing it."""
    model = EdgeModel.load(bundle)  # never publish a bundle that does not verify and load
    if not model.self_test().passed:
        raise UpdateError(f"{bundle}: fails its own self-test; not publishing")
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / f"{version}.tar.gz"
    data = _archive_bytes(bundle)
    archive.write_bytes(data)
    update = UpdateManifest(
        version=version,
        sha256=hashlib.sha256(data).hexdigest(),
        rollout_percent=rollout_percent,
        url=url or archive.resolve().as_uri(),
        model_digest=model.digest,
    )
    (out_dir / UPDATE_FILE).write_text(update.to_json())
    return update


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Device:
    """One device's bundle store: `bundles/<version>/`, symlinks `current` and `previous`, and `state.json`."""

    def __init__(self, root: Path, device_id: str):
        self.root = Path(root)
        self.device_id = device_id
        self.bundles = self.root / "bundles"
        self.bundles.mkdir(parents=True, exist_ok=True)

    # state -----------------------------------------------------------------------------------------
    def _link(self, name: str) -> str | None:
        link = self.root / name
        return Path(os.readlink(link)).name if link.is_symlink() else None

    @property
    def current(self) -> str | None:
        return self._link("current")

    @property
    def previous(self) -> str | None:
        return self._link("previous")

    def _state(self) -> dict[str, list[str]]:
        path = self.root / "state.json"
        if not path.exists():
            return {"bad_versions": []}
        state: dict[str, list[str]] = json.loads(path.read_text())
        return state

    def _mark_bad(self, version: str) -> None:
        state = self._state()
        state["bad_versions"] = sorted({*state.get("bad_versions", []), version})
        tmp = self.root / ".state.json.tmp"
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self.root / "state.json")

    def _point(self, name: str, version: str | None) -> None:
        """Atomically point symlink `name` at `bundles/<version>` (or remove it)."""
        link = self.root / name
        if version is None:
            link.unlink(missing_ok=True)
        else:
            tmp = self.root / f".{name}.tmp"
            tmp.unlink(missing_ok=True)
            os.symlink(Path("bundles") / version, tmp)
            os.replace(tmp, link)
        _fsync_dir(self.root)

    def load(self) -> EdgeModel:
        """The model the device serves: the bundle `current` points to."""
        if self.current is None:
            raise EdgeBundleError(f"{self.root}: no bundle installed")
        return EdgeModel.load(self.root / "current")

    # update ----------------------------------------------------------------------------------------
    def apply(self, update: UpdateManifest) -> UpdateResult:
        """Take `update` if this device is in its rollout; never leaves the device without its last good bundle."""
        current = self.current
        if update.version == current:
            return UpdateResult("up-to-date", update.version, current)
        if update.version in self._state().get("bad_versions", []):
            return UpdateResult("known-bad", update.version, current, "failed before on this device")
        if not in_rollout(update, self.device_id):
            bucket = rollout_bucket(update.version, self.device_id)
            return UpdateResult(
                "not-selected", update.version, current, f"bucket {bucket:.2f} >= {update.rollout_percent}%"
            )
        try:
            archive = self._fetch(update)
            self._unpack(archive, update.version)
        except (UpdateError, EdgeBundleError, OSError, tarfile.TarError) as e:
            return UpdateResult("rejected", update.version, current, str(e))
        self._point("previous", current)
        self._point("current", update.version)
        try:
            result = self.load().self_test()
            if not result.passed:
                raise EdgeBundleError(result.explain())
        except (EdgeBundleError, OSError) as e:
            self._point("current", current)
            self._mark_bad(update.version)
            shutil.rmtree(self.bundles / update.version, ignore_errors=True)
            return UpdateResult("rolled-back", update.version, current, str(e))
        self._prune(keep={update.version, *([current] if current else [])})
        return UpdateResult("installed", update.version, update.version, result.explain())

    def _fetch(self, update: UpdateManifest) -> Path:
        downloads = self.root / "downloads"
        downloads.mkdir(exist_ok=True)
        part = downloads / f"{update.version}.tar.gz.part"
        h = hashlib.sha256()
        url = update.url
        parsed = urllib.parse.urlparse(url)
        try:
            if parsed.scheme in ("", "file"):
                source = Path(urllib.parse.unquote(parsed.path) if parsed.scheme else url)
                reader = source.open("rb")
            elif parsed.scheme in ("http", "https"):
                reader = urllib.request.urlopen(url, timeout=30)
            else:
                raise UpdateError(f"{url}: unsupported URL scheme {parsed.scheme!r}")
        except OSError as e:
            raise UpdateError(f"{url}: cannot fetch ({e})") from e
        with reader, part.open("wb") as out:
            for block in iter(lambda: reader.read(1 << 20), b""):
                h.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != update.sha256:
            part.unlink()
            raise UpdateError(
                f"{url}: checksum mismatch: archive sha256 {h.hexdigest()}, the update manifest says {update.sha256}"
            )
        return part

    def _unpack(self, archive: Path, version: str) -> None:
        staging = self.bundles / f".staging-{version}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar.getmembers():
                    name = member.name
                    if not member.isfile() or "/" in name or name.startswith("."):
                        raise UpdateError(
                            f"{archive}: refusing archive member {name!r} (only plain top-level files)"
                        )
                    source = tar.extractfile(member)
                    assert source is not None
                    with (staging / name).open("wb") as out:
                        shutil.copyfileobj(source, out)
                        out.flush()
                        os.fsync(out.fileno())
            verify(staging)  # every file against the bundle's manifest before it can become current
            _fsync_dir(staging)
            target = self.bundles / version
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
            _fsync_dir(self.bundles)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            archive.unlink(missing_ok=True)

    def _prune(self, keep: set[str]) -> None:
        for path in self.bundles.iterdir():
            if path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)
