"""Run the capture app under uvicorn (``tripwire serve``).

uvicorn picks httptools and uvloop when they are installed (``uvicorn[standard]``); with
them the HTTP parsing and the event loop run in C, which matters at tens of thousands of
events per second. With ``--workers N`` each worker process opens its own buffer writer;
SQLite serializes their commits (WAL), each process still group-commits its own requests.
"""

from __future__ import annotations

import os
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from tripwire.ingest.app import create_app
from tripwire.store.workspace import Workspace

#: How worker processes learn which workspace to open.
WORKSPACE_ENV = "TRIPWIRE_SERVE_WORKSPACE"
#: ``1`` runs the streaming monitor inside the server (one worker only).
MONITOR_ENV = "TRIPWIRE_SERVE_MONITOR"


def app_from_environment() -> FastAPI:
    """uvicorn factory: the capture app of the workspace named in ``TRIPWIRE_SERVE_WORKSPACE``."""
    return create_app(
        Workspace.load(Path(os.environ[WORKSPACE_ENV])),
        monitor=os.environ.get(MONITOR_ENV) == "1",
    )


def serve(
    workspace: Workspace,
    *,
    host: str = "127.0.0.1",
    port: int = 8787,
    workers: int = 1,
    access_log: bool = False,
    log_level: str = "info",
    monitor: bool = False,
) -> None:
    """Serve ``workspace``'s capture API until interrupted (blocks).

    ``monitor`` runs the streaming monitor in the server (only with one worker: each worker
    would otherwise run its own).
    """
    os.environ[WORKSPACE_ENV] = str(workspace.root)
    os.environ[MONITOR_ENV] = "1" if monitor and workers == 1 else "0"
    uvicorn.run(
        "tripwire.ingest.server:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
        log_level=log_level,
        timeout_graceful_shutdown=10,
        server_header=False,
    )
