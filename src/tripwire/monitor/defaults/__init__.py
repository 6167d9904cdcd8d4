"""Default monitors for the day-1 metric catalog, installed into a workspace's ``monitors/``.

``tripwire init`` calls :func:`install_default_monitors`; files already there are kept
(users edit them), so installing twice changes nothing.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from tripwire.store.workspace import Workspace


def default_monitor_files() -> list[str]:
    """Names of the shipped default monitor files."""
    folder = resources.files(__package__)
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml"))


def install_default_monitors(workspace: Workspace, *, overwrite: bool = False) -> list[Path]:
    """Copy the default monitor files into ``workspace.monitors_dir``; returns those written."""
    target = workspace.monitors_dir
    target.mkdir(parents=True, exist_ok=True)
    folder = resources.files(__package__)
    written = []
    for name in default_monitor_files():
        path = target / name
        if path.exists() and not overwrite:
            continue
        path.write_text(folder.joinpath(name).read_text())
        written.append(path)
    return written
