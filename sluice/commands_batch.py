"""`sluice batch`: registered on the top-level app by sluice/cli.py."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `sluice` app."""
