"""The day-1 metric catalog shipped with tripwire (YAML files next to this module).

It covers what a chatbot/shopping team tracks from day one (see ``docs/metrics.md``):
conversation quality and latency, recommendations and retention, the voice checkout
funnel with orders and revenue, and data health. ``tripwire init`` copies it into the
workspace's ``metrics/`` where the team owns and edits it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from tripwire.store.workspace import Workspace


def catalog_files() -> list[Path]:
    """The shipped catalog's YAML files, sorted."""
    folder = resources.files(__name__)
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml"))


def install_catalog(workspace: Workspace, *, overwrite: bool = False) -> list[Path]:
    """Copy the catalog into ``workspace/metrics/``; returns the files written.

    Existing files are kept unless ``overwrite`` (the team may have edited them).
    """
    target = workspace.metrics_dir
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for source in catalog_files():
        destination = target / source.name
        if destination.exists() and not overwrite:
            continue
        destination.write_text(source.read_text())
        written.append(destination)
    return written
