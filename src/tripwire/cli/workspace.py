"""`tripwire init`: create a workspace with the day-1 metric catalog and default monitors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tripwire.cli.common import console
from tripwire.store.workspace import Workspace, init_workspace


def initialize_workspace(directory: Path) -> Workspace:
    """Lay out the workspace and install the day-1 catalog and default monitors (kept if edited)."""
    from tripwire.metrics.catalog import install_catalog
    from tripwire.monitor.defaults import install_default_monitors

    workspace = init_workspace(directory)
    install_catalog(workspace)
    install_default_monitors(workspace)
    return workspace


def register(app: typer.Typer) -> None:
    """Add `init`."""

    @app.command("init")
    def init(
        directory: Annotated[Path, typer.Argument(help="Folder to create or complete.")] = Path(
            "."
        ),
    ) -> None:
        """Lay out a workspace: tripwire.yaml, metrics/ (day-1 catalog), experiments/, monitors/, .tripwire/."""
        workspace = initialize_workspace(directory)
        metrics = len(list(workspace.metrics_dir.glob("*.yaml")))
        monitors = len(list(workspace.monitors_dir.glob("*.yaml")))
        console.print(
            f"[green]workspace ready[/green] at {workspace.root} "
            f"({metrics} metric files, {monitors} monitor files)"
        )
