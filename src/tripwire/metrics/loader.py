"""Load ``metrics/*.yaml`` into definitions, reporting every error at once with file:line.

A file holds one metric (a mapping with ``name``), a list of metrics, or a mapping with a
``metrics:`` list. Errors are collected across all files, in three passes, before any
query runs:

1. YAML syntax (with the parser's line) and duplicate keys;
2. the definition's shape (pydantic: missing/unknown fields, wrong types, funnel with
   fewer than two steps, retention with ``a >= b``) and duplicate metric names;
3. against the lake, when it has data: unknown events and properties, value fields that
   are not numeric, predicates comparing a column with a literal of another type, and
   (``check_data=True``) ratios whose denominator is zero over all the data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import yaml
from pydantic import ValidationError

from tripwire.metrics.definitions import (
    METRIC_TYPES,
    MeanMetric,
    MetricBase,
    QuantileMetric,
    RatioMetric,
    SumMetric,
    event_names,
    field_refs,
)
from tripwire.store.engine import DERIVED_FIELDS, Kind, column_for, json_path_for
from tripwire.store.lake import ENVELOPE_FIELDS, PROPERTY_TYPES_FILE, events_dir
from tripwire.store.workspace import Workspace

Path_ = tuple[str | int, ...]

#: Events tripwire itself defines (always known, even before they first occur).
CONVENTION_EVENTS = frozenset(
    {
        "$exposure",
        "$change",
        "$latency",
        "$rejected",
        "$identify",
        "$page",
        "$screen",
        "$group",
        "$alias",
    }
)


@dataclass(frozen=True)
class DefinitionError:
    """One problem in one file: where (line, dotted field) and why."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class MetricDefinitionError(ValueError):
    """All the errors found while loading metric definitions."""

    def __init__(self, errors: Sequence[DefinitionError]) -> None:
        self.errors = list(errors)
        lines = "\n".join(f"  {e}" for e in self.errors)
        super().__init__(f"{len(self.errors)} error(s) in metric definitions:\n{lines}")


@dataclass(frozen=True)
class MetricSource:
    """Where a definition lives."""

    file: str
    line: int


@dataclass(frozen=True)
class MetricCatalog:
    """The loaded definitions by name, with where each came from."""

    metrics: dict[str, MetricBase]
    sources: dict[str, MetricSource] = field(default_factory=dict)

    def __getitem__(self, name: str) -> MetricBase:
        try:
            return self.metrics[name]
        except KeyError:
            known = ", ".join(sorted(self.metrics)) or "none"
            raise KeyError(f"unknown metric {name!r} (defined: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self.metrics

    def __iter__(self) -> Any:
        return iter(self.metrics.values())

    def __len__(self) -> int:
        return len(self.metrics)


@dataclass(frozen=True)
class LakeSchema:
    """What the lake holds: typed columns and event names (read from the files' layout)."""

    columns: dict[str, Kind | None]
    events: frozenset[str]

    @property
    def has_data(self) -> bool:
        return bool(self.events)

    @classmethod
    def of_lake(cls, lake_dir: Path) -> LakeSchema:
        """Columns from the envelope and the property-type registry; events from partitions."""
        import json

        root = events_dir(lake_dir)
        columns: dict[str, Kind | None] = {}
        for f in ENVELOPE_FIELDS:
            kind: Kind | None = "string" if str(f.type) == "string" else None
            columns[f.name] = kind
        types_path = root / PROPERTY_TYPES_FILE
        if types_path.exists():
            for name, kind_name in json.loads(types_path.read_text()).items():
                columns[name] = kind_name
        events = (
            frozenset(
                unquote(p.name.split("=", 1)[1])
                for p in root.glob("date=*/event=*")
                if any(p.glob("*.parquet"))
            )
            if root.exists()
            else frozenset()
        )
        return cls(columns=columns, events=events)


# --------------------------------------------------------------------------- YAML + lines


class _Lines:
    """Line numbers (1-based) of every node of a YAML document, by path."""

    def __init__(self) -> None:
        self.lines: dict[Path_, int] = {}
        self.duplicates: list[tuple[Path_, int]] = []

    def walk(self, node: yaml.Node, path: Path_ = ()) -> None:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                name = str(key.value)
                if name in seen:
                    self.duplicates.append(((*path, name), key.start_mark.line + 1))
                seen.add(name)
                self.lines[(*path, name)] = key.start_mark.line + 1
                self.walk(value, (*path, name))
                self.lines[(*path, name)] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.walk(item, (*path, index))

    def line_of(self, path: Path_) -> int:
        """The line of ``path``, or of its nearest existing parent."""
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, 1)


def parse_yaml_with_lines(text: str) -> tuple[Any, _Lines]:
    """Parse one YAML document and the line of every key path in it (for file:line errors).

    Shared by every definition loader (metrics, experiments, monitors).
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]
    lines = _Lines()
    if node is not None:
        lines.walk(node)
    return data, lines


def dotted(path: Iterable[str | int]) -> str:
    """``("numerator", "where", 0, "field")`` → ``numerator.where[0].field``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def error_path_in(doc: Any, loc: Sequence[str | int]) -> Path_:
    """The part of a pydantic error location that names something in (or missing from) ``doc``."""
    kept: list[str | int] = []
    node = doc
    for part in loc:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
        else:
            if isinstance(node, dict) and isinstance(part, str):
                kept.append(part)  # a missing field: named, at its parent's line
            break
        kept.append(part)
    return tuple(kept)


# --------------------------------------------------------------------------- loading


@dataclass
class ErrorCollector:
    """Gathers every definition error of a load so that all are reported at once."""

    errors: list[DefinitionError] = field(default_factory=list)

    def add(self, file: str, line: int, path: Path_, message: str, metric: str = "") -> None:
        where = dotted(path)
        label = f"{metric}.{where}" if metric and where else metric or where
        self.errors.append(DefinitionError(file, line, label, message))


def _items(data: Any) -> tuple[list[Any], Path_] | None:
    if isinstance(data, list):
        return data, ()
    if isinstance(data, dict) and "metrics" in data and isinstance(data["metrics"], list):
        return data["metrics"], ("metrics",)
    if isinstance(data, dict) and "name" in data:
        return [data], ()
    return None


def parse_text(
    text: str, file: str, collector: ErrorCollector
) -> list[tuple[MetricBase, int, Path_, _Lines]]:
    """Definitions of one file's text; problems go to ``collector``."""
    try:
        data, lines = parse_yaml_with_lines(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(error, "problem", None) or str(error)
        collector.add(file, line, (), f"YAML syntax error: {problem}")
        return []
    for path, line in lines.duplicates:
        collector.add(file, line, path, "duplicate key (YAML keeps only the last one)")
    if data is None:
        return []
    found = _items(data)
    if found is None:
        collector.add(
            file, 1, (), "expected a metric mapping, a list of metrics, or a 'metrics:' list"
        )
        return []
    items, prefix = found
    parsed = []
    for index, item in enumerate(items):
        base: Path_ = (*prefix, index) if prefix or isinstance(data, list) else ()
        line = lines.line_of(base)
        if not isinstance(item, dict):
            collector.add(
                file, line, base, f"a metric must be a mapping, got {type(item).__name__}"
            )
            continue
        name_value = item.get("name")
        label = name_value if isinstance(name_value, str) else f"metric #{index + 1}"
        kind = item.get("type")
        model = METRIC_TYPES.get(kind) if isinstance(kind, str) else None
        if model is None:
            where = lines.line_of((*base, "type"))
            choices = ", ".join(METRIC_TYPES)
            what = "missing" if kind is None else f"unknown type {kind!r}"
            collector.add(file, where, ("type",), f"{what}: expected one of {choices}", label)
            continue
        try:
            metric = model.model_validate(item)
        except ValidationError as error:
            for problem in error.errors():
                path = error_path_in(item, problem["loc"])
                message = problem["msg"].removeprefix("Value error, ")
                if problem["type"] == "missing":
                    message = "required field is missing"
                elif problem["type"] == "extra_forbidden":
                    message = "unknown field"
                elif problem["type"] == "too_short" and path == ("steps",):
                    message = f"a funnel needs at least 2 steps, got {len(item['steps'])}"
                collector.add(file, lines.line_of((*base, *path)), path, message, label)
            continue
        parsed.append((metric, line, base, lines))
    return parsed


def load_catalog(
    files: Iterable[Path], *, schema: LakeSchema | None = None, root: Path | None = None
) -> MetricCatalog:
    """Load definitions from ``files``; raise :class:`MetricDefinitionError` with all errors."""
    collector = ErrorCollector()
    metrics: dict[str, MetricBase] = {}
    sources: dict[str, MetricSource] = {}
    for path in files:
        name = str(path.relative_to(root)) if root and path.is_relative_to(root) else str(path)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            collector.add(name, 1, (), f"cannot read: {error}")
            continue
        for metric, line, base, lines in parse_text(text, name, collector):
            if metric.name in metrics:
                first = sources[metric.name]
                collector.add(
                    name,
                    lines.line_of((*base, "name")),
                    ("name",),
                    f"duplicate metric name {metric.name!r} (first defined at {first.file}:{first.line})",
                    metric.name,
                )
                continue
            metrics[metric.name] = metric
            sources[metric.name] = MetricSource(name, line)
            if schema is not None and schema.has_data:
                for path_, message in check_against_lake(metric, schema):
                    collector.add(name, lines.line_of((*base, *path_)), path_, message, metric.name)
    if collector.errors:
        raise MetricDefinitionError(collector.errors)
    return MetricCatalog(metrics, sources)


def metric_files(workspace: Workspace) -> list[Path]:
    """``metrics/*.yaml`` and ``*.yml`` of a workspace, sorted."""
    folder = workspace.metrics_dir
    if not folder.exists():
        return []
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])


def load_metrics(
    workspace: Workspace, *, check_lake: bool = True, backend: Any = None
) -> MetricCatalog:
    """The workspace's metric catalog, checked against its lake when it has data.

    With ``backend`` (an Ibis backend from :func:`tripwire.store.engine.connect`), also
    runs the data checks (ratios with a denominator that is zero over all the data).
    """
    schema = LakeSchema.of_lake(workspace.lake_dir) if check_lake else None
    catalog = load_catalog(metric_files(workspace), schema=schema, root=workspace.root)
    if backend is not None and schema is not None and schema.has_data:
        errors = check_data(catalog, backend)
        if errors:
            raise MetricDefinitionError(errors)
    return catalog


# --------------------------------------------------------------------------- semantic checks


_NUMERIC_OPS = ("gt", "ge", "lt", "le")


def _kind_of_literal(value: Any) -> Kind:
    if isinstance(value, list):
        return _kind_of_literal(value[0]) if value else "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "double"
    return "string"


def _ref_problem(ref: str, schema: LakeSchema) -> str | None:
    if ref in DERIVED_FIELDS:
        return None
    if column_for(ref, schema.columns) is not None:
        return None
    head, _, rest = ref.partition(".")
    if head in ("properties", "traits") and rest and "." not in rest:
        return f"unknown property {ref!r}: no event in the lake has it as a scalar"
    if head == "context" and rest.startswith("traits.") and rest.count(".") == 1:
        return f"unknown trait {ref!r}: no event in the lake has it"
    if json_path_for(ref) is not None:
        return None  # nested JSON path: resolved at query time
    return f"unknown field {ref!r}: not a lake column or a properties./context./traits. path"


def check_against_lake(metric: MetricBase, schema: LakeSchema) -> list[tuple[Path_, str]]:
    """Semantic problems of one definition against the lake's events and columns."""
    problems: list[tuple[Path_, str]] = []
    for path, name in event_names(metric):
        if name not in schema.events and name not in CONVENTION_EVENTS:
            problems.append((path, f"unknown event {name!r}: not in the lake"))
    refs = field_refs(metric)
    for path, ref in refs:
        problem = _ref_problem(ref, schema)
        if problem:
            problems.append((path, problem))
    numeric_paths: list[tuple[Path_, str]] = []
    value = getattr(metric, "value", None)
    if isinstance(metric, SumMetric | QuantileMetric | MeanMetric) and value:
        numeric_paths.append((("value",), value))
    if isinstance(metric, RatioMetric):
        for side in ("numerator", "denominator"):
            measure = getattr(metric, side)
            if measure.agg == "sum":
                numeric_paths.append(((side, "value"), measure.value))
    for path, ref in numeric_paths:
        kind = _column_kind(ref, schema)
        if kind == "string":
            problems.append((path, f"wrong type: {ref!r} is a string column, needs a number"))
    for path, ref in refs:
        if len(path) < 3 or path[-3] != "where" or path[-1] != "field":
            continue
        predicate = _predicate_at(metric, path)
        if predicate is None or predicate.op in ("is_null", "not_null"):
            continue
        kind = _column_kind(ref, schema)
        if kind is None:
            continue
        literal = _kind_of_literal(predicate.value)
        if predicate.op in _NUMERIC_OPS and kind != "double":
            problems.append(
                (path, f"wrong type: {predicate.op} needs a numeric field, {ref!r} is {kind}")
            )
        elif literal != kind:
            problems.append(
                (
                    path[:-1] + ("value",),
                    f"wrong type: {ref!r} is {kind}, compared with {literal} {predicate.value!r}",
                )
            )
    return problems


def _column_kind(ref: str, schema: LakeSchema) -> Kind | None:
    if ref in DERIVED_FIELDS:
        return "double"
    name = column_for(ref, schema.columns)
    return schema.columns.get(name) if name else None


def _predicate_at(metric: MetricBase, path: Path_) -> Any:
    node: Any = metric
    for part in path[:-1]:
        node = node[part] if isinstance(part, int) else getattr(node, part, None)
        if node is None:
            return None
    return node


def check_data(catalog: MetricCatalog, backend: Any) -> list[DefinitionError]:
    """Data checks needing a query: ratio denominators that are zero over all the data."""
    from tripwire.metrics.compile import timeseries_expr
    from tripwire.store.engine import events_table

    ratios = [m for m in catalog if isinstance(m, RatioMetric)]
    if not ratios:
        return []
    table = events_table(backend)
    totals = backend.to_pyarrow(timeseries_expr(ratios, table, grain=None)).to_pylist()
    row = totals[0] if totals else {}
    errors = []
    for metric in ratios:
        if not row.get(f"{metric.name}__denominator"):
            source = catalog.sources.get(metric.name, MetricSource("?", 1))
            errors.append(
                DefinitionError(
                    source.file,
                    source.line,
                    f"{metric.name}.denominator",
                    "denominator is zero over all the data in the lake (ratio undefined)",
                )
            )
    return errors
