"""CLI commands of the store area: sql, status."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app (none yet)."""
