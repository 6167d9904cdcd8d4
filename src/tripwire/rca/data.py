"""What every investigation step reads: windows, leaf tables and bucketed series.

All heavy work runs in the query engine through :func:`tripwire.metrics.timeseries.timeseries`
(one grouped scan per window); only per-leaf or per-bucket aggregates come back as numpy.

* A :class:`Window` is a half-open UTC interval ``[start, end)``.
* The *baseline* of a window is the same clock-time window on each of the previous days
  (:func:`baseline_windows`), so daily seasonality cancels.
* A *leaf* is one combination of values of the investigated dimensions; a
  :class:`LeafTable` holds a metric's numerator and denominator per leaf.
"""

from __future__ import annotations

import hashlib
import itertools
import weakref
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.operations as ops
import ibis.expr.schema as sch
import ibis.expr.types as ir
import numpy as np
import pyarrow as pa
from ibis.backends import BaseBackend

from tripwire.metrics.compile import _and, predicate, timeseries_expr
from tripwire.metrics.definitions import FunnelMetric, MetricBase, Predicate
from tripwire.metrics.funnel import funnel_expr
from tripwire.metrics.timeseries import Query, timeseries
from tripwire.store.engine import events_table
from tripwire.store.lake import events_dir

#: Resolution of the time series used for onset detection and cumulative impact.
BUCKET = timedelta(minutes=10)
MINUTE = timedelta(minutes=1)
#: Label of a missing dimension value.
NONE = "(none)"
#: Context dimensions investigated for every metric (metric dimensions are added).
CONTEXT_DIMENSIONS: tuple[str, ...] = (
    "locale",
    "device",
    "app_version",
    "context.traits.payment_method",
    "context.traits.tenure",
    "context.traits.prime",
)
#: Metric types whose numerator/denominator are additive over leaves.
ADDITIVE_TYPES = ("count", "sum", "distinct", "ratio", "proportion")


class InvestigationError(ValueError):
    """The investigation cannot run as asked (names the metric, field or time)."""


@dataclass(frozen=True)
class Window:
    """A half-open UTC interval ``[start, end)``."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise InvestigationError(f"window {self.start}..{self.end}: times must be UTC-aware")
        if self.end <= self.start:
            raise InvestigationError(f"window ends ({self.end}) before it starts ({self.start})")

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    def shifted(self, delta: timedelta) -> Window:
        return Window(self.start + delta, self.end + delta)

    def text(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M}–{self.end:%H:%M} UTC"


def baseline_windows(
    current: Window, *, days: int = 7, data_start: datetime | None = None
) -> tuple[Window, ...]:
    """The same clock-time window on each of the ``days`` previous days (those with data).

    >>> w = Window(datetime(2026, 11, 9, 18, tzinfo=UTC), datetime(2026, 11, 9, 20, tzinfo=UTC))
    >>> [b.start.day for b in baseline_windows(w, days=3)]
    [8, 7, 6]
    """
    out = []
    for back in range(1, days + 1):
        window = current.shifted(-timedelta(days=back))
        if data_start is not None and window.start < data_start:
            break
        out.append(window)
    return tuple(out)


def dimension_label(ref: str) -> str:
    """Short name of a dimension reference (``context.traits.tenure`` → ``tenure``)."""
    return ref.rsplit(".", 1)[-1]


def investigation_dimensions(metric: MetricBase, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """Context dimensions plus the metric's own (deduplicated by short name)."""
    seen: dict[str, str] = {}
    for ref in (*CONTEXT_DIMENSIONS, *metric.dimensions, *extra):
        seen.setdefault(dimension_label(ref), ref)
    if isinstance(metric, FunnelMetric):
        return tuple(r for r in seen.values() if not r.startswith("properties."))
    return tuple(seen.values())


def segment_where(segment: Mapping[str, str], dims: Sequence[str]) -> tuple[Predicate, ...]:
    """Predicates selecting a segment given by short dimension names."""
    refs = {dimension_label(d): d for d in dims}
    out = []
    for key, value in segment.items():
        ref = refs.get(dimension_label(key), key)
        if value == NONE:
            out.append(Predicate(field=ref, op="is_null"))
        elif value in ("true", "false"):  # boolean columns are sliced as their text
            out.append(Predicate(field=ref, op="eq", value=value == "true"))
        else:
            out.append(Predicate(field=ref, op="eq", value=value))
    return tuple(out)


def data_bounds(backend: BaseBackend) -> tuple[datetime, datetime]:
    """First event and just after the last event in the lake."""
    table = events_table(backend)
    row = backend.to_pyarrow(
        table.aggregate(first=table.timestamp.min(), last=table.timestamp.max())
    )
    first, last = row["first"][0].as_py(), row["last"][0].as_py()
    if first is None:
        raise InvestigationError("the lake is empty: nothing to investigate")
    return first.astimezone(UTC), last.astimezone(UTC) + timedelta(microseconds=1)


def lake_days(lake_dir: Path) -> list[date]:
    """The days the lake has partitions for (from the folder names, no scan)."""
    root = events_dir(lake_dir)
    days = []
    for folder in root.glob("date=*") if root.exists() else []:
        try:
            days.append(date.fromisoformat(folder.name[len("date=") :]))
        except ValueError:
            continue
    return sorted(days)


def focus_lake(
    backend: BaseBackend,
    lake_dir: Path,
    first: date,
    last: date,
    events: Collection[str] | None = None,
) -> int:
    """Point the backend's ``events`` at the days ``[first, last]``, the hot part in memory.

    An investigation reads the investigated metric's events a dozen times; materialising
    them once in DuckDB (columnar, compressed) makes every later query a scan of memory
    instead of hundreds of Parquet files. ``events`` names those hot events (None: all of
    them). The other events of the same days stay Parquet behind the same view (``UNION
    ALL BY NAME``), read only by the queries that need them and only in the columns they
    use: loading every column of every event costs more than all of those queries.
    Returns the number of files materialised (the view is left as it was when the days
    have no files, or on an engine other than DuckDB).
    """
    if backend.name != "duckdb":
        return 0
    root = events_dir(lake_dir)
    hot: list[Path] = []
    cold: list[Path] = []
    for day in lake_days(lake_dir):
        if not first <= day <= last:
            continue
        for folder in sorted((root / f"date={day.isoformat()}").glob("event=*")):
            name = unquote(folder.name[len("event=") :])
            files = sorted(folder.glob("*.parquet"))
            (hot if events is None or name in events else cold).extend(files)
    if not hot and not cold:
        return 0
    # Every query binds the view, reading the cold files' footers (``union_by_name``):
    # cached, a bind costs about half the CPU and less I/O wait (files are immutable).
    backend.raw_sql("SET parquet_metadata_cache = true")  # type: ignore[attr-defined]
    parts = []
    if hot:
        backend.raw_sql(  # type: ignore[attr-defined]
            f"CREATE OR REPLACE TEMP TABLE rca_events AS SELECT * FROM {_parquet_scan(hot)}"
        )
        parts.append("SELECT * FROM rca_events")
    if cold:
        parts.append(f"SELECT * FROM {_parquet_scan(cold)}")
    view = " UNION ALL BY NAME ".join(parts)
    backend.raw_sql(f"CREATE OR REPLACE TEMP VIEW events AS {view}")  # type: ignore[attr-defined]
    return len(hot)


def _parquet_scan(files: Sequence[Path]) -> str:
    listing = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    return f"read_parquet([{listing}], union_by_name=true, hive_partitioning=false)"


@dataclass(frozen=True)
class LeafTable:
    """A metric's numerator and denominator per leaf (dimension-value combination)."""

    dimensions: tuple[str, ...]
    columns: dict[str, np.ndarray]  # short dimension name → value per leaf (object array)
    numerator: np.ndarray
    denominator: np.ndarray

    @property
    def size(self) -> int:
        return int(self.numerator.size)

    def keys(self) -> list[tuple[str, ...]]:
        names = list(self.columns)
        return (
            list(zip(*(self.columns[n] for n in names), strict=True)) if names else [()] * self.size
        )

    def aligned(self, other: LeafTable) -> tuple[LeafTable, LeafTable]:
        """Both tables over the union of their leaves (missing leaves count zero)."""
        mine, theirs = self.keys(), other.keys()
        union = sorted(set(mine) | set(theirs))
        index = {k: i for i, k in enumerate(union)}

        def spread(table: LeafTable, keys: list[tuple[str, ...]]) -> LeafTable:
            num, den = np.zeros(len(union)), np.zeros(len(union))
            where = np.fromiter((index[k] for k in keys), dtype=np.int64, count=len(keys))
            np.add.at(num, where, table.numerator)
            np.add.at(den, where, table.denominator)
            cols = {
                name: np.array([k[j] for k in union], dtype=object)
                for j, name in enumerate(self.columns)
            }
            return LeafTable(self.dimensions, cols, num, den)

        return spread(self, mine), spread(other, theirs)

    def plus(self, other: LeafTable, *, add_denominators: bool = True) -> LeafTable:
        """Leaf-wise sum of two tables over disjoint time pieces (the union of their leaves).

        For counts the denominator is the number of windows of the group, the same for
        every piece, so it is kept rather than added (``add_denominators=False``).
        """
        mine, theirs = self.aligned(other)
        if add_denominators:
            den = mine.denominator + theirs.denominator
        else:
            den = np.maximum(mine.denominator, theirs.denominator)
        return LeafTable(self.dimensions, mine.columns, mine.numerator + theirs.numerator, den)

    def marginal(self, name: str) -> dict[str, tuple[float, float]]:
        """Numerator and denominator per value of one dimension."""
        out: dict[str, tuple[float, float]] = {}
        values, inverse = np.unique(self.columns[name].astype(str), return_inverse=True)
        num = np.bincount(inverse, weights=self.numerator, minlength=len(values))
        den = np.bincount(inverse, weights=self.denominator, minlength=len(values))
        for i, value in enumerate(values):
            out[str(value)] = (float(num[i]), float(den[i]))
        return out

    def select(self, segment: Mapping[str, str]) -> np.ndarray:
        mask = np.ones(self.size, dtype=bool)
        for key, value in segment.items():
            mask &= self.columns[dimension_label(key)] == value
        return mask


def _column(values: list[object]) -> np.ndarray:
    return np.array([NONE if v is None else str(v) for v in values], dtype=object)


#: Name of the derived column labelling which window an event belongs to.
WINDOW_COLUMN = "rca_window"


def windowed_events(
    backend: BaseBackend, windows: Mapping[str, Sequence[Window]], where: Sequence[Predicate] = ()
) -> ir.Table:
    """The events inside any of ``windows``, labelled by window name (one scan for all)."""
    spans = _spans(windows)
    table = _filtered_events(backend, where)
    label = ibis.cases(
        *[((table.timestamp >= w.start) & (table.timestamp < w.end), name) for name, w in spans],
        else_=None,
    )
    return table.mutate(**{WINDOW_COLUMN: label}).filter(ibis._[WINDOW_COLUMN].notnull())


def _spans(windows: Mapping[str, Sequence[Window]]) -> list[tuple[str, Window]]:
    spans = [(name, w) for name, group in windows.items() for w in group]
    if not spans:
        raise InvestigationError("no window to read")
    return spans


def _filtered_events(backend: BaseBackend, where: Sequence[Predicate]) -> ir.Table:
    table = events_table(backend)
    condition = _and([predicate(table, p) for p in where])
    return table.filter(condition) if condition is not None else table


#: Prefix of the temp tables holding a set of windows; the SQL compiled by
#: :func:`fetch_windowed` names the canonical one, replaced by the actual one per run.
_WINDOWS_PREFIX = "rca_windows_"
_WINDOWS_CANONICAL = _WINDOWS_PREFIX + "any"
_WINDOWS_SCHEMA = sch.Schema(
    {
        WINDOW_COLUMN: "string",
        "rca_start": dt.Timestamp(timezone="UTC"),
        "rca_end": dt.Timestamp(timezone="UTC"),
    }
)
#: Compiled SQL and result schema per query key, per backend (see :func:`fetch_windowed`).
_COMPILED: weakref.WeakKeyDictionary[BaseBackend, dict[Hashable, tuple[str, sch.Schema]]] = (
    weakref.WeakKeyDictionary()
)


def fetch_windowed(
    backend: BaseBackend,
    windows: Mapping[str, Sequence[Window]],
    where: Sequence[Predicate],
    build: Callable[[ir.Table], ir.Table],
    key: Hashable,
) -> pa.Table:
    """``build(windowed_events(backend, windows, where))``, run; compiled once per ``key``.

    The localization runs the same leaf and funnel queries for several sets of windows
    (the provisional pieces, the final window, the buckets of the funnel series); building
    and compiling the 10-step funnel query costs about 0.3 CPU-s. On DuckDB the windows
    are a small temp table joined on the timestamp (each event of disjoint windows once,
    labelled as :func:`windowed_events` labels it), so the expression, built against a
    canonical table name, does not depend on the windows: its SQL is kept per ``key``
    (which must name everything ``build`` reads besides the events: the metric, the
    dimensions), ``where`` and the events table, and the actual table's name is put in
    for each run. Elsewhere, or for overlapping windows, the query is built and run as is.
    """
    spans = _spans(windows)
    ordered = sorted((w for _, w in spans), key=lambda w: w.start)
    disjoint = all(a.end <= b.start for a, b in itertools.pairwise(ordered))
    if backend.name != "duckdb" or not disjoint:
        return backend.to_pyarrow(build(windowed_events(backend, windows, where)))
    events = _filtered_events(backend, where)
    full_key = (key, tuple(p.model_dump_json() for p in where), events.op())
    compiled = _COMPILED.setdefault(backend, {})
    if full_key not in compiled:
        frame = ops.DatabaseTable(_WINDOWS_CANONICAL, _WINDOWS_SCHEMA, backend).to_expr()
        joined = events.join(
            frame, [events.timestamp >= frame.rca_start, events.timestamp < frame.rca_end]
        ).drop("rca_start", "rca_end")
        expr = build(joined)
        backend._run_pre_execute_hooks(expr)  # type: ignore[attr-defined]  # as to_pyarrow
        compiled[full_key] = (backend.compile(expr), expr.schema())
    sql, schema = compiled[full_key]
    name = _windows_table(backend, spans)
    table = backend.con.sql(  # type: ignore[attr-defined]
        sql.replace(f'"{_WINDOWS_CANONICAL}"', f'"{name}"')
    ).to_arrow_table()
    from ibis.backends.duckdb.converter import DuckDBPyArrowData

    return DuckDBPyArrowData.convert_table(table, schema)


def _windows_table(backend: BaseBackend, spans: Sequence[tuple[str, Window]]) -> str:
    """A temp table of (name, start, end), one per distinct set of windows (named by it)."""
    rows = ", ".join(
        f"({_sql_text(name)}, TIMESTAMPTZ '{w.start.isoformat()}', "
        f"TIMESTAMPTZ '{w.end.isoformat()}')"
        for name, w in spans
    )
    name = _WINDOWS_PREFIX + hashlib.sha1(rows.encode()).hexdigest()[:16]
    backend.raw_sql(  # type: ignore[attr-defined]
        f"CREATE TEMP TABLE IF NOT EXISTS {name} AS "
        f"SELECT * FROM (VALUES {rows}) AS v({WINDOW_COLUMN}, rca_start, rca_end)"
    )
    return name


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def metric_leaves(
    backend: BaseBackend,
    metric: MetricBase,
    dims: Sequence[str],
    windows: Mapping[str, Sequence[Window]],
    where: Sequence[Predicate] = (),
) -> dict[str, LeafTable]:
    """Numerator/denominator of ``metric`` per leaf, summed over each named group of windows.

    For counts and sums the denominator is the number of windows of the group (so the
    baseline of several days divides to a per-window average).
    """
    if metric.type not in ADDITIVE_TYPES:
        raise InvestigationError(
            f"metric {metric.name!r} is a {metric.type}: localization needs an additive measure "
            f"({', '.join(ADDITIVE_TYPES)})"
        )
    arrow = fetch_windowed(
        backend,
        windows,
        where,
        lambda table: timeseries_expr(
            [metric], table, grain=None, dimensions=(WINDOW_COLUMN, *dims)
        ),
        ("leaves", metric.model_dump_json(), tuple(dims)),
    )
    labels = np.asarray(arrow[WINDOW_COLUMN].to_pylist(), dtype=object)
    cols = {dimension_label(d): _column(arrow[d].to_pylist()) for d in dims}
    num = np.nan_to_num(np.asarray(arrow[f"{metric.name}__numerator"].to_pylist(), dtype=float))
    den_raw = arrow[f"{metric.name}__denominator"].to_pylist()
    den = np.nan_to_num(np.asarray([np.nan if d is None else d for d in den_raw], dtype=float))
    out = {}
    for name, group in windows.items():
        mask = labels == name
        if metric.type in ("count", "sum", "distinct"):
            d = np.full(int(mask.sum()), float(len(group)))
        else:
            d = den[mask]
        out[name] = LeafTable(tuple(dims), {k: v[mask] for k, v in cols.items()}, num[mask], d)
    return out


@dataclass(frozen=True)
class FunnelCounts:
    """Groups entering each step of a funnel, per leaf: ``entered[leaf, step]``."""

    steps: tuple[str, ...]
    dimensions: tuple[str, ...]
    columns: dict[str, np.ndarray]
    entered: np.ndarray  # (leaves, steps)

    def total(self, mask: np.ndarray | None = None) -> np.ndarray:
        rows = self.entered if mask is None else self.entered[mask]
        return rows.sum(axis=0)

    def plus(self, other: FunnelCounts) -> FunnelCounts:
        """Leaf-wise sum of two funnel tables over disjoint time pieces."""
        names = list(self.columns)

        def keys(table: FunnelCounts) -> list[tuple[str, ...]]:
            return list(zip(*(table.columns[n] for n in names), strict=True)) if names else []

        mine, theirs = keys(self), keys(other)
        union = sorted(set(mine) | set(theirs))
        index = {k: i for i, k in enumerate(union)}
        entered = np.zeros((len(union), len(self.steps)))
        for table, table_keys in ((self, mine), (other, theirs)):
            where = np.fromiter(
                (index[k] for k in table_keys), dtype=np.int64, count=len(table_keys)
            )
            np.add.at(entered, where, table.entered)
        columns = {n: np.array([k[j] for k in union], dtype=object) for j, n in enumerate(names)}
        return FunnelCounts(self.steps, self.dimensions, columns, entered)

    def select(self, segment: Mapping[str, str]) -> np.ndarray:
        """Leaves inside ``segment`` (dimensions the funnel does not have are ignored)."""
        mask = np.ones(self.entered.shape[0], dtype=bool)
        for key, value in segment.items():
            name = dimension_label(key)
            if name in self.columns:
                mask &= self.columns[name] == value
        return mask


def funnel_counts(
    backend: BaseBackend,
    funnel: FunnelMetric,
    dims: Sequence[str],
    windows: Mapping[str, Sequence[Window]],
    where: Sequence[Predicate] = (),
) -> dict[str, FunnelCounts]:
    """Step entries of ``funnel`` per leaf of ``dims`` for each named group of windows."""
    steps = tuple(s.label for s in funnel.steps)
    arrow = fetch_windowed(
        backend,
        windows,
        where,
        lambda table: funnel_expr(funnel, table, grain=None, dimensions=(WINDOW_COLUMN, *dims)),
        ("funnel", funnel.model_dump_json(), tuple(dims)),
    )
    labels = np.asarray(arrow[WINDOW_COLUMN].to_pylist(), dtype=object)
    cols = {dimension_label(d): _column(arrow[d].to_pylist()) for d in dims}
    matrix = (
        np.column_stack(
            [np.asarray(arrow[f"reached_{i}"].to_pylist(), dtype=float) for i in range(len(steps))]
        )
        if arrow.num_rows
        else np.zeros((0, len(steps)))
    )
    out = {}
    for name in windows:
        mask = labels == name
        out[name] = FunnelCounts(
            steps, tuple(dims), {k: v[mask] for k, v in cols.items()}, matrix[mask]
        )
    return out


@dataclass(frozen=True)
class Series:
    """Numerator and denominator per time bucket (bucket starts, UTC)."""

    starts: tuple[datetime, ...]
    numerator: np.ndarray
    denominator: np.ndarray


def bucket_index(moments: Sequence[datetime], start: datetime, bucket: timedelta) -> np.ndarray:
    seconds = np.array([(m - start).total_seconds() for m in moments], dtype=float)
    return np.floor(seconds / bucket.total_seconds()).astype(np.int64)


def metric_series(
    backend: BaseBackend,
    metric: MetricBase,
    window: Window,
    where: Sequence[Predicate] = (),
    *,
    bucket: timedelta = BUCKET,
) -> Series:
    """The metric's numerator and denominator per ``bucket`` over ``window``."""
    query = Query(grain="minute", start=window.start, end=window.end, where=tuple(where))
    table = timeseries(backend, [metric], query)[metric.name].table
    count = int(np.ceil(window.duration / bucket))
    starts = tuple(window.start + i * bucket for i in range(count))
    num, den = np.zeros(count), np.zeros(count)
    if table.num_rows:
        index = bucket_index(
            [b.astimezone(UTC) for b in table["bucket"].to_pylist()], window.start, bucket
        )
        keep = (index >= 0) & (index < count)
        n = np.nan_to_num(np.asarray(table["numerator"].to_pylist(), dtype=float))
        d_raw = table["denominator"].to_pylist()
        d = np.nan_to_num(np.asarray([np.nan if v is None else v for v in d_raw], dtype=float))
        np.add.at(num, index[keep], n[keep])
        if metric.type in ("count", "sum", "distinct"):
            den[:] = 1.0
        else:
            np.add.at(den, index[keep], d[keep])
    elif metric.type in ("count", "sum", "distinct"):
        den[:] = 1.0
    return Series(starts, num, den)


def funnel_series(
    backend: BaseBackend,
    funnel: FunnelMetric,
    window: Window,
    where: Sequence[Predicate] = (),
    *,
    bucket: timedelta = BUCKET,
) -> np.ndarray:
    """Groups entering each step per bucket: array (buckets, steps).

    A group counts in the bucket of its first step-1 event. Unfiltered on a minute-aligned
    window (and in whole minutes of buckets), the same groups are read through the
    localization's funnel query with one window per bucket (:func:`funnel_counts`, whose
    SQL :func:`fetch_windowed` has compiled already) instead of compiling a per-minute series.
    """
    count = int(np.ceil(window.duration / bucket))
    aligned = window.start.second == window.start.microsecond == 0 and not bucket % MINUTE
    if not where and aligned and backend.name == "duckdb":
        pieces = {
            f"b{i}": (
                Window(window.start + i * bucket, min(window.start + (i + 1) * bucket, window.end)),
            )
            for i in range(count)
        }
        counts = funnel_counts(backend, funnel, investigation_dimensions(funnel), pieces)
        return np.array([counts[f"b{i}"].total() for i in range(count)], dtype=float).reshape(
            count, len(funnel.steps)
        )
    query = Query(grain="minute", start=window.start, end=window.end, where=tuple(where))
    table = timeseries(backend, [funnel], query)[funnel.name].table
    out = np.zeros((count, len(funnel.steps)))
    if table.num_rows:
        index = bucket_index(
            [b.astimezone(UTC) for b in table["bucket"].to_pylist()], window.start, bucket
        )
        step = np.asarray(table["step"].to_pylist(), dtype=np.int64) - 1
        entered = np.asarray(table["entered"].to_pylist(), dtype=float)
        keep = (index >= 0) & (index < count)
        np.add.at(out, (index[keep], step[keep]), entered[keep])
    return out
