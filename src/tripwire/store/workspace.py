"""The workspace: a dbt-like folder a team keeps in git, and its data folder.

Layout::

    tripwire.yaml          engines, retention, notifiers, exposure mappings
    metrics/*.yaml         metric definitions
    experiments/*.yaml     experiment specs
    monitors/*.yaml        monitors and alert rules
    .tripwire/             data (git-ignored): buffer.db, state.db, lake/, reports/

Commands find the workspace upward from the current directory, like git.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_FILE = "tripwire.yaml"
DATA_DIR = ".tripwire"
DEFINITION_DIRS = ("metrics", "experiments", "monitors")

DEFAULT_CONFIG: dict[str, Any] = {
    "version": 1,
    "engine": {"query": "duckdb", "buffer": "sqlite", "state": "sqlite"},
    "ingest": {
        "dedupe_window_days": 7,
        "max_event_bytes": 32 * 1024,
        "max_batch_bytes": 500 * 1024,
        "high_water_mark": 2_000_000,
        "retry_after_seconds": 5,
    },
    "retention": {"buffer_days": 7},
    "notifiers": [],
    "exposure_mappings": [],
}


class WorkspaceNotFound(RuntimeError):
    """No tripwire.yaml in the given directory or any parent."""


@dataclass(frozen=True)
class Workspace:
    """Paths and configuration of one workspace."""

    root: Path
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.root / DATA_DIR

    @property
    def lake_dir(self) -> Path:
        return self.data_dir / "lake"

    @property
    def buffer_path(self) -> Path:
        return self.data_dir / "buffer.db"

    @property
    def state_path(self) -> Path:
        return self.data_dir / "state.db"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def metrics_dir(self) -> Path:
        return self.root / "metrics"

    @property
    def experiments_dir(self) -> Path:
        return self.root / "experiments"

    @property
    def monitors_dir(self) -> Path:
        return self.root / "monitors"

    def setting(self, *path: str, default: Any = None) -> Any:
        """A nested config value, falling back to the built-in default."""
        for source in (self.config, DEFAULT_CONFIG):
            node: Any = source
            for key in path:
                if not isinstance(node, dict) or key not in node:
                    node = None
                    break
                node = node[key]
            if node is not None:
                return node
        return default

    @classmethod
    def load(cls, root: Path) -> Workspace:
        root = Path(root).resolve()
        config_path = root / CONFIG_FILE
        if not config_path.exists():
            raise WorkspaceNotFound(f"{config_path} does not exist (run `tripwire init {root}`)")
        config = yaml.safe_load(config_path.read_text()) or {}
        if not isinstance(config, dict):
            raise ValueError(
                f"{config_path}: top level must be a mapping, got {type(config).__name__}"
            )
        workspace = cls(root=root, config=config)
        workspace.data_dir.mkdir(exist_ok=True)
        return workspace

    @classmethod
    def find(cls, start: Path | None = None) -> Workspace:
        """The workspace containing ``start`` (default: the current directory)."""
        here = Path(start or Path.cwd()).resolve()
        for candidate in (here, *here.parents):
            if (candidate / CONFIG_FILE).exists():
                return cls.load(candidate)
        raise WorkspaceNotFound(
            f"no {CONFIG_FILE} in {here} or any parent (run `tripwire init DIR`)"
        )


def init_workspace(root: Path) -> Workspace:
    """Create the workspace layout (idempotent: existing files are kept)."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    config_path = root / CONFIG_FILE
    if not config_path.exists():
        config_path.write_text(yaml.safe_dump(DEFAULT_CONFIG, sort_keys=False))
    for name in DEFINITION_DIRS:
        (root / name).mkdir(exist_ok=True)
    gitignore = root / ".gitignore"
    if not gitignore.exists() or DATA_DIR not in gitignore.read_text():
        with gitignore.open("a") as handle:
            handle.write(f"{DATA_DIR}/\n")
    return Workspace.load(root)
