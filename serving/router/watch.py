"""Follow a deployment manifest file as it changes: the one way both runtimes learn a new routing.

`sluice up` watches the environment's manifest in a Git checkout; the cluster router watches the same file
mounted from a ConfigMap (kubelet swaps the mounted file atomically through a symlink). The file is polled
by content hash every `interval` seconds; on a change `apply` is called with its path and bytes. When `apply`
refuses the content (it raises), the refusal is reported once and the previous routing stays in force until
the file changes again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from deployment import kinds
from deployment.view import ManifestError

Apply = Callable[[Path, bytes], Awaitable[None]]
Report = Callable[[int, str], None]


class ManifestWatch:
    def __init__(
        self,
        location: str | Path,
        apply: Apply,
        *,
        interval: float = 0.5,
        report: Report | None = None,
        refusals: tuple[type[Exception], ...] = (ManifestError,),
    ):
        self.location = Path(location)
        self.apply = apply
        self.interval = interval
        self.report = report or (
            lambda level, message: logging.getLogger("sluice.router").log(level, message)
        )
        self.refusals = refusals
        self.applied: str | None = None  # the hash of the content last applied (or refused)
        self.path: Path | None = None

    def read(self) -> tuple[Path, bytes]:
        """The manifest's path and content now (ManifestError or OSError when there is none)."""
        path = kinds.find(self.location)
        return path, path.read_bytes()

    def mark(self, content: bytes) -> None:
        """Record `content` as applied (by whoever applied it at startup)."""
        self.applied = hashlib.sha256(content).hexdigest()

    async def check(self) -> bool:
        """Apply the manifest if its content changed since it was last applied or refused; True if applied."""
        try:
            path, content = self.read()
        except (ManifestError, OSError) as e:
            digest = f"missing:{e}"
            if digest != self.applied:
                self.applied = digest
                self.report(logging.ERROR, f"manifest refused, still routing as before: {e}")
            return False
        digest = hashlib.sha256(content).hexdigest()
        if digest == self.applied:
            return False
        self.applied = digest
        self.path = path
        try:
            await self.apply(path, content)
        except self.refusals as e:
            self.report(logging.ERROR, f"manifest refused, still routing as before: {e}")
            return False
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check()
