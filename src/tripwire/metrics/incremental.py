"""Incremental experiment statistics: per-day partial aggregates per unit, merged.

A daily re-analysis should not rescan the whole lake. For one experiment and one set of
per-unit metrics (a :class:`~tripwire.metrics.unit_stats.StatsPlan`), the state under
``<data dir>/aggregates/<experiment>/`` holds

* **exposure partials**: per (unit, arm, day) the earliest exposure and its cohort values;
* **outcome partials**: per (unit, day, ``t0_used``) every component's contribution inside
  the unit's analysis window (``a_<c>``) and its raw day total for the pre-period
  (``r_<c>``, kept for days before the exposure day), where ``t0_used`` is the unit's first
  exposure as known when the events were aggregated (null: not exposed yet);
* **first exposures** per unit (``exposed-*.parquet``, with the unit's integer index
  :data:`IX`, assigned once) and **running totals** per exposed unit: ``a_<c>``/``p_<c>``
  through the last day seen, one dense ``int64`` column per file, row ``i`` = unit index
  ``i`` (``totals-*-<column>.npy``, :mod:`tripwire.metrics.dense_totals`), with each
  index's cohort cell (``cells-*.npy``), so the current look is one scan of units-sized
  columns (no units × days merge, no join);
* **the current look's moments** (``moments-*.json``): per cohort cell, the exact sums of
  products of the running totals that the statistics need (:func:`_update_moments`); a
  daily refresh updates them from the units it touched (their previous products out, new
  ones in), so the current look is a roll-up of a few hundred cells, without a query;
* **stored past looks**: the arm/cohort-level result of a look before the last day, kept
  until a refresh touches a day on or before it (late data, a moved exposure, a compaction);
* a manifest: the lake files already aggregated (path, size, mtime), the plan fingerprint
  and the part files.

A daily refresh (only new files) scans the new files, updates the first exposures of the
units they touch, re-aggregates what a moved exposure invalidates, and adds the touched
units' delta into the totals: only the columns the delta changes are rewritten (a NumPy
scatter by index); a changed or removed file recomputes the totals from all per-day
partials.

:func:`refresh` aggregates only lake files it has not seen. The merged result equals a
full recomputation (:func:`tripwire.metrics.unit_stats.unit_stats`) **exactly** because
every stored number is an integer (fixed-point sums, counts, 0/1 maxima) and the merge is a
sum or max, and because the few rows that later information can invalidate are recomputed:

* a stored row is valid iff ``t0_used`` equals the unit's current first exposure, or
  ``t0_used`` is null and the row's day is before the unit's exposure day; other rows
  (a late exposure moved ``t0`` earlier, or events of the exposure day were aggregated
  before the exposure arrived) are dropped and their (unit, day) re-aggregated from the
  already-seen lake files of that day;
* a lake file that changed or disappeared (compaction) makes its whole day dirty: all of
  that day's partials are dropped and the day's current files re-aggregated.

``distinct`` measures (distinct sessions per unit) cannot be split into daily partials
exactly (a session crosses midnight) and are rejected here; the full path computes them.

Cost of a daily refresh at the bench size (10M events, 2M users, 1M exposed; a new day of
0.65M events): ~2.2 CPU-s, of which ~1.2 the new day's outcome partials (DuckDB profile:
the hash join with the 1M exposed units ~35%, the hash GROUP BY of ~0.5M rows by unit
string ~30%). Days are taken from epoch microseconds
(:func:`~tripwire.metrics.unit_stats.micros_day`), not a calendar cast (-0.17 CPU-s). The
new part is computed once into a table of the in-memory database; its Parquet encoding
runs on a cursor in a background thread while the totals are updated from that table (alternated A/B at load ~8: 1.45 → 1.28
CPU-s, 2.9 → 2.6 s wall for the query, the write and the delta, against writing from the
query and reading the file back). Measured without gain (alternated A/B, load 2-8):
grouping by (unit, day) with ``t0`` aggregated; fetching the partials as Arrow and writing
them with PyArrow in a background thread; staging the scan in a temporary table (DuckDB
splits a Parquet scan by row group; +0.2 CPU-s, same wall); forcing the join to build on
the exposed units (+0.05 CPU-s); the current look's per-cell moments in NumPy instead of
DuckDB (faster alone, slower in the whole flow).

Eighth session: the changed total columns are rewritten on two threads
(:func:`tripwire.metrics.dense_totals.update`); the session does not preserve insertion
order (no query here needs it; the new part's materialization is cheaper); the moments
are kept in the state and updated by the touched units only (a bench day touches ~163k
of 1M units: one query over 326k rows, whose SQL is compiled once per process, instead
of the current look's query over every unit).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ibis.backends import BaseBackend

from tripwire.metrics import dense_totals as dense
from tripwire.metrics.compile import epoch_us, unit_key
from tripwire.metrics.definitions import MetricBase
from tripwire.metrics.exposures import (
    ARM,
    DEFAULT_SOURCE,
    TS,
    UNIT,
    ExposureSource,
    ExposureSummary,
    exposure_rows,
    first_exposures,
    summarize,
)
from tripwire.metrics.unit_stats import (
    CELL,
    CellCoding,
    StatsPlan,
    UnitStats,
    UnitStatsError,
    _aggregate,
    _derived_indicators,
    analysed_units,
    cell_coding,
    cohort_columns,
    collect,
    compute_from_units,
    contribution,
    day_index,
    event_scan,
    in_pre_period,
    in_window_micros,
    micros_day,
    moments_expr,
    offset_micros,
    plan_metrics,
    window_key,
)
from tripwire.store.engine import configure_duckdb, property_types
from tripwire.store.lake import ENVELOPE_FIELDS, _duck_type, events_dir

STATE_VERSION = 4
#: Column of the stored exposures and totals: the unit's integer index, assigned once when the
#: unit is first exposed (the current look joins totals and cohort cells on it, not on ids).
IX = "ix"
MANIFEST = "manifest.json"
_DATE_DIR = re.compile(r"date=(\d{4}-\d{2}-\d{2})")
_EPOCH = date(1970, 1, 1)
_UNORDERED = "SET preserve_insertion_order = false"
_DUCK_TYPES = {"double": "DOUBLE", "boolean": "BOOLEAN", "string": "VARCHAR"}


@dataclass(frozen=True)
class IncrementalSpec:
    """What the state aggregates: the experiment, its metrics, windows and cohorts."""

    experiment: str
    metrics: tuple[MetricBase, ...]
    dimensions: tuple[str, ...] = ()
    analysis_window: timedelta | None = None
    pre_period_days: int | None = None
    unit: str = "user"
    sources: tuple[ExposureSource, ...] = (DEFAULT_SOURCE,)
    max_cohort_values: int = 20

    @property
    def plan(self) -> StatsPlan:
        return plan_metrics(
            self.metrics,
            analysis_window=self.analysis_window,
            pre_period_days=self.pre_period_days,
            unit=self.unit,
        )

    @property
    def fingerprint(self) -> str:
        return json.dumps(
            {
                "version": STATE_VERSION,
                "experiment": self.experiment,
                "plan": self.plan.fingerprint,
                "dimensions": list(self.dimensions),
                "sources": [vars(s) for s in self.sources],
            },
            sort_keys=True,
        )


@dataclass(frozen=True)
class RefreshReport:
    """What one :func:`refresh` did (for logs and for tests of "scans only the new day")."""

    new_files: tuple[str, ...]
    dirty_days: tuple[str, ...]
    invalidated_pairs: int
    rescanned_files: tuple[str, ...]
    rebuilt: bool


def state_dir(data_dir: Path, experiment: str) -> Path:
    """``<data dir>/aggregates/<experiment>`` (the experiment name must be path-safe)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", experiment):
        raise UnitStatsError(f"experiment name {experiment!r} is not usable as a folder name")
    return Path(data_dir) / "aggregates" / experiment


def _day_of(rel: str) -> int:
    match = _DATE_DIR.search(rel)
    if not match:
        raise UnitStatsError(f"lake file {rel} is not under a date=YYYY-MM-DD partition")
    return (date.fromisoformat(match.group(1)) - _EPOCH).days


def _lake_files(lake_dir: Path) -> dict[str, list[int]]:
    root = events_dir(lake_dir)
    if not root.exists():
        return {}
    out: dict[str, list[int]] = {}
    for path in sorted(root.glob("date=*/event=*/*.parquet")):
        stat = path.stat()
        out[str(path.relative_to(root))] = [stat.st_size, stat.st_mtime_ns]
    return out


def _sql_list(paths: Sequence[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


class _Session:
    """A DuckDB (Ibis) connection with helpers to read lake subsets and state parts."""

    def __init__(self, lake_dir: Path, threads: int | None) -> None:
        self.lake_dir = Path(lake_dir)
        self.con: BaseBackend = ibis.duckdb.connect(**({"threads": threads} if threads else {}))
        configure_duckdb(self.con)
        # no query here relies on the order of unordered rows (partials are summed, totals
        # scattered by index, new indexes need only be unique), and keeping it costs the
        # new part's materialization ~0.2 CPU-s
        self.sql(_UNORDERED)
        self._n = 0

    def _name(self) -> str:
        self._n += 1
        return f"__tw_{self._n}"

    def lake_subset(self, rels: Sequence[str]) -> ir.Table:
        """An events table over some lake files, with every lake column (missing → null)."""
        name = self._name()
        columns = {f.name: _duck_type(f.type) for f in ENVELOPE_FIELDS}
        columns |= {c: _DUCK_TYPES[k] for c, k in property_types(self.lake_dir).items()}
        if not rels:
            select = ", ".join(f'CAST(NULL AS {t}) AS "{c}"' for c, t in columns.items())
            self.con.raw_sql(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT {select} WHERE false")  # type: ignore[attr-defined]
            return self.con.table(name)
        root = events_dir(self.lake_dir)
        source = f"read_parquet({_sql_list([root / r for r in rels])}, union_by_name=true, hive_partitioning=false)"
        self.con.raw_sql(f"CREATE OR REPLACE TEMP VIEW {name}_raw AS SELECT * FROM {source}")  # type: ignore[attr-defined]
        present = set(self.con.table(f"{name}_raw").columns)
        select = ", ".join(
            f'"{c}"' if c in present else f'CAST(NULL AS {t}) AS "{c}"' for c, t in columns.items()
        )
        self.con.raw_sql(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT {select} FROM {name}_raw")  # type: ignore[attr-defined]
        return self.con.table(name)

    def parts(self, paths: Sequence[Path], schema: ibis.Schema) -> ir.Table:
        if not paths:
            name = self._name()
            select = ", ".join(f'CAST(NULL AS {_ibis_duck(t)}) AS "{c}"' for c, t in schema.items())
            self.con.raw_sql(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT {select} WHERE false")  # type: ignore[attr-defined]
            return self.con.table(name)
        return self.con.read_parquet([str(p) for p in paths])  # type: ignore[attr-defined,no-any-return]

    def sql(self, statement: str) -> None:
        self.con.raw_sql(statement)  # type: ignore[attr-defined]

    def query(self, statement: str) -> list[tuple[Any, ...]]:
        return self.con.raw_sql(statement).fetchall()  # type: ignore[attr-defined,no-any-return]

    def arrow(self, table: pa.Table) -> ir.Table:
        """An in-memory Arrow table as a table of this connection (scanned, not copied)."""
        name = self._name()
        self.con.con.register(name, table)  # type: ignore[attr-defined]
        return self.con.table(name)

    def materialize(self, expr: ir.Table) -> ir.Table:
        name = self._name()
        return self.con.create_table(name, expr, temp=True)  # type: ignore[attr-defined,no-any-return]

    def stored(self, expr: ir.Table, schema: ibis.Schema) -> ir.Table:
        """``expr`` computed once into a table of this in-memory database, its columns cast
        to ``schema`` (as :meth:`write` does). Not a temporary table: those are private to
        one connection, and :meth:`write_behind` copies it from another (a cursor)."""
        name = self._name()
        self.sql(f"CREATE TABLE {name} AS {_cast_to(expr, schema)}")
        return self.con.table(name)

    def write_behind(self, table: ir.Table, path: Path) -> Future[None]:
        """Start writing the stored ``table`` (:meth:`stored`) to ``path`` (atomically, as
        :meth:`write`) on a DuckDB cursor in a background thread, so that the Parquet
        encoding overlaps the work that follows; the caller waits for the returned future
        before it acknowledges (the manifest refers to ``path`` only after it exists)."""
        tmp = path.with_suffix(".tmp")
        target = str(tmp).replace("'", "''")
        statement = (
            f"COPY \"{table.get_name()}\" TO '{target}' (FORMAT parquet, COMPRESSION snappy)"
        )
        cursor = self.con.con.cursor()  # type: ignore[attr-defined]
        cursor.execute(_UNORDERED)  # a cursor is a new connection: its own settings

        def run() -> None:
            try:
                cursor.execute(statement)
            finally:
                cursor.close()
            os.replace(tmp, path)

        pool = ThreadPoolExecutor(max_workers=1)
        try:
            return pool.submit(run)
        finally:
            pool.shutdown(wait=False)

    def write(self, expr: ir.Table, path: Path, schema: ibis.Schema | None = None) -> None:
        """Write ``expr`` to ``path`` (atomically), its columns cast to ``schema`` when given
        (DuckDB sums BIGINT into HUGEINT, which Parquet would store as DOUBLE; the cast is
        exact or an error). Snappy, not zstd: a daily refresh writes the new day's partials,
        and zstd cost ~1.5× the CPU for ~1.4× smaller files."""
        tmp = path.with_suffix(".tmp")
        if schema is None:
            self.con.to_parquet(expr, tmp, compression="snappy")  # type: ignore[attr-defined]
        else:
            target = str(tmp).replace("'", "''")
            self.sql(
                f"COPY ({_cast_to(expr, schema)}) TO '{target}' (FORMAT parquet, COMPRESSION snappy)"
            )
        os.replace(tmp, path)


def _cast_to(expr: ir.Table, schema: ibis.Schema) -> str:
    """DuckDB SQL selecting ``expr``'s columns cast to ``schema`` (exact or an error)."""
    select = ", ".join(f'CAST("{c}" AS {_ibis_duck(t)}) AS "{c}"' for c, t in schema.items())
    return f"SELECT {select} FROM ({ibis.to_sql(expr, dialect='duckdb')})"


def _ibis_duck(dtype: Any) -> str:
    if dtype.is_timestamp():
        return "TIMESTAMPTZ"
    if dtype.is_integer():
        return "BIGINT"
    return "VARCHAR"


def _exposure_schema(spec: IncrementalSpec) -> ibis.Schema:
    fields = {UNIT: "string", ARM: "string", "day": "int64", TS: "timestamp('UTC')"}
    fields |= {f"d{i}": "string" for i in range(len(spec.dimensions))}
    return ibis.schema(fields)


def _partial_schema(plan: StatsPlan) -> ibis.Schema:
    fields: dict[str, str] = {UNIT: "string", "day": "int64", "t0_used": "timestamp('UTC')"}
    fields |= {f"a_{c.key}": "int64" for c in plan.components}
    fields |= {f"r_{c.key}": "int64" for c in plan.components}
    # the unit's index when the row was aggregated (null: not exposed then; an exposed
    # unit's index never changes, so a fresh row's is current)
    return ibis.schema(fields | {IX: "int64"})


def exposure_partials(events: ir.Table, spec: IncrementalSpec) -> ir.Table:
    """Per (unit, arm, day): earliest exposure that day and its (smallest) cohort values."""
    rows = exposure_rows(events, spec.experiment, spec.sources, spec.dimensions)
    rows = rows.mutate(day=day_index(rows[TS]))
    dims = [f"d{i}" for i in range(len(spec.dimensions))]
    firsts = rows.group_by([UNIT, ARM, "day"]).aggregate(__t0=rows[TS].min())
    if not dims:
        return firsts.rename({TS: "__t0"})
    joined = rows.inner_join(
        firsts,
        [
            rows[UNIT] == firsts[UNIT],
            rows[ARM] == firsts[ARM],
            rows["day"] == firsts["day"],
            rows[TS] == firsts["__t0"],
        ],
    )
    return joined.group_by([UNIT, ARM, "day"]).aggregate(
        **{TS: joined["__t0"].min()}, **{d: joined[d].min() for d in dims}
    )


def outcome_partials(events: ir.Table, exposed: ir.Table, plan: StatsPlan) -> ir.Table:
    """Per (unit, day, ``t0_used``): ``a_<c>`` inside the analysis window, ``r_<c>`` raw day
    totals for days before the exposure day (or every day while the unit is unexposed), and
    :data:`IX`: the unit's index in ``exposed`` (null when unexposed).

    Cost is the hash aggregation (about one group per event in a daily refresh), which
    grows with the number of aggregates; so:

    * each event's contribution is computed in the scan, before the join with the exposures;
    * an indicator whose count is also aggregated (same filters and window) is derived
      from the count after grouping (``count > 0``), as in the full path;
    * when no window starts before the exposure (every ``window_start >= 0``), ``a_<c>`` and
      ``r_<c>`` are never both non-zero in one group: a group's day is either before the
      exposure day (only ``r``: its events precede ``t0``) or not (only ``a``). One
      aggregate per component then serves both, split after grouping by the group's own
      keys; and events at or after ``t0`` plus the longest window end are dropped before
      grouping (they count in no window and no pre-period now, and, since a first exposure
      only moves earlier, never will).
    """
    scan = event_scan(events, plan)
    derived = _derived_indicators(plan)
    aggregated = [c for c in plan.components if c.key not in derived]
    scan = scan.select(
        __unit=unit_key(scan, plan.unit).cast("string"),
        __tsu=epoch_us(scan.timestamp),
        **{f"__v_{c.key}": contribution(scan, c) for c in aggregated},
    )
    scan = scan.filter(scan["__unit"].notnull())
    known = exposed.select(__u=exposed[UNIT], __t0=exposed.t0, __ix=exposed[IX])
    joined = scan.left_join(known, scan["__unit"] == known["__u"])
    exclusive = all(c.window_start >= timedelta(0) for c in plan.components)
    ends = [c.window_end for c in plan.components]
    # windows compare epoch microseconds: ``t0 + INTERVAL`` on a TIMESTAMPTZ is calendar
    # arithmetic in DuckDB (ICU, ~0.2 us a row, 20x an integer add); the connection's time
    # zone is UTC, where both are the same instant (:func:`tripwire.metrics.unit_stats.offset_micros`)
    joined = joined.mutate(__t0u=epoch_us(joined["__t0"]))
    if exclusive and all(end is not None for end in ends):
        last = max(end for end in ends if end is not None)
        t0 = joined["__t0"]
        joined = joined.filter(
            t0.isnull() | (joined["__tsu"] < joined["__t0u"] + offset_micros(last))
        )
    t0 = joined["__t0"]
    day = micros_day(joined["__tsu"])
    before = t0.isnull() | (day < micros_day(joined["__t0u"]))
    flags: dict[str, ir.BooleanValue] = {}
    for component in aggregated:
        flag = f"__w_{window_key(component)}"
        if flag not in flags:
            inside = in_window_micros(joined["__tsu"], joined["__t0u"], component)
            flags[flag] = (t0.notnull() & inside).fill_null(False)
    rows = joined.select(
        __unit=joined["__unit"],
        __day=day,
        __t0=t0,
        __ix=joined["__ix"],
        __b=before,
        **flags,
        **{f"__v_{c.key}": joined[f"__v_{c.key}"] for c in aggregated},
    )
    aggregates: dict[str, ir.Scalar] = {}
    for component in aggregated:
        key, value = component.key, rows[f"__v_{component.key}"]
        window = rows[f"__w_{window_key(component)}"]
        if exclusive:
            aggregates[f"__x_{key}"] = _aggregate(
                ibis.ifelse(window | rows["__b"], value, 0), component.mode
            )
        else:
            aggregates[f"a_{key}"] = _aggregate(ibis.ifelse(window, value, 0), component.mode)
            aggregates[f"r_{key}"] = _aggregate(ibis.ifelse(rows["__b"], value, 0), component.mode)
    grouped = rows.group_by(
        **{UNIT: rows["__unit"], "day": rows["__day"], "t0_used": rows["__t0"]}
    ).aggregate(__ix=rows["__ix"].max(), **aggregates)
    columns: dict[str, ir.Value] = {}
    if exclusive:
        t0_used = grouped.t0_used
        group_before = t0_used.isnull() | (grouped.day < day_index(t0_used))
        for component in aggregated:
            total = grouped[f"__x_{component.key}"]
            columns[f"a_{component.key}"] = ibis.ifelse(group_before, 0, total).cast("int64")
            columns[f"r_{component.key}"] = ibis.ifelse(group_before, total, 0).cast("int64")
    else:
        columns |= {f"{p}_{c.key}": grouped[f"{p}_{c.key}"] for c in aggregated for p in ("a", "r")}
    for key, count in derived.items():
        for prefix in ("a", "r"):
            columns[f"{prefix}_{key}"] = ibis.ifelse(columns[f"{prefix}_{count}"] > 0, 1, 0).cast(
                "int64"
            )
    out = grouped.select(UNIT, "day", "t0_used", **columns, **{IX: grouped["__ix"]})
    return out.select(*_partial_schema(plan).names)


def _valid(partials: ir.Table, exposed: ir.Table) -> ir.Table:
    """``partials`` with a boolean ``__valid`` against the current first exposures."""
    known = exposed.select(__u=exposed[UNIT], __t0=exposed.t0)
    joined = partials.left_join(known, partials[UNIT] == known["__u"])
    t0_used, t0 = joined["t0_used"], joined["__t0"]
    same = t0_used.notnull() & t0.notnull() & (t0_used == t0)
    unexposed_before = t0_used.isnull() & (t0.isnull() | (joined["day"] < day_index(t0)))
    return joined.mutate(__valid=(same | unexposed_before).fill_null(False))


def _row_contributions(
    rows: ir.Table, t0: ir.TimestampValue, ix: ir.IntegerValue, plan: StatsPlan
) -> ir.Table:
    """Per partial row of a unit first exposed at ``t0`` with index ``ix``: its
    contribution to the unit's running totals, ``a_<c>`` and ``p_<c>`` (the raw day total
    when the row's day is in the pre-period)."""
    columns: dict[str, ir.Value] = {UNIT: rows[UNIT], IX: ix}
    for component in plan.components:
        columns[f"a_{component.key}"] = rows[f"a_{component.key}"]
        if plan.pre_period_days:
            pre = in_pre_period(rows["day"], day_index(t0), plan.pre_period_days)
            columns[f"p_{component.key}"] = ibis.ifelse(pre, rows[f"r_{component.key}"], 0)
    return rows.select(**columns)


def _unit_contributions(rows: ir.Table, exposed: ir.Table, plan: StatsPlan) -> ir.Table:
    """:func:`_row_contributions` of the rows of exposed units (joined to their ``t0``)."""
    known = exposed.select(__u=exposed[UNIT], __t0=exposed.t0, __ix=exposed[IX])
    joined = rows.drop(*(c for c in (IX,) if c in rows.columns))
    joined = joined.inner_join(known, joined[UNIT] == known["__u"])
    return _row_contributions(joined, joined["__t0"], joined["__ix"], plan)


def _fold(rows: ir.Table, plan: StatsPlan) -> ir.Table:
    """Per unit (and its index): the merge (sum, or max for ``any``) of contribution rows."""
    aggregates: dict[str, ir.Scalar] = {}
    for component in plan.components:
        prefixes = ("a", "p") if plan.pre_period_days else ("a",)
        for prefix in prefixes:
            name = f"{prefix}_{component.key}"
            if component.mode == "any":
                aggregates[name] = _aggregate(rows[name], component.mode)
            else:
                # DuckDB sums BIGINT into HUGEINT and Ibis drops a cast to the type it
                # already infers (int64): go through DECIMAL(38, 0) so the stored totals
                # are BIGINT (exact; an overflow is an error, not a rounding)
                total = rows[name].sum().fill_null(0)
                aggregates[name] = total.cast("decimal(38, 0)").cast("int64")
    return rows.group_by(UNIT, IX).aggregate(**aggregates)


def _merge_components(partials: ir.Table, units: ir.Table, plan: StatsPlan) -> ir.Table:
    """Per unit of ``units``: ``a_<c>`` and ``p_<c>`` merged from the stored partials."""
    return _fold(_unit_contributions(partials, units, plan), plan)


def _totals_schema(plan: StatsPlan) -> ibis.Schema:
    fields: dict[str, str] = {UNIT: "string", IX: "int64"}
    fields |= {f"a_{c.key}": "int64" for c in plan.components}
    if plan.pre_period_days:
        fields |= {f"p_{c.key}": "int64" for c in plan.components}
    return ibis.schema(fields)


def _exposed_schema(spec: IncrementalSpec) -> ibis.Schema:
    fields = {UNIT: "string", "arm": "string", "t0": "timestamp('UTC')", "n_arms": "int64"}
    fields |= {f"d{i}": "string" for i in range(len(spec.dimensions))}
    return ibis.schema(fields | {IX: "int64"})


def _index_rows(exposed: ir.Table) -> int:
    """Rows of the dense per-index columns: the largest unit index + 1 (0: no units)."""
    top = exposed[IX].max().to_pyarrow().as_py()
    return 0 if top is None else int(top) + 1


class IncrementalStats:
    """Per-day partial aggregates of one experiment's per-unit statistics, kept on disk.

    >>> # stats = IncrementalStats(ws.data_dir, ws.lake_dir, spec); stats.refresh(); stats.result()
    """

    def __init__(
        self, data_dir: Path, lake_dir: Path, spec: IncrementalSpec, *, threads: int | None = None
    ) -> None:
        self.spec = spec
        self.plan = spec.plan
        for component in self.plan.components:
            if not component.mergeable:
                raise UnitStatsError(
                    f"incremental statistics cannot merge the distinct measure on "
                    f"{component.value!r} across days exactly; use a count of a session-start "
                    "event, or compute this experiment with unit_stats (full scan)"
                )
        self.dir = state_dir(data_dir, spec.experiment)
        self.lake_dir = Path(lake_dir)
        self.threads = threads

    # ------------------------------------------------------------------ state files
    def _manifest(self) -> dict[str, Any] | None:
        path = self.dir / MANIFEST
        if not path.exists():
            return None
        manifest: dict[str, Any] = json.loads(path.read_text())
        if manifest.get("fingerprint") != self.spec.fingerprint:
            return None  # the definitions changed: rebuild from scratch
        return manifest

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        tmp = self.dir / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        os.replace(tmp, self.dir / MANIFEST)
        keep = set(manifest["exposure_parts"]) | set(manifest["partial_parts"]) | {MANIFEST}
        keep |= {manifest["exposed"]} if manifest.get("exposed") else set()
        keep |= dense.files(manifest.get("totals"))
        keep |= {manifest["exposures"]["cells"]} if manifest.get("exposures") else set()
        keep |= {manifest["moments"]} if manifest.get("moments") else set()
        keep |= {look["table"] for look in manifest.get("looks", {}).values()}
        for path in self.dir.iterdir():
            if path.name not in keep:
                path.unlink() if path.is_file() else shutil.rmtree(path)

    # ------------------------------------------------------------------ refresh
    def refresh(self) -> RefreshReport:
        """Aggregate the lake files not seen yet (and whatever they invalidate).

        Common case (only new files, no changed file): the new files' exposure partials
        update the first exposures of the units they touch; units whose first exposure is
        new or moved get their running totals recomputed from their per-day partials (after
        re-aggregating the (unit, day) pairs the move invalidated); every other unit's
        totals are its stored totals merged with the new files' partials. A changed or
        removed file (dirty day) or a state without totals recomputes the totals from all
        per-day partials.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        manifest = self._manifest()
        rebuilt = manifest is None
        if manifest is None:
            manifest = {"files": {}, "exposure_parts": [], "partial_parts": []}
        seen: dict[str, list[int]] = manifest["files"]
        current = _lake_files(self.lake_dir)
        new = [r for r in current if r not in seen]
        changed = [r for r in seen if current.get(r) != seen[r]]
        dirty = sorted({_day_of(r) for r in changed})
        dirty_files = [r for r in current if _day_of(r) in dirty and r not in new]
        if not rebuilt and not new and not dirty and not changed:
            return RefreshReport((), (), 0, (), rebuilt=False)
        session = _Session(self.lake_dir, self.threads)
        plan, spec = self.plan, self.spec
        token = uuid.uuid4().hex[:12]
        running = (
            not dirty and dense.is_entry(manifest.get("totals")) and bool(manifest.get("exposed"))
        )
        exposed_names = [n for n in _exposed_schema(spec).names if n != IX]

        # 1. exposures: stored partials of clean days + partials of new and dirty files
        old_exp = session.parts(
            [self.dir / p for p in manifest["exposure_parts"]], _exposure_schema(spec)
        )
        old_exp = old_exp.filter(~old_exp.day.isin(dirty)) if dirty else old_exp
        fresh_events = session.lake_subset(new + dirty_files)
        fresh_exp = session.materialize(exposure_partials(fresh_events, spec))
        fresh_exp = fresh_exp.select(*old_exp.columns)
        exposed_file = f"exposed-{token}.parquet"
        moved: ir.Table | None = None  # units whose first exposure is new or moved
        n_moved = 0
        if running:
            exposure_parts = list(manifest["exposure_parts"])
            old_exposed = session.parts([self.dir / manifest["exposed"]], _exposed_schema(spec))
            touched = session.materialize(fresh_exp.select(__tu=fresh_exp[UNIT]).distinct())
            if int(touched.count().to_pyarrow().as_py()) == 0:
                exposed, exposed_file = old_exposed, manifest["exposed"]
            else:
                exposure_parts.append(f"exposures-{token}.parquet")
                session.write(fresh_exp, self.dir / exposure_parts[-1])
                mine = old_exp.semi_join(touched, old_exp[UNIT] == touched["__tu"])
                rows_t = ibis.union(mine, fresh_exp, distinct=False)
                # a touched unit keeps its index; a newly exposed one gets a new one
                firsts = first_exposures(rows_t, len(spec.dimensions)).select(*exposed_names)
                prior = old_exposed.select(__pu=old_exposed[UNIT], __pix=old_exposed[IX])
                base = old_exposed[IX].max().fill_null(-1) + 1
                firsts = firsts.left_join(prior, firsts[UNIT] == prior["__pu"])
                firsts = firsts.mutate(__rn=ibis.row_number())
                exposed_t = session.materialize(
                    firsts.select(
                        *exposed_names,
                        **{IX: firsts["__pix"].fill_null(base.as_scalar() + firsts["__rn"])},
                    )
                )
                others = old_exposed.anti_join(touched, old_exposed[UNIT] == touched["__tu"])
                exposed = session.materialize(
                    ibis.union(others.select(*exposed_names, IX), exposed_t, distinct=False)
                )
                before = old_exposed.select(__ou=old_exposed[UNIT], __ot0=old_exposed.t0)
                moved = session.materialize(
                    exposed_t.anti_join(
                        before,
                        [exposed_t[UNIT] == before["__ou"], exposed_t.t0 == before["__ot0"]],
                    ).select(UNIT)
                )
                n_moved = int(moved.count().to_pyarrow().as_py())
        else:
            exp_rows = session.materialize(ibis.union(old_exp, fresh_exp, distinct=False))
            firsts = first_exposures(exp_rows, len(spec.dimensions)).select(*exposed_names)
            exposed = session.materialize(firsts.mutate(**{IX: ibis.row_number()}))
            exposure_parts = [f"exposures-{token}.parquet"]
            session.write(exp_rows, self.dir / exposure_parts[0])

        # 2. stored outcome partials: drop dirty days, find rows the exposures invalidate
        old = session.parts(
            [self.dir / p for p in manifest["partial_parts"]], _partial_schema(plan)
        )
        old = old.filter(~old.day.isin(dirty)) if dirty else old
        # Every stored row was valid after the last refresh, and without dirty days exposures
        # are only added: only units whose first exposure is new or moved can have invalid
        # rows, so only their rows need checking (and only the keys, not the components).
        invalid: ir.Table | None = None
        invalid_days: list[int] = []
        n_invalid = 0
        if not running or n_moved:
            keys = old.select(UNIT, "day", "t0_used")
            if running:
                assert moved is not None
                keys = keys.semi_join(moved, keys[UNIT] == moved[UNIT])
            elif not dirty:
                units_t = fresh_exp.select(__tu=fresh_exp[UNIT]).distinct()
                keys = keys.semi_join(units_t, keys[UNIT] == units_t["__tu"])
            checked = session.materialize(_valid(keys, exposed))
            invalid = session.materialize(
                checked.filter(~checked["__valid"]).select(UNIT, "day").distinct()
            )
            invalid_days = sorted(
                int(d) for d in invalid.select("day").distinct().to_pyarrow()["day"].to_pylist()
            )
            n_invalid = int(invalid.count().to_pyarrow().as_py())

        # 3. aggregate new/dirty files fully and re-aggregate invalidated (unit, day) pairs
        rescan = [
            r for r in seen if r in current and _day_of(r) in invalid_days and r not in dirty_files
        ]
        fresh = outcome_partials(fresh_events, exposed, plan)
        if rescan:
            assert invalid is not None
            old_events = session.lake_subset(rescan)
            pairs = invalid.select(__iu=invalid[UNIT], __iday=invalid.day)
            keyed = old_events.mutate(
                __k=unit_key(old_events, plan.unit).cast("string"),
                __d=day_index(old_events.timestamp),
            )
            redo = keyed.semi_join(
                pairs, [keyed["__k"] == pairs["__iu"], keyed["__d"] == pairs["__iday"]]
            ).drop("__k", "__d")
            fresh = ibis.union(fresh, outcome_partials(redo, exposed, plan), distinct=False)

        # 4. write: the new part (computed once into a table, encoded to Parquet in the
        # background while the totals are updated from that table; waited for before the
        # manifest refers to it), a compacted copy of kept rows when some were dropped
        new_part = f"partials-{token}.parquet"
        fresh = session.stored(fresh, _partial_schema(plan))
        written = session.write_behind(fresh, self.dir / new_part)
        try:
            partial_parts = list(manifest["partial_parts"])
            kept = old
            if dirty or n_invalid:
                assert invalid is not None
                # drop every stored row of an invalidated (unit, day): the rescan redoes it whole
                kept = old.anti_join(invalid, [old[UNIT] == invalid[UNIT], old.day == invalid.day])
                partial_parts = [f"partials-{token}-kept.parquet"]
                session.write(kept, self.dir / partial_parts[0])
                kept = session.parts([self.dir / partial_parts[0]], _partial_schema(plan))
            partial_parts.append(new_part)

            # 5. running per-unit totals (through the last day seen), exact: sums and maxima.
            # Dense columns by unit index (:mod:`tripwire.metrics.dense_totals`): a daily refresh
            # rewrites only the columns its delta changes, scattering the touched units' rows
            names = _totals_schema(plan).names
            values = [n for n in names if n not in (UNIT, IX)]
            rows = _index_rows(exposed)
            if running:
                # fresh rows are valid for the current exposures: an exposed unit's rows carry
                # its first exposure in t0_used (no join with the exposures needed)
                exposed_rows = fresh.filter(fresh.t0_used.notnull())
                pieces = [
                    _row_contributions(
                        exposed_rows, exposed_rows.t0_used, exposed_rows[IX], plan
                    ).select(*names)
                ]
                if n_moved:
                    assert moved is not None
                    # moved units: every valid partial of theirs (kept old rows + fresh rows)
                    theirs = kept.semi_join(moved, kept[UNIT] == moved[UNIT])
                    pieces.append(_unit_contributions(theirs, exposed, plan).select(*names))
                if len(pieces) == 1 and len({_day_of(r) for r in new}) == 1 and not rescan:
                    delta = pieces[0]  # one new day, nothing rescanned: one fresh row per unit
                else:
                    delta = _fold(ibis.union(*pieces, distinct=False), plan)
                d = delta.select(IX, *values).to_pyarrow()
                modes = {f"{p}_{c.key}": c.mode for c in plan.components for p in ("a", "p")}
                old = manifest["totals"]
                columns: dict[str, str] = dict(old["columns"])
                # only the columns the delta changes: adding 0, or max with 0 (a 0/1 indicator),
                # is a no-op, and a daily delta has no pre-period part for units exposed before
                # it; a moved unit's totals are recomputed whole (zeroed, then its delta added)
                changed = (
                    values
                    if n_moved
                    else [n for n in values if pc.any(pc.not_equal(d[n], 0)).as_py()]
                )
                reset = None
                if n_moved:
                    assert moved is not None
                    mine = exposed.semi_join(moved, exposed[UNIT] == moved[UNIT]).select(IX)
                    reset = np.asarray(mine.to_pyarrow()[IX].to_numpy(), dtype=np.int64)
                columns |= dense.update(
                    self.dir,
                    {n: (old["columns"][n], f"totals-{token}-{n}.npy") for n in changed},
                    rows,
                    d[IX],
                    {n: (modes[n], d[n]) for n in changed},
                    reset=reset,
                )
                totals_entry = dense.entry(rows, columns)
                touched = dense.ints(d[IX])
                if reset is not None:
                    touched = np.concatenate([touched, reset])
            else:
                touched = None
                everything = ibis.union(kept, fresh.select(*kept.columns), distinct=False)
                totals = _merge_components(everything, exposed, plan).to_pyarrow()
                totals_entry = dense.entry(
                    rows,
                    {
                        n: dense.save(
                            self.dir,
                            f"totals-{token}-{n}.npy",
                            dense.scatter(rows, totals[IX], totals[n]),
                        )
                        for n in values
                    },
                )
            exposures = manifest.get("exposures")
            if exposed_file != manifest.get("exposed") or not exposures:
                if exposed_file != manifest.get("exposed"):
                    session.write(exposed, self.dir / exposed_file)
                # what the current look needs from the exposures alone, kept until they change:
                # the summary, the cohort coding and each unit index's cell (-1: not analysed)
                units = analysed_units(exposed)
                cohorts = cohort_columns(spec.dimensions)
                coding = cell_coding(units, cohorts, spec.max_cohort_values)
                coded = units.select(IX, **{CELL: coding.expr(units, cohorts)}).to_pyarrow()
                cells = np.full(rows, -1, dtype=np.int64)
                cells[coded[IX].to_numpy()] = coded[CELL].to_numpy()
                exposures = {
                    "summary": _summary_to_json(summarize(exposed, spec.experiment)),
                    "coding": _coding_to_json(coding),
                    "cells": dense.save(self.dir, f"cells-{token}.npy", cells),
                }
            moments = _update_moments(
                session, self.dir, plan, manifest, totals_entry, exposures, touched, token
            )
            # stored past looks stay valid unless this refresh touched a day on or before them
            affected = {_day_of(r) for r in new} | set(dirty) | set(invalid_days)
            looks = {
                day: look
                for day, look in manifest.get("looks", {}).items()
                if (date.fromisoformat(day) - _EPOCH).days < min(affected, default=1 << 40)
            }
        finally:
            wait([written])  # never leave a write running past the refresh
        written.result()  # the write's error, if any: nothing is acknowledged
        self._write_manifest(
            {
                "fingerprint": spec.fingerprint,
                "looks": looks,
                "files": current,
                "exposure_parts": exposure_parts,
                "partial_parts": partial_parts,
                "exposed": exposed_file,
                "totals": totals_entry,
                "exposures": exposures,
                "moments": moments,
                "last_day": max((_day_of(r) for r in current), default=None),
            }
        )
        return RefreshReport(
            new_files=tuple(new),
            dirty_days=tuple(str(_EPOCH + timedelta(days=d)) for d in dirty),
            invalidated_pairs=n_invalid,
            rescanned_files=tuple(rescan),
            rebuilt=rebuilt,
        )

    # ------------------------------------------------------------------ result
    def result(self, until: date | None = None) -> UnitStats:
        """The experiment's statistics from the stored state (no lake scan).

        At the last day seen (``until`` None, or on/after it): the running per-unit totals,
        one units-sized aggregation. Earlier (a past look): the per-day partials of days up
        to and including ``until`` merged — exactly the statistics of a full recomputation
        on the events before the end of that day, because a unit's first exposure as of that
        day is its current one whenever it falls on or before it, and every partial is per
        day.
        """
        manifest = self._manifest()
        if manifest is None:
            raise UnitStatsError(
                f"no incremental state for {self.spec.experiment!r} (call refresh() first)"
            )
        spec, plan = self.spec, self.plan
        last = manifest.get("last_day")
        at_last = until is None or last is None or (until - _EPOCH).days >= last
        cached = None if until is None else manifest.get("looks", {}).get(until.isoformat())
        if cached is not None and not at_last:
            return UnitStats(
                spec.experiment,
                _summary_from_json(cached["summary"]),
                pq.read_table(self.dir / cached["table"]),
                spec.dimensions,
            )
        totals = manifest.get("totals")
        stored = manifest.get("exposures")
        if at_last and stored and manifest.get("moments"):
            # the current look: the per-cell moments kept by the last refresh, rolled up
            # (no query); the cell counts from each unit index's cell
            cells = dense.load(self.dir, stored["cells"])
            counts = np.bincount(cells[cells >= 0])
            table = collect(
                _moments_table(_read_moments(self.dir / manifest["moments"])),
                {cell: int(n) for cell, n in enumerate(counts) if n},
                plan,
                _coding_from_json(stored["coding"]),
                spec.dimensions,
            )
            return UnitStats(
                spec.experiment, _summary_from_json(stored["summary"]), table, spec.dimensions
            )
        session = _Session(self.lake_dir, self.threads)  # (not for the two paths above)
        if at_last and dense.is_entry(totals) and stored:
            # the current look: the running totals next to each unit index's cohort cell,
            # and the summary and coding, all stored by the last refresh (no join, no
            # exposures query): one scan of memory-mapped columns
            assert isinstance(totals, dict)
            cells = dense.load(self.dir, stored["cells"])
            columns = {CELL: cells} | {
                n: dense.padded(dense.load(self.dir, f), len(cells))
                for n, f in totals["columns"].items()
            }
            table = session.arrow(pa.table(columns))
            per_unit = table.filter(table[CELL] >= 0)
            return compute_from_units(
                per_unit,
                per_unit.select(CELL),
                plan,
                experiment=spec.experiment,
                summary=_summary_from_json(stored["summary"]),
                dimensions=spec.dimensions,
                max_cohort_values=spec.max_cohort_values,
                coding=_coding_from_json(stored["coding"]),
            )
        exp_rows = session.parts(
            [self.dir / p for p in manifest["exposure_parts"]], _exposure_schema(spec)
        )
        partials = session.parts(
            [self.dir / p for p in manifest["partial_parts"]], _partial_schema(plan)
        )
        if until is not None:
            last_day = (until - _EPOCH).days
            exp_rows = exp_rows.filter(exp_rows.day <= last_day)
            partials = partials.filter(partials.day <= last_day)
        firsts = first_exposures(exp_rows, len(spec.dimensions))
        exposed = session.materialize(firsts.mutate(**{IX: ibis.row_number()}))
        per_unit = _merge_components(partials, analysed_units(exposed), plan)
        summary = summarize(exposed, spec.experiment)
        units = analysed_units(exposed)
        stats = compute_from_units(
            per_unit,
            units,
            plan,
            experiment=spec.experiment,
            summary=summary,
            dimensions=spec.dimensions,
            max_cohort_values=spec.max_cohort_values,
        )
        if until is not None and not at_last:
            # a past look: store its arm/cohort-level result (a refresh that touches a day
            # on or before it drops it, see refresh)
            name = f"look-{until.isoformat()}-{uuid.uuid4().hex[:8]}.parquet"
            pq.write_table(stats.table, self.dir / name)
            looks = dict(manifest.get("looks", {}))
            looks[until.isoformat()] = {"table": name, "summary": _summary_to_json(summary)}
            self._write_manifest(manifest | {"looks": looks})
        return stats


#: The moments query's SQL per (plan, columns), see :func:`_cell_moments`.
_MOMENTS_SQL: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
_MOMENTS_UNITS = "__tw_moments_units"
#: Cell of a unit's previous totals in the delta query of :func:`_update_moments`: cell ``c``
#: becomes ``_OLD - c`` (below -1, which marks units not analysed).
_OLD = -2
#: The stored moments are updated by a delta when fewer than this share of the analysed
#: units are touched (the delta query reads each touched unit twice).
_DELTA_SHARE = 0.5


def _cell_moments(
    session: _Session, plan: StatsPlan, columns: dict[str, np.ndarray], cells: np.ndarray
) -> dict[int, dict[str, int]]:
    """Per cell (of units whose cell is not -1): the exact moment sums of the current look
    (:func:`~tripwire.metrics.unit_stats.moments_expr`), as Python integers.

    The query's SQL depends only on the plan and the columns: built and compiled once per
    process (~0.3 CPU-s of Ibis work a refresh, as much as the query over a day's touched
    units), then run on the Arrow columns registered under a fixed name."""
    units = pa.table({CELL: pa.array(cells, pa.int64())} | columns)
    key = (plan.fingerprint, tuple((f.name, str(f.type)) for f in units.schema))
    sql = _MOMENTS_SQL.get(key)
    if sql is None:
        table = ibis.table(ibis.Schema.from_pyarrow(units.schema), name=_MOMENTS_UNITS)
        per_unit = table.filter(table[CELL] != -1)
        # DuckDB: sums of BIGINT accumulate in 128 bits (the split products of moments_expr)
        sql = _MOMENTS_SQL[key] = ibis.to_sql(
            moments_expr(per_unit, plan, split=True), dialect="duckdb"
        )
    con = session.con.con  # type: ignore[attr-defined]
    con.register(_MOMENTS_UNITS, units)
    try:
        rows = con.sql(sql).to_arrow_table()
    finally:
        con.unregister(_MOMENTS_UNITS)
    return {
        int(row.pop(CELL)): {k: 0 if v is None else int(v) for k, v in row.items()}
        for row in rows.to_pylist()
    }


def _update_moments(
    session: _Session,
    directory: Path,
    plan: StatsPlan,
    previous: dict[str, Any],
    totals: dict[str, Any],
    exposures: dict[str, Any],
    touched: np.ndarray | None,
    token: str,
) -> str:
    """Store the current look's per-cell moment sums for ``totals`` and the cells of
    ``exposures``; returns the file's name (the manifest's ``moments``).

    The moments are sums over units of products of their totals, so when only some units'
    totals or cells changed (``touched``: the indexes a daily delta updated, repeats
    allowed; plus every index whose cell changed), the new sums are the stored ones minus those units' previous
    products plus their new ones: exact integer arithmetic, one query over twice the
    touched units (a day touches ~28% of the bench's exposed units) instead of all. A
    cohort coding change, a rebuild, no stored moments, or more than half the units
    touched: computed from all units.
    """
    cells = dense.load(directory, exposures["cells"])
    rows = len(cells)
    new = {n: dense.padded(dense.load(directory, f), rows) for n, f in totals["columns"].items()}
    stored, before = previous.get("moments"), previous.get("exposures")
    sums: dict[int, dict[str, int]] | None = None
    if touched is not None and stored and before and before["coding"] == exposures["coding"]:
        old_cells = np.full(rows, -1, dtype=np.int64)
        kept = dense.load(directory, before["cells"])
        old_cells[: len(kept)] = kept
        mark = old_cells != cells
        mark[touched] = True
        touched = np.flatnonzero(mark)
        if len(touched) < _DELTA_SHARE * int(np.count_nonzero(cells >= 0)):
            old = {
                n: dense.padded(dense.load(directory, f), rows)
                for n, f in previous["totals"]["columns"].items()
            }
            was = old_cells[touched]
            both = np.concatenate([cells[touched], np.where(was >= 0, _OLD - was, -1)])
            part = (
                _cell_moments(
                    session,
                    plan,
                    {n: np.concatenate([new[n][touched], old[n][touched]]) for n in new},
                    both,
                )
                if len(touched)
                else {}
            )
            sums = _read_moments(directory / stored)
            for code, values in part.items():
                cell, sign = (code, 1) if code >= 0 else (_OLD - code, -1)
                bucket = sums.setdefault(cell, dict.fromkeys(values, 0))
                for key, value in values.items():
                    bucket[key] += sign * value
    if sums is None:
        sums = _cell_moments(session, plan, new, cells)
    name = f"moments-{token}.json"
    tmp = directory / (name + ".tmp")
    tmp.write_text(json.dumps({str(cell): values for cell, values in sorted(sums.items())}))
    os.replace(tmp, directory / name)
    return name


def _read_moments(path: Path) -> dict[int, dict[str, int]]:
    return {int(cell): values for cell, values in json.loads(path.read_text()).items()}


def _moments_table(sums: dict[int, dict[str, int]]) -> pa.Table:
    """Stored moment sums as the per-cell table :func:`~tripwire.metrics.unit_stats.collect`
    reads (exact: ``DECIMAL(38, 0)``, as the moments query returns them)."""
    names = sorted({key for values in sums.values() for key in values})
    cells = sorted(sums)
    columns: dict[str, pa.Array] = {CELL: pa.array(cells, pa.int64())}
    for key in names:
        columns[key] = pa.array(
            [Decimal(sums[cell].get(key, 0)) for cell in cells], pa.decimal128(38, 0)
        )
    return pa.table(columns)


def _summary_to_json(summary: ExposureSummary) -> dict[str, Any]:
    def moment(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "experiment": summary.experiment,
        "units_per_arm": summary.units_per_arm,
        "multi_arm_units": summary.multi_arm_units,
        "first_exposure": moment(summary.first_exposure),
        "last_first_exposure": moment(summary.last_first_exposure),
    }


def _coding_to_json(coding: CellCoding) -> dict[str, Any]:
    return {"arms": list(coding.arms), "values": [list(v) for v in coding.values]}


def _coding_from_json(data: dict[str, Any]) -> CellCoding:
    return CellCoding(
        tuple(str(a) for a in data["arms"]),
        tuple(tuple(str(v) for v in values) for values in data["values"]),
    )


def _summary_from_json(data: dict[str, Any]) -> ExposureSummary:
    def moment(value: str | None) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value)

    return ExposureSummary(
        experiment=data["experiment"],
        units_per_arm={str(k): int(v) for k, v in data["units_per_arm"].items()},
        multi_arm_units=int(data["multi_arm_units"]),
        first_exposure=moment(data["first_exposure"]),
        last_first_exposure=moment(data["last_first_exposure"]),
    )
