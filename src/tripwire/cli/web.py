"""``tripwire dashboard``: serve the web dashboard (and the capture API) and print its URL."""

from __future__ import annotations

import webbrowser
from typing import Annotated

import typer

from tripwire.cli.common import WorkspaceOption, console, err_console, open_workspace
from tripwire.store.keys import KeyStore
from tripwire.web.security import is_loopback


def dashboard_url(host: str, port: int) -> str:
    """The URL to open for a server listening on ``host``.

    >>> dashboard_url("0.0.0.0", 8787), dashboard_url("127.0.0.1", 9000)
    ('http://127.0.0.1:8787/', 'http://127.0.0.1:9000/')
    """
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{shown}:{port}/"


def register(app: typer.Typer) -> None:
    """Add ``tripwire dashboard``."""

    @app.command("dashboard")
    def dashboard(
        host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port.")] = 8787,
        open_browser: Annotated[
            bool, typer.Option("--open", help="Open the dashboard in the default browser.")
        ] = False,
        workspace: WorkspaceOption = None,
    ) -> None:
        """Serve the dashboard of the workspace (the same server as `tripwire serve`).

        From loopback the pages read without a key; beyond loopback they ask for a read
        or write key (`tripwire keys create --permission read`). Acknowledging alerts,
        silencing and recording changes always need a key with write permission.
        """
        from tripwire.web.server import serve

        ws = open_workspace(workspace)
        with KeyStore.for_workspace(ws) as keys:
            active = [k for k in keys.list() if k.active]
        if not is_loopback(host) and host not in ("localhost",) and not active:
            err_console.print(
                "[yellow]warning:[/yellow] listening beyond loopback with no active key: nobody"
                " can log in. Create one with `tripwire keys create --permission read`."
            )
        url = dashboard_url(host, port)
        console.print(f"dashboard for {ws.root}: [bold]{url}[/bold]")
        if open_browser:
            webbrowser.open(url)
        serve(ws, host=host, port=port, monitor=False)
