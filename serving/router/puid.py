"""Seldon v1's request id (`puid`): what the router accepts from callers, and the ids it makes.

A caller may send its own id (the `seldon-puid` header, or `meta.puid` in the body); the router writes it back
in a response header, so it must be a plain token: letters, digits and `._:-`, at most 128 characters. Anything
else (a CR LF that would split the response, a space, a quote) is refused with a 400 before the request goes
anywhere. An id the router makes names the predictor that answered after its last dot, so feedback that
carries only the id reaches that predictor on whichever router replica it lands.
"""

from __future__ import annotations

import itertools
import os
import re

PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
# What `PuidMaker.make` writes: 16 hex digits of process prefix, a hex counter, a dot, the predictor's name.
MADE = re.compile(r"^[0-9a-f]{17,32}\.([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)$")


class PuidError(ValueError):
    """A caller's puid that the router will not echo."""


def check(value: str, where: str) -> str:
    """`value` when it is a plain token; PuidError naming `where` (header or field) otherwise."""
    if PATTERN.match(value):
        return value
    shown = repr(value if len(value) <= 60 else value[:60] + "...")
    raise PuidError(
        f"{where}: {shown} is not a valid puid (letters, digits and . _ : - only, at most 128 characters)"
    )


class PuidMaker:
    """Unique ids for one router process: a random prefix and a counter, cheap on the hot path."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._seq = itertools.count(1)

    def make(self, predictor: str) -> str:
        return f"{self._prefix}{next(self._seq):x}.{predictor}"


def predictor_of(puid: str) -> str | None:
    """The predictor a router-made puid names (None for a caller's own id)."""
    match = MADE.match(puid)
    return match.group(1) if match else None
