"""SQLite connections for the workspace's databases (the buffer and the state database).

One place decides how tripwire opens SQLite: WAL journal (readers in other processes never
block the writer and see only committed transactions), a busy timeout instead of immediate
``database is locked`` errors when two processes write, and an explicit ``synchronous``
level. ``FULL`` fsyncs the WAL at every commit, so a committed transaction survives a crash
of the process *and* of the machine; ``NORMAL`` survives a crash of the process only.

The state database (specs, locks, alerts, change log, decision log, keys) is opened with
:func:`connect_state`; each owner creates its own tables in it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Literal

from tripwire.store.workspace import Workspace

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]

#: How long a connection waits for another process's write lock before failing.
BUSY_TIMEOUT_MS = 30_000


def connect_sqlite(
    path: Path,
    *,
    synchronous: Synchronous = "FULL",
    check_same_thread: bool = True,
) -> sqlite3.Connection:
    """Open ``path`` in WAL mode with autocommit off-by-default semantics made explicit.

    The connection uses ``isolation_level=None`` (the caller issues ``BEGIN``/``COMMIT``
    itself, so transaction boundaries are visible in the code that needs them).

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     con = connect_sqlite(pathlib.Path(tmp) / "x.db")
    ...     mode = con.execute("PRAGMA journal_mode").fetchone()[0]
    ...     con.close()
    >>> mode
    'wal'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(
        path,
        isolation_level=None,
        check_same_thread=check_same_thread,
        timeout=BUSY_TIMEOUT_MS / 1000,
    )
    connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute(f"PRAGMA synchronous = {synchronous}")
    connection.execute("PRAGMA foreign_keys = ON")
    return connection


def connect_state(workspace: Workspace, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """The workspace's state database (``.tripwire/state.db``), WAL mode, ``synchronous=FULL``.

    State changes are rare and precious (a revoked key, an acknowledged alert, a locked
    experiment), so every commit is fsynced.
    """
    return connect_sqlite(
        workspace.state_path, synchronous="FULL", check_same_thread=check_same_thread
    )
