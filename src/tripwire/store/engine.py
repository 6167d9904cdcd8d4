"""The query engine connection: an Ibis backend with the lake registered as ``events``.

DuckDB (embedded, default) reads the lake through :func:`tripwire.store.lake.events_relation_sql`;
Spark (``engine: {query: spark}`` in ``tripwire.yaml``, optional extra ``tripwire[spark]``)
reads the same Parquet files into a temp view. Everything above this module builds Ibis
expressions on :func:`events_table` and never knows which engine runs them.

Field references used by metric definitions resolve here (:func:`resolve_field`):

=======================  =============================================================
reference                column
=======================  =============================================================
``properties.x``         ``prop_x`` when the lake has it, else JSON extraction
``context.locale``       ``locale`` (also ``device``, ``app_version``, ``os``)
``context.traits.x``     ``trait_x`` (also ``traits.x``), else JSON extraction
``context.a.b``          JSON extraction from the raw ``context``
``locale``, ``source``   the lake column of that name (any column, incl. ``prop_x``)
``lateness_seconds``     derived: ``received_at − timestamp`` in seconds
=======================  =============================================================
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import weakref
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.operations as ops
import ibis.expr.schema as sch
import ibis.expr.types as ir
from ibis.backends import BaseBackend
from ibis.backends.sql.datatypes import DuckDBType

from tripwire.store.lake import (
    ENVELOPE_FIELDS,
    PROPERTY_PREFIX,
    PROPERTY_TYPES_FILE,
    TRAIT_PREFIX,
    events_dir,
    events_relation_sql,
)
from tripwire.store.workspace import Workspace

EVENTS_TABLE = "events"
EngineName = Literal["duckdb", "spark"]
Kind = Literal["string", "double", "boolean"]

#: Context paths the lake types as columns.
CONTEXT_COLUMNS: dict[str, str] = {
    "context.locale": "locale",
    "context.device.model": "device",
    "context.app.version": "app_version",
    "context.os.name": "os",
    "properties.session_id": "session_id",
}

#: Fields computed from envelope columns.
DERIVED_FIELDS = ("lateness_seconds",)


class UnknownField(ValueError):
    """A field reference that names no column and no JSON path."""


def engine_name(workspace: Workspace) -> EngineName:
    """The configured query engine (``duckdb`` unless ``engine.query`` says ``spark``)."""
    name = str(workspace.setting("engine", "query", default="duckdb")).lower()
    if name in ("spark", "pyspark"):
        return "spark"
    if name != "duckdb":
        raise ValueError(f"tripwire.yaml: engine.query must be duckdb or spark, got {name!r}")
    return "duckdb"


def connect(workspace: Workspace) -> BaseBackend:
    """An Ibis backend over the workspace's lake with the ``events`` table registered."""
    return connect_lake(workspace.lake_dir, engine=engine_name(workspace))


def connect_lake(
    lake_dir: Path, *, engine: EngineName = "duckdb", threads: int | None = None
) -> BaseBackend:
    """An Ibis backend over ``lake_dir`` (DuckDB in memory, or local/cluster Spark)."""
    if engine == "spark":
        return _connect_spark(Path(lake_dir))
    backend = ibis.duckdb.connect(**({"threads": threads} if threads else {}))
    configure_duckdb(backend)
    register_events(backend, Path(lake_dir))
    return backend


def configure_duckdb(backend: BaseBackend) -> None:
    """Settings every tripwire DuckDB connection needs.

    No progress bar: a library prints nothing (DuckDB draws one on stdout for queries over
    2 s, into the CLI's output or between a benchmark child's result lines). Arrow lambdas:
    Ibis compiles list lambdas as ``x -> ...``, which DuckDB ≥ 1.3 deprecates.
    """
    backend.raw_sql("SET enable_progress_bar = false")  # type: ignore[attr-defined]
    # older DuckDB has no such setting: the arrow syntax is the only one there
    with contextlib.suppress(Exception):
        backend.raw_sql("SET lambda_syntax = 'ENABLE_SINGLE_ARROW'")  # type: ignore[attr-defined]


#: DuckDB optimizers that reorder joins and pick each hash join's build side.
JOIN_ORDER_OPTIMIZERS = ("join_order", "build_side_probe_side")


@contextlib.contextmanager
def joins_as_written(con: Any) -> Iterator[None]:
    """On a DuckDB connection ``con``: plan the queries run inside as written, each hash
    join building its table on its right side (the previous setting is restored after).

    For a join of the lake's events (left) with the analysed units (right): DuckDB
    estimates a filtered Parquet scan at ~1 row, so its optimizer builds the hash table on
    the events and probes it with the units. At 91M events × 10M units that cost 23 CPU-s
    against 11-15 with the table built on the units (join only, 2 cores). Only for
    queries whose right side is known to be the smaller one.
    """
    previous = con.sql("SELECT current_setting('disabled_optimizers')").fetchall()[0][0]
    names = [n.strip() for n in str(previous or "").split(",") if n.strip()]
    names += [n for n in JOIN_ORDER_OPTIMIZERS if n not in names]
    con.execute(f"SET disabled_optimizers = '{','.join(names)}'")
    try:
        yield
    finally:
        con.execute(f"SET disabled_optimizers = '{previous or ''}'")


def register_events(backend: BaseBackend, lake_dir: Path) -> None:
    """(Re)create the ``events`` view; call again after the first files land in a new lake."""
    if backend.name == "duckdb":
        backend.raw_sql(  # type: ignore[attr-defined]
            f"CREATE OR REPLACE VIEW {EVENTS_TABLE} AS SELECT * FROM {events_relation_sql(lake_dir)}"
        )
        _remember_lake(backend, _LakeView(Path(lake_dir)))
    else:
        _LAKES.pop(id(backend), None)
        _register_spark_events(backend, lake_dir)


def _connect_spark(lake_dir: Path) -> BaseBackend:
    try:
        from pyspark.sql import SparkSession
    except ImportError as error:  # pragma: no cover - depends on the optional extra
        raise RuntimeError(
            "engine.query is spark but pyspark is not installed: pip install 'tripwire[spark]'"
        ) from error
    session = (
        SparkSession.builder.appName("tripwire")
        .master("local[2]")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    backend = ibis.pyspark.connect(session)
    _register_spark_events(backend, lake_dir)
    return backend


def _register_spark_events(backend: BaseBackend, lake_dir: Path) -> None:
    session = backend._session  # type: ignore[attr-defined]
    root = events_dir(lake_dir)
    files = list(root.glob("date=*/event=*/*.parquet")) if root.exists() else []
    if files:
        frame = (
            session.read.option("mergeSchema", "true")
            .option("recursiveFileLookup", "true")
            .option("pathGlobFilter", "*.parquet")
            .parquet(str(root))
        )
    else:
        import pyarrow as pa

        frame = session.createDataFrame(pa.schema(ENVELOPE_FIELDS).empty_table().to_pandas())
    frame.createOrReplaceTempView(EVENTS_TABLE)


def events_table(
    backend: BaseBackend,
    events: Collection[str] | None = None,
    *,
    days: tuple[date, date] | None = None,
) -> ir.Table:
    """The ``events`` table of a connected backend, optionally only the rows of ``events``.

    With ``events`` (event names) on a DuckDB lake, the table reads only those events'
    partition folders (``date=*/event=<name>``) instead of every file: binding a query over
    the whole lake reads every file's footer (``union_by_name``), which dominates small
    queries. The columns and types are those of the whole ``events`` table, so expressions
    built on it compile the same way; rows are exactly ``events`` filtered by
    ``event IN events``. Elsewhere (Spark, in-memory views) it is the whole table and the
    caller's own ``event IN (...)`` filter does the work.

    With ``days`` (first, last UTC date, inclusive) on a DuckDB lake, only the ``date=``
    folders of those days are read (the lake partitions events by the UTC date of their
    timestamp): for a caller whose own filter keeps only timestamps within those days, the
    rows are the same and the other days' files are neither listed nor opened.
    """
    lake = _lake_of(backend)
    if lake is None:
        return backend.table(EVENTS_TABLE)
    if events is None and days is None:
        return lake.full_table(backend)
    return lake.subset_table(backend, events, days)


def narrow_events(table: ir.Table, events: Collection[str]) -> ir.Table | None:
    """The rows of ``events`` only, read from their partitions alone, when ``table`` is a
    DuckDB lake's whole ``events`` table (:func:`events_table` without names); else None.

    For functions that take an events table from their caller (experiment statistics):
    the narrowed table neither lists nor binds the other partitions' files, and needs no
    ``event IN (...)`` filter (DuckDB runs a long ``IN`` list as a join over every row).
    A partition folder holds only its event's rows (:func:`tripwire.store.lake.partition_dir`).
    """
    op = table.op()
    if not isinstance(op, ops.DatabaseTable) or op.name != EVENTS_TABLE:
        return None
    lake = _lake_of(op.source)
    if lake is None:
        return None
    return lake.subset_table(op.source, events)


@dataclass
class _LakeView:
    """A DuckDB backend's lake: the ``events`` schema (cached until the lake's property
    types change) and the SQL reading a subset of its event partitions."""

    lake_dir: Path
    _stamp: float | None = None
    _table: ir.Table | None = field(default=None, repr=False)
    _types: dict[str, str] = field(default_factory=dict)
    _views: set[str] = field(default_factory=set)

    def _refresh(self, backend: BaseBackend) -> ir.Table:
        types_file = events_dir(self.lake_dir) / PROPERTY_TYPES_FILE
        stamp = types_file.stat().st_mtime_ns if types_file.exists() else None
        if self._table is None or stamp != self._stamp:
            self._table = backend.table(EVENTS_TABLE)
            self._types = {
                name: DuckDBType.to_string(dtype) for name, dtype in self._table.schema().items()
            }
            self._stamp = stamp
        return self._table

    def full_table(self, backend: BaseBackend) -> ir.Table:
        return self._refresh(backend)

    def schema(self, backend: BaseBackend) -> sch.Schema:
        return self._refresh(backend).schema()

    def subset_table(
        self,
        backend: BaseBackend,
        events: Collection[str] | None,
        days: tuple[date, date] | None = None,
    ) -> ir.Table:
        """A temp view of :meth:`subset_sql`, one per distinct SQL (so per set of event
        partitions present), typed with the whole table's schema without asking DuckDB
        (an Ibis ``sql()`` table would re-parse the SQL on every compile)."""
        sql = self.subset_sql(backend, events, days)
        name = "events__" + hashlib.sha1(sql.encode()).hexdigest()[:16]
        if name not in self._views:
            backend.raw_sql(f"CREATE OR REPLACE TEMP VIEW {name} AS {sql}")  # type: ignore[attr-defined]
            self._views.add(name)
        return ops.DatabaseTable(name, self.schema(backend), backend).to_expr()

    def subset_sql(
        self,
        backend: BaseBackend,
        events: Collection[str] | None,
        days: tuple[date, date] | None = None,
    ) -> str:
        """``SELECT`` every column of ``events`` (cast to its type, NULL where a file lacks
        it) from the partitions of ``events`` (None: every event) that have files, within
        the ``date=`` folders of ``days`` (first, last, inclusive) when given."""
        self._refresh(backend)
        root = events_dir(self.lake_dir)
        dates = ["date=*"]
        if days is not None:
            first, last = (d.isoformat() for d in days)
            dates = sorted(
                p.name
                for p in root.glob("date=*")
                if p.is_dir() and first <= p.name.removeprefix("date=") <= last
            )
        folders = ["event=*"] if events is None else [
            f"event={quote(name, safe='')}"  # as store.lake.partition_dir names it
            for name in sorted(set(events))
        ]  # fmt: skip
        globs = []
        for day in dates:
            for folder in folders:
                if next(iter(root.glob(f"{day}/{folder}/*.parquet")), None) is not None:
                    globs.append(_sql_string(str(root / day / folder / "*.parquet")))
        empty = ", ".join(
            f"CAST(NULL AS {kind}) AS {_ident(name)}" for name, kind in self._types.items()
        )
        template = f"SELECT {empty} WHERE false"
        if not globs:
            return template
        files = (
            f"SELECT * FROM read_parquet([{', '.join(globs)}],"
            " union_by_name=true, hive_partitioning=false)"
        )
        columns = ", ".join(
            f"CAST({_ident(name)} AS {kind}) AS {_ident(name)}"
            for name, kind in self._types.items()
        )
        return f"SELECT {columns} FROM ({template} UNION ALL BY NAME {files})"


#: The lake behind each live DuckDB backend registered by :func:`register_events`, by
#: ``id`` (Ibis backends compare equal by database, so they cannot key a dict themselves).
_LAKES: dict[int, tuple[weakref.ref[BaseBackend], _LakeView]] = {}


def _remember_lake(backend: BaseBackend, lake: _LakeView) -> None:
    key, lakes = id(backend), _LAKES  # bound now: module globals are gone at interpreter exit
    lakes[key] = (weakref.ref(backend, lambda _: lakes.pop(key, None)), lake)


def _lake_of(backend: BaseBackend) -> _LakeView | None:
    entry = _LAKES.get(id(backend))
    return entry[1] if entry is not None and entry[0]() is backend else None


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def property_types(lake_dir: Path) -> dict[str, str]:
    """The lake's flattened column types (``prop_x``/``trait_x`` → string/double/boolean)."""
    path = events_dir(lake_dir) / PROPERTY_TYPES_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def column_for(ref: str, columns: set[str] | Any) -> str | None:
    """The lake column a reference names, or None when it needs JSON extraction/derivation.

    >>> column_for("properties.intent", {"prop_intent", "locale"})
    'prop_intent'
    >>> column_for("context.locale", {"locale"})
    'locale'
    >>> column_for("properties.rare", {"locale"}) is None
    True
    """
    if ref in columns:
        return ref
    if ref in CONTEXT_COLUMNS and CONTEXT_COLUMNS[ref] in columns:
        return CONTEXT_COLUMNS[ref]
    head, _, rest = ref.partition(".")
    if head == "properties" and rest and "." not in rest:
        name = PROPERTY_PREFIX + rest
    elif head == "context" and rest.startswith("traits.") and rest.count(".") == 1:
        name = TRAIT_PREFIX + rest.split(".", 1)[1]
    elif head == "traits" and rest and "." not in rest:
        name = TRAIT_PREFIX + rest
    else:
        return None
    return name if name in columns else None


def json_path_for(ref: str) -> tuple[str, list[str]] | None:
    """``(raw JSON column, keys)`` for references that can be read from the raw JSON.

    >>> json_path_for("context.traits.tenure")
    ('context', ['traits', 'tenure'])
    >>> json_path_for("properties.a.b")
    ('properties', ['a', 'b'])
    >>> json_path_for("locale") is None
    True
    """
    head, _, rest = ref.partition(".")
    if head in ("properties", "context", "traits") and rest:
        return head, rest.split(".")
    return None


def resolve_field(table: ir.Table, ref: str, kind: Kind | None = None) -> ir.Value:
    """The Ibis expression for a field reference on ``table`` (see the module table).

    ``kind`` chooses the type of a JSON-extracted value (default string); typed columns
    are returned as they are (the loader checks their types against the definition).
    """
    columns = set(table.columns)
    name = column_for(ref, columns)
    if name is not None:
        return table[name]
    if ref == "lateness_seconds":
        return (table.received_at.epoch_seconds() - table.timestamp.epoch_seconds()).cast("float64")
    path = json_path_for(ref)
    if path is None:
        raise UnknownField(
            f"unknown field {ref!r}: not a lake column; use properties.<key>, "
            "context.<path>, context.traits.<key> or a column such as locale, device, source"
        )
    raw, keys = path
    if raw not in columns:
        raise UnknownField(f"cannot resolve {ref!r}: the table has no {raw!r} column")
    node: Any = table[raw].cast(dt.json)
    for key in keys:
        node = node[key]
    if kind == "double":
        return node.float
    if kind == "boolean":
        return node.bool
    return node.str


def field_kind(table: ir.Table, ref: str) -> Kind | None:
    """The type of a typed column a reference names (None: JSON, type unknown).

    >>> import ibis
    >>> t = ibis.table({"prop_ms": "float64", "prop_ok": "boolean", "locale": "string"}, name="e")
    >>> field_kind(t, "properties.ms"), field_kind(t, "properties.ok"), field_kind(t, "locale")
    ('double', 'boolean', 'string')
    """
    if ref == "lateness_seconds":
        return "double"
    name = column_for(ref, set(table.columns))
    if name is None:
        return None
    dtype = table.schema()[name]
    if dtype.is_boolean():
        return "boolean"
    if dtype.is_numeric():
        return "double"
    if dtype.is_string():
        return "string"
    return None
