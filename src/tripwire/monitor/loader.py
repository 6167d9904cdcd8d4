"""Load ``monitors/*.yaml``, reporting every error at once with file, line and field.

A file holds one monitor (a mapping with ``name``), a list of monitors, or a mapping with
a ``monitors:`` list. The YAML-with-line-numbers machinery is the metrics loader's
(:mod:`tripwire.metrics.loader`): one parser, one error format (``file:line: field: why``).
With a metric catalog, a monitor naming an unknown metric (or a funnel/retention metric,
which has no single value per minute) is an error too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tripwire.metrics.definitions import FunnelMetric, RetentionMetric
from tripwire.metrics.loader import (
    DefinitionError,
    ErrorCollector,
    MetricCatalog,
    error_path_in,
    parse_yaml_with_lines,
)
from tripwire.monitor.definitions import MonitorSpec
from tripwire.store.workspace import Workspace

Path_ = tuple[str | int, ...]


class MonitorDefinitionError(ValueError):
    """All the errors found while loading monitor definitions."""

    def __init__(self, errors: Iterable[DefinitionError]) -> None:
        self.errors = list(errors)
        lines = "\n".join(f"  {e}" for e in self.errors)
        super().__init__(f"{len(self.errors)} error(s) in monitor definitions:\n{lines}")


@dataclass(frozen=True)
class MonitorSet:
    """The loaded monitors by name, with the file and line each came from."""

    monitors: dict[str, MonitorSpec]
    sources: dict[str, tuple[str, int]] = field(default_factory=dict)

    def __iter__(self) -> Any:
        return iter(self.monitors.values())

    def __len__(self) -> int:
        return len(self.monitors)

    def __getitem__(self, name: str) -> MonitorSpec:
        try:
            return self.monitors[name]
        except KeyError:
            known = ", ".join(sorted(self.monitors)) or "none"
            raise KeyError(f"unknown monitor {name!r} (defined: {known})") from None


def _items(data: Any) -> tuple[list[Any], Path_] | None:
    if isinstance(data, list):
        return data, ()
    if isinstance(data, dict) and isinstance(data.get("monitors"), list):
        return data["monitors"], ("monitors",)
    if isinstance(data, dict) and "name" in data:
        return [data], ()
    return None


def parse_monitors_text(
    text: str, file: str, collector: ErrorCollector, catalog: MetricCatalog | None = None
) -> list[tuple[MonitorSpec, int]]:
    """Monitors of one file's text with their lines; problems go to ``collector``."""
    try:
        data, lines = parse_yaml_with_lines(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        problem = getattr(error, "problem", None) or str(error)
        collector.add(file, mark.line + 1 if mark else 1, (), f"YAML syntax error: {problem}")
        return []
    for path, line in lines.duplicates:
        collector.add(file, line, path, "duplicate key (YAML keeps only the last one)")
    if data is None:
        return []
    found = _items(data)
    if found is None:
        collector.add(file, 1, (), "expected a monitor mapping, a list, or a 'monitors:' list")
        return []
    items, prefix = found
    parsed = []
    for index, item in enumerate(items):
        base: Path_ = (*prefix, index) if prefix or isinstance(data, list) else ()
        line = lines.line_of(base)
        if not isinstance(item, dict):
            collector.add(
                file, line, base, f"a monitor must be a mapping, got {type(item).__name__}"
            )
            continue
        label = item.get("name") if isinstance(item.get("name"), str) else f"monitor #{index + 1}"
        try:
            monitor = MonitorSpec.model_validate(item)
        except ValidationError as error:
            for problem in error.errors():
                path = error_path_in(item, problem["loc"])
                message = problem["msg"].removeprefix("Value error, ")
                if problem["type"] == "missing":
                    message = "required field is missing"
                elif problem["type"] == "extra_forbidden":
                    message = "unknown field"
                collector.add(file, lines.line_of((*base, *path)), path, message, str(label))
            continue
        if catalog is not None:
            where = lines.line_of((*base, "metric"))
            if monitor.metric not in catalog:
                known = ", ".join(sorted(catalog.metrics)) or "none"
                collector.add(
                    file,
                    where,
                    ("metric",),
                    f"unknown metric {monitor.metric!r} (defined: {known})",
                    monitor.name,
                )
                continue
            if isinstance(catalog[monitor.metric], FunnelMetric | RetentionMetric):
                collector.add(
                    file,
                    where,
                    ("metric",),
                    f"{monitor.metric!r} is a {catalog[monitor.metric].type} metric; monitor one"
                    " of its step or ratio metrics instead",
                    monitor.name,
                )
                continue
        parsed.append((monitor, line))
    return parsed


def load_monitor_files(
    files: Iterable[Path], *, catalog: MetricCatalog | None = None, root: Path | None = None
) -> MonitorSet:
    """Load monitors from ``files``; raise :class:`MonitorDefinitionError` with every error."""
    collector = ErrorCollector()
    monitors: dict[str, MonitorSpec] = {}
    sources: dict[str, tuple[str, int]] = {}
    for path in files:
        name = str(path.relative_to(root)) if root and path.is_relative_to(root) else str(path)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            collector.add(name, 1, (), f"cannot read: {error}")
            continue
        for monitor, line in parse_monitors_text(text, name, collector, catalog):
            if monitor.name in monitors:
                first = sources[monitor.name]
                collector.add(
                    name,
                    line,
                    ("name",),
                    f"duplicate monitor name {monitor.name!r} (first defined at"
                    f" {first[0]}:{first[1]})",
                    monitor.name,
                )
                continue
            monitors[monitor.name] = monitor
            sources[monitor.name] = (name, line)
    if collector.errors:
        raise MonitorDefinitionError(collector.errors)
    return MonitorSet(monitors, sources)


def monitor_files(workspace: Workspace) -> list[Path]:
    """``monitors/*.yaml`` and ``*.yml`` of a workspace, sorted."""
    folder = workspace.monitors_dir
    if not folder.exists():
        return []
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])


def load_monitors(workspace: Workspace, catalog: MetricCatalog | None = None) -> MonitorSet:
    """The workspace's monitors, checked against its metric catalog when given."""
    return load_monitor_files(monitor_files(workspace), catalog=catalog, root=workspace.root)
