"""How a long-running command stops: between units of work, on Ctrl-C or on SIGTERM (what Kubernetes sends a pod).

The first signal sets an event the command's loop reads, so the file, report or commit under way is finished and
nothing is left half-written; it also puts the previous handlers back, so a second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def saying(what: str, print_: Callable[..., object]) -> Callable[[str], object]:
    """An `on_stop` that says the command stops after `what` is done, and how to stop it at once."""
    return lambda name: print_(f"{name}: stopping after {what} (Ctrl-C again stops at once)", highlight=False)


@contextlib.contextmanager
def stop_on_signals(on_stop: Callable[[str], object] | None = None) -> Iterator[threading.Event]:
    """Yield an event that the first SIGTERM or SIGINT sets (`on_stop` is told the signal's name); the handlers
    before it are back after that signal and on exit."""
    stopped = threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def stop(signum: int, frame: FrameType | None) -> None:
        stopped.set()
        restore()
        if on_stop is not None:
            on_stop(signal.Signals(signum).name)

    for sig in SIGNALS:
        signal.signal(sig, stop)
    # (on_stop runs in the signal handler, on the main thread between two bytecodes: printing is fine)
    try:
        yield stopped
    finally:
        restore()
