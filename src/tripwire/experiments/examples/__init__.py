"""Example experiment specs for the synthetic world's experiments (``ranker_v2``,
``prompt_v3``), shipped so the demo and new users can start from a complete spec."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from tripwire.store.workspace import Workspace


def example_files() -> list[Path]:
    """The shipped example specs, sorted."""
    folder = resources.files(__name__)
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml"))


def install_examples(workspace: Workspace, *, overwrite: bool = False) -> list[Path]:
    """Copy the example specs into ``workspace/experiments/``; returns the files written.

    Existing files are kept unless ``overwrite``.
    """
    target = workspace.experiments_dir
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for source in example_files():
        destination = target / source.name
        if destination.exists() and not overwrite:
            continue
        destination.write_text(source.read_text())
        written.append(destination)
    return written
