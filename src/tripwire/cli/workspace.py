"""`tripwire init`: create a workspace."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tripwire.cli.common import console
from tripwire.store.workspace import init_workspace


def register(app: typer.Typer) -> None:
    """Add `init`."""

    @app.command("init")
    def init(directory: Annotated[Path, typer.Argument(help="Folder to create or complete.")] = Path(".")) -> None:
        """Lay out a workspace: tripwire.yaml, metrics/, experiments/, monitors/, .tripwire/."""
        workspace = init_workspace(directory)
        console.print(f"[green]workspace ready[/green] at {workspace.root}")
