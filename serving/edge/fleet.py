"""Fleet rollout for edge bundles: the canary that a device fleet gets instead of traffic weights.

The publisher packs an edge bundle into a tar.gz and writes an update manifest (version, archive sha256,
rollout percentage, where to fetch it). Each device decides by a stable hash of (version, device id) whether
it is in the rollout, so raising the percentage only adds devices; it verifies the archive's checksum,
unpacks into a new directory (fsynced), swaps its `current` symlink atomically (`previous` keeps the
bundle before), then loads the new bundle and runs its self-test on the golden rows. A bundle that fails to
load or fails the self-test is swapped back out at once and remembered as bad, so it is not retried.

The install is two-phase, as A/B update systems do it (a new slot must be committed after a good boot or it
is rolled back): `state.json` records the install as pending before the swap and clears it only once the
self-test passed, so a crash between the swap and the self-test is finished on the next poll (or the next
`load`) instead of the unverified bundle counting as up to date. A failure that says nothing about the
bundle (an I/O error, memory) rolls back too but is retried on later polls, up to `TRANSIENT_LIMIT` times.
Everything fetched is bounded: the archive by the size the update manifest states (or `max_archive_bytes`),
the unpacked bundle by `max_bundle_bytes`.

Standard library and the edge runtime only: this is device code.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from serving.edge.manifest import (
    MANIFEST_FILE,
    MAX_FILES,
    EdgeBundleError,
    EdgeManifest,
    plain_name,
    verify,
)
from serving.edge.runtime import EdgeModel

UPDATE_FILE = "update.json"
STATE_FILE = "state.json"
Outcome = Literal["not-selected", "up-to-date", "known-bad", "rejected", "installed", "rolled-back"]
MAX_MANIFEST_BYTES = 64 * 1024
MAX_ARCHIVE_BYTES = 256 * 1024 * 1024
MAX_BUNDLE_BYTES = 1024 * 1024 * 1024
TRANSIENT_LIMIT = 3  # transient self-test failures before a version counts as bad


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
    size: int | None = None  # bytes of the archive: a device reads no more than this

    def __post_init__(self) -> None:
        if not self.version or "/" in self.version or self.version.startswith("."):
            raise UpdateError(f"update manifest: field version: {self.version!r} is not a valid version name")
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise UpdateError(f"update manifest: field sha256: {self.sha256!r} is not a hex sha256")
        if not 0 <= self.rollout_percent <= 100:
            raise UpdateError(
                f"update manifest: field rollout_percent: {self.rollout_percent} not in [0, 100]"
            )
        if not isinstance(self.url, str) or urllib.parse.urlparse(self.url).scheme not in SCHEMES:
            raise UpdateError(
                f"update manifest: field url: {self.url!r:.100} (expected {', '.join(SCHEMES[1:])} or a path)"
            )
        if self.model_digest is not None and not (
            isinstance(self.model_digest, str) and _DIGEST.fullmatch(self.model_digest)
        ):
            raise UpdateError(
                f"update manifest: field model_digest: {self.model_digest!r:.80} is not a digest"
            )
        if self.size is not None and (type(self.size) is not int or self.size <= 0):
            raise UpdateError(f"update manifest: field size: {self.size!r:.80} is not a byte count")

    @classmethod
    def from_json(cls, text: str, source: str = "update manifest") -> UpdateManifest:
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise UpdateError(f"{source}: expected a JSON object, got {type(raw).__name__}")
            percent = raw["rollout_percent"]
            if isinstance(percent, bool) or not isinstance(percent, int | float):
                raise UpdateError(f"{source}: field rollout_percent: {percent!r:.80} is not a number")
            return cls(
                version=_text(raw["version"], "version", source),
                sha256=_text(raw["sha256"], "sha256", source),
                rollout_percent=float(percent),
                url=_text(raw["url"], "url", source),
                model_digest=raw.get("model_digest"),
                size=raw.get("size"),
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
        with path.open("rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
        if len(data) > MAX_MANIFEST_BYTES:
            raise UpdateError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes; not an update manifest")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UpdateError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        return cls.from_json(text, str(path))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


SCHEMES = ("", "file", "http", "https")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def _text(value: object, field: str, source: str) -> str:
    if not isinstance(value, str):
        raise UpdateError(f"{source}: field {field}: {value!r:.80} is not a string")
    return value


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
        size=len(data),
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
    """One device's bundle store: `bundles/<version>/`, symlinks `current` and `previous`, and `state.json`.

    `state.json` holds `bad_versions` (never retried), `transient_failures` (version -> count) and
    `pending` (an install swapped in whose self-test has not passed yet).
    """

    def __init__(
        self,
        root: Path,
        device_id: str,
        *,
        max_archive_bytes: int = MAX_ARCHIVE_BYTES,
        max_bundle_bytes: int = MAX_BUNDLE_BYTES,
    ):
        self.root = Path(root)
        self.device_id = device_id
        self.max_archive_bytes = max_archive_bytes
        self.max_bundle_bytes = max_bundle_bytes
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

    @property
    def pending(self) -> str | None:
        """The version swapped in whose self-test has not passed yet (an install a crash interrupted)."""
        pending = self._state().get("pending")
        return str(pending["version"]) if isinstance(pending, dict) else None

    def _state(self) -> dict[str, Any]:
        path = self.root / STATE_FILE
        if not path.exists():
            return {"bad_versions": []}
        try:
            state = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UpdateError(f"{path}: not valid JSON ({e}); the device state is unreadable") from e
        if not isinstance(state, dict):
            raise UpdateError(f"{path}: expected a JSON object")
        return state

    def _write_state(self, state: dict[str, Any]) -> None:
        """Replace state.json atomically and durably (the pending mark must survive a power cut)."""
        tmp = self.root / f".{STATE_FILE}.tmp"
        with tmp.open("w") as f:
            f.write(json.dumps(state, indent=2, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.root / STATE_FILE)
        _fsync_dir(self.root)

    def _update_state(self, **changes: Any) -> None:
        state = self._state()
        for key, value in changes.items():
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
        self._write_state(state)

    def _mark_bad(self, version: str) -> None:
        state = self._state()
        state["bad_versions"] = sorted({*state.get("bad_versions", []), version})
        state.get("transient_failures", {}).pop(version, None)
        self._write_state(state)

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
        """The model the device serves: the bundle `current` points to, once its self-test has passed
        (an install a crash left unverified is finished first, and rolled back if it fails)."""
        self.recover()
        if self.current is None:
            raise EdgeBundleError(f"{self.root}: no bundle installed")
        return EdgeModel.load(self.root / "current")

    # update ----------------------------------------------------------------------------------------
    def recover(self) -> UpdateResult | None:
        """Finish an install a crash interrupted: self-test the bundle swapped in, keep it or roll it back.

        Returns what happened, or None when nothing was pending.
        """
        pending = self._state().get("pending")
        if not isinstance(pending, dict):
            return None
        version = str(pending.get("version"))
        previous = pending.get("previous")
        if self.current != version:  # the crash came before the swap (or after the swap back)
            self._update_state(pending=None)
            return None
        return self._settle(version, previous if isinstance(previous, str) else None, resumed=True)

    def apply(self, update: UpdateManifest) -> UpdateResult:
        """Take `update` if this device is in its rollout; never leaves the device without its last good bundle."""
        recovered = self.recover()
        if recovered is not None and recovered.version == update.version:
            return recovered
        current = self.current
        if update.version == current:
            return UpdateResult("up-to-date", update.version, current)
        state = self._state()
        if update.version in state.get("bad_versions", []):
            return UpdateResult("known-bad", update.version, current, "failed before on this device")
        if not in_rollout(update, self.device_id):
            bucket = rollout_bucket(update.version, self.device_id)
            return UpdateResult(
                "not-selected", update.version, current, f"bucket {bucket:.2f} >= {update.rollout_percent}%"
            )
        try:
            archive = self._fetch(update)
            manifest = self._unpack(archive, update.version)
            if update.model_digest is not None and manifest.model_digest != update.model_digest:
                shutil.rmtree(self.bundles / update.version, ignore_errors=True)
                raise UpdateError(
                    f"{update.url}: the bundle's model_digest is {manifest.model_digest}, the update "
                    f"manifest says {update.model_digest}"
                )
        except (UpdateError, EdgeBundleError, OSError, tarfile.TarError) as e:
            return UpdateResult("rejected", update.version, current, str(e))
        # Phase one: remember the install before the swap, so that a crash from here on is finished later.
        self._update_state(pending={"version": update.version, "previous": current})
        self._point("previous", current)
        self._point("current", update.version)
        return self._settle(update.version, current)

    def _settle(self, version: str, previous: str | None, *, resumed: bool = False) -> UpdateResult:
        """Phase two: self-test `version` (now current); commit it, or swap `previous` back."""
        again = " (finishing an install a restart interrupted)" if resumed else ""
        try:
            result = EdgeModel.load(self.root / "current").self_test()
            if not result.passed:
                raise EdgeBundleError(result.explain())
        except (OSError, MemoryError) as e:  # says nothing about the bundle: roll back, try again later
            self._roll_back(version, previous)
            failures = dict(self._state().get("transient_failures", {}))
            failures[version] = int(failures.get(version, 0)) + 1
            if failures[version] >= TRANSIENT_LIMIT:
                self._mark_bad(version)
                detail = f"{type(e).__name__}: {e}; failed {failures[version]} times, not retried"
            else:
                self._update_state(transient_failures=failures)
                detail = (
                    f"{type(e).__name__}: {e}; transient, retried on the next poll "
                    f"({failures[version]}/{TRANSIENT_LIMIT})"
                )
            return UpdateResult("rolled-back", version, previous, detail + again)
        except EdgeBundleError as e:
            self._roll_back(version, previous)
            self._mark_bad(version)
            return UpdateResult("rolled-back", version, previous, str(e) + again)
        failures = dict(self._state().get("transient_failures", {}))
        failures.pop(version, None)
        self._update_state(pending=None, transient_failures=failures or None)
        self._prune(keep={version, *([previous] if previous else [])})
        return UpdateResult("installed", version, version, result.explain() + again)

    def _roll_back(self, version: str, previous: str | None) -> None:
        self._point("current", previous)
        self._update_state(pending=None)
        if version != previous:
            shutil.rmtree(self.bundles / version, ignore_errors=True)

    def _open(self, update: UpdateManifest) -> tuple[Any, int | None]:
        """A reader of the archive and the length its source announces (None when it does not)."""
        url = update.url
        parsed = urllib.parse.urlparse(url)
        try:
            if parsed.scheme in ("", "file"):
                source = Path(urllib.parse.unquote(parsed.path) if parsed.scheme else url)
                reader = source.open("rb")
                return reader, os.fstat(reader.fileno()).st_size
            response = urllib.request.urlopen(url, timeout=30)
        except OSError as e:
            raise UpdateError(f"{url}: cannot fetch ({e})") from e
        length = response.headers.get("Content-Length")
        return response, int(length) if length and length.isdigit() else None

    def _fetch(self, update: UpdateManifest) -> Path:
        limit = self.max_archive_bytes
        if update.size is not None:
            if update.size > limit:
                raise UpdateError(
                    f"{update.url}: the update manifest says {update.size} bytes, more than this device "
                    f"takes ({limit})"
                )
            limit = update.size
        downloads = self.root / "downloads"
        downloads.mkdir(exist_ok=True)
        part = downloads / f"{update.version}.tar.gz.part"
        h = hashlib.sha256()
        reader, announced = self._open(update)
        total = 0
        try:
            with reader, part.open("wb") as out:
                if announced is not None and announced > limit:
                    raise UpdateError(
                        f"{update.url}: {announced} bytes announced, more than the {limit} bytes allowed"
                    )
                while block := reader.read(min(1 << 20, limit + 1 - total)):
                    total += len(block)
                    if total > limit:
                        raise UpdateError(
                            f"{update.url}: more than the {limit} bytes allowed; stopped reading"
                        )
                    h.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            if update.size is not None and total != update.size:
                raise UpdateError(f"{update.url}: {total} bytes, the update manifest says {update.size}")
            if h.hexdigest() != update.sha256:
                raise UpdateError(
                    f"{update.url}: checksum mismatch: archive sha256 {h.hexdigest()}, the update manifest "
                    f"says {update.sha256}"
                )
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return part

    def _unpack(self, archive: Path, version: str) -> EdgeManifest:
        staging = self.bundles / f".staging-{version}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            unpacked = 0
            with tarfile.open(archive, "r:gz") as tar:
                for count, member in enumerate(tar, start=1):
                    name = member.name
                    if not member.isfile() or not plain_name(name):
                        raise UpdateError(
                            f"{archive}: refusing archive member {name!r} (only plain top-level files)"
                        )
                    if count > MAX_FILES:
                        raise UpdateError(f"{archive}: more than {MAX_FILES} files")
                    unpacked += member.size
                    if unpacked > self.max_bundle_bytes:
                        raise UpdateError(
                            f"{archive}: unpacks to more than {self.max_bundle_bytes} bytes; refusing it"
                        )
                    source = tar.extractfile(member)
                    assert source is not None
                    with (staging / name).open("xb") as out:
                        shutil.copyfileobj(source, out)
                        out.flush()
                        os.fsync(out.fileno())
            manifest = verify(
                staging
            )  # every file against the bundle's manifest before it can become current
            unlisted = sorted(
                p.name for p in staging.iterdir() if p.name not in {f.name for f in manifest.files}
            )
            if unlisted != [MANIFEST_FILE]:
                extra = [n for n in unlisted if n != MANIFEST_FILE]
                raise UpdateError(
                    f"{archive}: {', '.join(extra) or MANIFEST_FILE} not listed in its manifest"
                )
            _fsync_dir(staging)
            target = self.bundles / version
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
            _fsync_dir(self.bundles)
            return manifest
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            archive.unlink(missing_ok=True)

    def _prune(self, keep: set[str]) -> None:
        for path in self.bundles.iterdir():
            if path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)
