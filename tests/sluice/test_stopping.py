"""Long-running commands stop between units of work on the first SIGTERM or Ctrl-C, and at once on the second."""

from __future__ import annotations

import os
import signal

import pytest

from sluice.stopping import stop_on_signals


@pytest.mark.parametrize("first", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_first_signal_sets_the_event_and_the_second_interrupts(first: signal.Signals) -> None:
    told: list[str] = []
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    with pytest.raises(KeyboardInterrupt), stop_on_signals(told.append) as stopped:
        os.kill(os.getpid(), first)  # handled on the next bytecode: the process goes on
        assert stopped.wait(5)
        assert told == [first.name]
        os.kill(os.getpid(), signal.SIGINT)  # the handlers from before are back: Python's KeyboardInterrupt
        stopped.wait(5)  # the interrupt lands here
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_the_handlers_from_before_are_back_when_the_command_ends() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    with stop_on_signals() as stopped:
        assert signal.getsignal(signal.SIGTERM) != before[signal.SIGTERM]
    assert not stopped.is_set()
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_the_command_says_what_it_finishes_and_how_to_stop_at_once() -> None:
    from sluice.stopping import saying

    printed: list[str] = []
    with stop_on_signals(saying("the file under way", lambda text, **_: printed.append(text))) as stopped:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stopped.wait(5)
    assert printed == ["SIGTERM: stopping after the file under way (Ctrl-C again stops at once)"]
