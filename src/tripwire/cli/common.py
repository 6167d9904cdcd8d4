"""Options and helpers shared by every CLI area."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tripwire.store.workspace import Workspace, WorkspaceNotFound

console = Console()
err_console = Console(stderr=True)

WorkspaceOption = Annotated[
    Path | None,
    typer.Option("--workspace", "-w", help="Workspace folder (default: found upward from here)."),
]


def open_workspace(path: Path | None) -> Workspace:
    """Load the workspace or exit with a clear message."""
    try:
        return Workspace.load(path) if path else Workspace.find()
    except WorkspaceNotFound as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
