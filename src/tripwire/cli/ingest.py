"""CLI commands of the ingest area: `tripwire serve` and `tripwire keys create|list|revoke`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from tripwire.cli.common import WorkspaceOption, console, err_console, open_workspace
from tripwire.store.keys import PERMISSIONS, KeyManagementError, KeyStore

keys_app = typer.Typer(help="Manage write keys (stored hashed in the workspace state database).")


@keys_app.command("create")
def create_key(
    source: Annotated[
        str, typer.Option("--source", "-s", help="Source name events are tagged with.")
    ],
    permission: Annotated[
        list[str] | None,
        typer.Option(
            "--permission",
            "-p",
            help=f"One of {', '.join(PERMISSIONS)}; repeatable (default: write).",
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            help="Register an existing key (e.g. a Segment write key) instead of generating one.",
        ),
    ] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Create a key for SOURCE and print it once (only its hash is stored)."""
    ws = open_workspace(workspace)
    try:
        with KeyStore.for_workspace(ws) as store:
            new = store.create(source, permission or ["write"], secret=key)
    except KeyManagementError as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    console.print(f"key id      {new.key.key_id}")
    console.print(f"source      {new.key.source}")
    console.print(f"permissions {', '.join(sorted(new.key.permissions))}")
    console.print("[bold]write key[/bold] (shown once; store it now):")
    print(new.secret)


@keys_app.command("list")
def list_keys(workspace: WorkspaceOption = None) -> None:
    """List keys (id, source, permissions, created, revoked); secrets are never shown."""
    ws = open_workspace(workspace)
    with KeyStore.for_workspace(ws) as store:
        keys = store.list()
    table = Table(title=f"write keys of {ws.root}")
    for column in ("key id", "source", "permissions", "created (UTC)", "status"):
        table.add_column(column)
    for item in keys:
        status = "active" if item.active else f"revoked {item.revoked_at:%Y-%m-%d %H:%M}"
        table.add_row(
            item.key_id,
            item.source,
            ", ".join(sorted(item.permissions)),
            f"{item.created_at:%Y-%m-%d %H:%M}",
            status,
        )
    console.print(table if keys else "no keys yet: `tripwire keys create --source app`")


@keys_app.command("revoke")
def revoke_key(
    key_id: Annotated[
        str, typer.Argument(help="The key id from `tripwire keys list` (or the key).")
    ],
    workspace: WorkspaceOption = None,
) -> None:
    """Revoke a key: requests using it are refused (401) from now on."""
    ws = open_workspace(workspace)
    try:
        with KeyStore.for_workspace(ws) as store:
            revoked = store.revoke(key_id)
    except KeyManagementError as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    console.print(f"revoked {revoked.key_id} (source {revoked.source})")


def register(app: typer.Typer) -> None:
    """Add `serve` and the `keys` group."""

    @app.command("serve")
    def serve(
        host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port.")] = 8787,
        workers: Annotated[int, typer.Option(help="Worker processes.", min=1)] = 1,
        access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
        monitor: Annotated[
            bool, typer.Option(help="Run the monitors/*.yaml continuously (one worker only).")
        ] = True,
        workspace: WorkspaceOption = None,
    ) -> None:
        """Serve the capture API (Segment and PostHog formats) for the workspace."""
        from tripwire.web.server import serve as run

        ws = open_workspace(workspace)
        with KeyStore.for_workspace(ws) as store:
            active = [k for k in store.list() if k.active and "write" in k.permissions]
        if not active:
            err_console.print(
                "[yellow]warning:[/yellow] no active write key; every capture request will get"
                " 401. Create one with `tripwire keys create --source app`."
            )
        console.print(f"capture API for {ws.root} on http://{host}:{port} (POST /v1/batch)")
        has_monitors = monitor and any(ws.monitors_dir.glob("*.y*ml"))
        if has_monitors and workers > 1:
            err_console.print("[yellow]warning:[/yellow] monitors run only with --workers 1")
        run(
            ws,
            host=host,
            port=port,
            workers=workers,
            access_log=access_log,
            monitor=has_monitors and workers == 1,
        )

    app.add_typer(keys_app, name="keys")
