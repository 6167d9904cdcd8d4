"""Per-unit sufficient statistics of an experiment, computed entirely inside the engine.

For the exposed units of one experiment (:mod:`tripwire.metrics.exposures`) and a set of
per-unit metrics, one query

1. joins the events the metrics read to the units (first exposure ``t0``, arm, cohorts),
2. aggregates per unit every metric's variables over the **analysis window**
   ``[t0 + window.start, t0 + min(window.end, analysis_window))`` and, for CUPED, over the
   **pre-period** (the ``pre_period_days`` whole UTC days before the day of ``t0``),
3. sums per (arm × cohort cell) n and the sums and cross-products of each metric's
   variables ``x`` (value or numerator), ``y`` (denominator), ``c`` and ``d`` (their
   pre-period covariates).

Only the per-cell sums come back (a few hundred rows); marginals per cohort dimension and
the all-units total are added up in Python from them, exactly.

Exactness: per-event values are summed as fixed-point integers (micro-units,
``VALUE_SCALE``); products involving them are summed as ``DECIMAL(38, 0)`` and products of
counts and indicators as integers (:func:`product_type`), so results do not depend on
summation order or engine (DuckDB and Spark give identical sums; incremental refresh equals
a full recomputation bit for bit). Counts and indicators are exact integers.

Cost (what bounds it at 100M events): the scan of the events the metrics read, the hash
join of those events with the analysed units on the unit id, and the per-unit hash
aggregation. Window bounds are computed once per unit (:func:`unit_bounds`), so events are
placed in windows by timestamp comparisons only, and events outside every window are
dropped before the aggregation. Measured on the benchmark lake (100M events, 5M units,
10 metrics = 18 per-unit aggregates, DuckDB 2 threads): scan + join + a per-unit
``COUNT(*)`` alone take ~32 CPU-s; the 18 filtered per-unit aggregates add ~40 CPU-s
(hash-table state of 5M units); exposures, moments and roll-up the rest. Neither
``SUM(CASE ...)`` instead of ``FILTER``, nor an integer window code, nor packing two counts
into one 128-bit sum made the aggregation cheaper; joining on a 64-bit hash of the unit id
saves ~12% of the join only (and needs the strings compared anyway to stay exact);
grouping by (unit, cell) instead of ``MIN(cell)`` made no measurable difference.
Also measured without gain (20M events, 1M units, CPU-s on a loaded machine): a slimmer
join (epoch-microsecond bounds, one bit mask of filter matches, cell packed into the
group key: ~10% of the per-unit query); materializing the join before aggregating (the
join with its payload alone costs ~10 of ~14); grouping by (unit, window × event) first
and pivoting (2x slower); ``LIST`` aggregates (3x slower); a perfect hash table for the
dense unit index. The per-unit query at 100M measured ~78 CPU-s, of which the join
without aggregation ~23. The coded units are materialized once (the per-unit and the
cell-count queries read them).

On DuckDB the per-unit aggregation itself is done by :mod:`tripwire.metrics.dense_aggregate`
(the engine streams the unit index and each match/window/value column once; NumPy sums each
aggregate over the rows it selects, exactly; Ibis/Spark keep the ``GROUP BY``). Measured
A/B alternated on a loaded machine (load 6-8 on 2 cores), whole ``unit_stats``: 20M events
19.8 → 13.7 CPU-s (median of 3), 100M 96.5 → 71.2 CPU-s and peak RSS 4.7 → 3.7 GB;
bit-identical tables. What remains is the scan + string-keyed join (~5.5 of ~10 CPU-s of
the per-unit part at 20M), the engine's projection of the streamed columns (~2.5) and the
exposures (~3.3 of 13.7). ``sum_no_overflow`` (int64 instead of 128-bit ``SUM`` states)
saved ~12% of the engine aggregation at 20M: smaller than the NumPy strategy and unsafe
without a separate bound query, not used.

Which side DuckDB builds its hash table on decides more than anything else (tenth
session, 10M units, 91M events read): it estimates the filtered Parquet scan at ~1 row and
built the table on the events, probing it with the units; every measurement above and
below was taken that way. The dense path now plans its query as written
(:func:`tripwire.store.engine.joins_as_written`: the table built on the units), joins on
the unit id alone and places events in windows after the join, in integer microseconds
(:func:`_rows_in_windows_micros`): the join alone 23 → ~12 CPU-s, the whole 10M-unit
experiment ~31–36 → ~19–26 s (with the NumPy changes in :mod:`~tripwire.metrics.dense_aggregate`). The engine strategy below keeps the hull filter.

What the join carries decides much of its cost (measured at 100M events, 96M read, 5M
units, the table built on the events): rows are kept when inside the *hull* of the windows (:func:`window_hull`, one range)
rather than an ``OR`` of the windows' ranges (~10 CPU-s less), and filters that name events
only are matched on one ``TINYINT`` event code (:func:`event_codes`) instead of one boolean
column per filter (~6 CPU-s less). An integer unit key instead of the string id would save
only ~12% of the join; nor do the probe's cache misses dominate: run as 16 or 128
bucket-sized joins over a copy of the lake partitioned by unit hash, the join cost as
much CPU as one join with the whole 5M-unit table (9.8 / 11.0 vs 9.7 CPU-s).

Per-unit variables by metric type (units with no matching event count as 0):

============================  ===============================  ==========================
type                          x                                y
============================  ===============================  ==========================
count / sum / mean (per unit) events / Σ value                 —
distinct / proportion         1 if the unit did X              —
proportion with population    did X and in population          in population
mean (per event)              Σ value                          events with a value
ratio                         numerator measure                denominator measure
============================  ===============================  ==========================
"""

from __future__ import annotations

import functools
import json
import operator
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from tripwire.metrics.compile import (
    OTHER,
    epoch_us,
    filter_condition,
    resolve_field,
    unit_key,
    value_field,
)
from tripwire.metrics.definitions import (
    UNIT_COLUMNS,
    CountMetric,
    DistinctMetric,
    EventFilter,
    MeanMetric,
    Measure,
    MetricBase,
    Predicate,
    ProportionMetric,
    RatioMetric,
    SumMetric,
)
from tripwire.metrics.exposures import (
    DEFAULT_SOURCE,
    UNIT,
    ExposureSource,
    ExposureSummary,
    resolve_exposures,
    summarize,
)
from tripwire.stats.sufficient import CupedMeanStats, CupedRatioStats, MeanStats, RatioStats
from tripwire.store.engine import narrow_events

#: Fixed-point scale for summed property values (micro-units): exact, order-free sums.
VALUE_SCALE = 10**6
#: Dimension/value labels of the all-units rows.
ALL = "(all)"
SECONDS_PER_DAY = 86_400

Mode = Literal["count", "sum", "any", "distinct"]


class UnitStatsError(ValueError):
    """A metric that has no per-unit form, or an invalid analysis setting."""


@dataclass(frozen=True)
class Component:
    """One per-unit aggregate of events: ``count``, ``sum`` of a value, ``any`` (0/1) or
    ``distinct`` values, over events matching ``filters`` inside a metric window."""

    key: str
    mode: Mode
    filters: tuple[EventFilter, ...]
    value: str | None
    window_start: timedelta
    window_end: timedelta | None

    @property
    def scale(self) -> int:
        return VALUE_SCALE if self.mode == "sum" else 1

    @property
    def mergeable(self) -> bool:
        """Whether daily partials of it can be merged exactly (not true for distinct)."""
        return self.mode != "distinct"


@dataclass(frozen=True)
class MetricVariables:
    """A metric's per-unit variables as products of components (``x``; ``y`` for ratios)."""

    metric: str
    x: tuple[str, ...]
    y: tuple[str, ...] | None

    @property
    def kind(self) -> Literal["mean", "ratio"]:
        return "mean" if self.y is None else "ratio"


@dataclass(frozen=True)
class StatsPlan:
    """Everything the queries need: components (deduplicated), variables and windows."""

    components: tuple[Component, ...]
    metrics: tuple[MetricVariables, ...]
    pre_period_days: int | None
    unit: str

    def component(self, key: str) -> Component:
        return next(c for c in self.components if c.key == key)

    def variable_scale(self, product: tuple[str, ...]) -> int:
        scale = 1
        for key in product:
            scale *= self.component(key).scale
        return scale

    @property
    def fingerprint(self) -> str:
        """Stable text identifying the plan (incremental state is tied to it)."""
        return json.dumps(
            {
                "components": [
                    [
                        c.key,
                        c.mode,
                        [f.model_dump(mode="json") for f in c.filters],
                        c.value,
                        c.window_start.total_seconds(),
                        None if c.window_end is None else c.window_end.total_seconds(),
                    ]
                    for c in self.components
                ],
                "metrics": [[m.metric, m.x, m.y] for m in self.metrics],
                "pre": self.pre_period_days,
                "unit": self.unit,
            },
            sort_keys=True,
        )


def plan_metrics(
    metrics: Sequence[MetricBase],
    *,
    analysis_window: timedelta | None = None,
    pre_period_days: int | None = None,
    unit: str = "user",
) -> StatsPlan:
    """Translate per-unit metric definitions into components and variables.

    >>> from tripwire.metrics.definitions import parse_metric
    >>> m = parse_metric({"name": "cpu", "type": "ratio", "numerator": {"events": ["Click"]},
    ...                   "denominator": {"events": ["Session Started"]}})
    >>> plan = plan_metrics([m], pre_period_days=7)
    >>> [c.mode for c in plan.components], plan.metrics[0].kind
    (['count', 'count'], 'ratio')
    """
    if pre_period_days is not None and pre_period_days < 1:
        raise UnitStatsError(f"pre_period_days must be >= 1, got {pre_period_days}")
    if analysis_window is not None and analysis_window <= timedelta(0):
        raise UnitStatsError(f"analysis_window must be positive, got {analysis_window}")
    names = [m.name for m in metrics]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UnitStatsError(f"metric names must be unique, got duplicates {duplicates}")
    registry: dict[str, Component] = {}

    def component(
        metric: MetricBase, mode: Mode, filters: Iterable[EventFilter], value: str | None
    ) -> str:
        window = metric.window
        start = window.start if window else timedelta(0)
        ends = [e for e in (window.end if window else None, analysis_window) if e is not None]
        end = min(ends) if ends else None
        if end is not None and end <= start:
            raise UnitStatsError(
                f"metric {metric.name!r}: window start {start} is not before the analysis "
                f"window end {end}"
            )
        kept = tuple(
            EventFilter(events=sorted(f.events), where=list(f.where))
            for f in filters
            if f.events or f.where
        )
        probe = Component("", mode, kept, value, start, end)
        signature = json.dumps(
            [mode, [f.model_dump(mode="json") for f in kept], value, str(start), str(end)]
        )
        if signature not in registry:
            registry[signature] = Component(
                f"c{len(registry)}", probe.mode, kept, value, start, end
            )
        return registry[signature].key

    def measure(metric: MetricBase, side: Measure) -> str:
        filters = (metric, side)
        if side.agg == "count":
            return component(metric, "count", filters, None)
        return component(metric, "sum" if side.agg == "sum" else "distinct", filters, side.value)

    variables: list[MetricVariables] = []
    for metric in metrics:
        x: tuple[str, ...]
        y: tuple[str, ...] | None = None
        if isinstance(metric, CountMetric):
            x = (component(metric, "count", [metric], None),)
        elif isinstance(metric, SumMetric):
            x = (component(metric, "sum", [metric], metric.value),)
        elif isinstance(metric, DistinctMetric):
            x = (component(metric, "any", [metric], None),)
        elif isinstance(metric, ProportionMetric):
            did = component(metric, "any", [metric], None)
            if metric.population is None:
                x = (did,)
            else:
                population = component(metric, "any", [metric.population], None)
                x, y = (did, population), (population,)
        elif isinstance(metric, MeanMetric):
            if metric.per == "unit":
                mode: Mode = "sum" if metric.value else "count"
                x = (component(metric, mode, [metric], metric.value),)
            else:
                assert metric.value is not None
                has_value = EventFilter(where=[Predicate(field=metric.value, op="not_null")])
                x = (component(metric, "sum", [metric], metric.value),)
                y = (component(metric, "count", [metric, has_value], None),)
        elif isinstance(metric, RatioMetric):
            x, y = (measure(metric, metric.numerator),), (measure(metric, metric.denominator),)
        else:
            raise UnitStatsError(
                f"metric {metric.name!r} is a {metric.type} metric: it has no per-unit form "
                "(use proportion, mean, ratio, count, sum or distinct for experiments)"
            )
        variables.append(MetricVariables(metric.name, x, y))
    return StatsPlan(tuple(registry.values()), tuple(variables), pre_period_days, unit)


# --------------------------------------------------------------------------- engine side


#: Microseconds per UTC day.
MICROS_PER_DAY = 86_400_000_000


def micros_day(micros: ir.IntegerValue) -> ir.IntegerValue:
    """Days since 1970-01-01 (UTC) of an instant given as epoch microseconds
    (:func:`~tripwire.metrics.compile.epoch_us`): the lake's date partition as an integer.

    Integer arithmetic on purpose: a ``TIMESTAMPTZ``'s epoch seconds go through a cast to a
    local ``TIMESTAMP`` in DuckDB (a calendar conversion, ~0.17 µs a row). Floor of the
    quotient (Ibis divides as doubles): exact while days < 2**16 (the year 2149)."""
    return (micros // MICROS_PER_DAY).cast("int64")  # type: ignore[no-any-return]


def day_index(ts: ir.TimestampValue) -> ir.IntegerValue:
    """Days since 1970-01-01 (UTC) of a timestamp, through :func:`micros_day`."""
    return micros_day(epoch_us(ts))


def _offset(ts: ir.TimestampValue, delta: timedelta) -> ir.TimestampValue:
    seconds = delta.total_seconds()
    if seconds % SECONDS_PER_DAY == 0:
        return ts + ibis.interval(days=int(seconds // SECONDS_PER_DAY))  # type: ignore[no-any-return]
    if seconds == int(seconds):
        return ts + ibis.interval(seconds=int(seconds))  # type: ignore[no-any-return]
    return ts + ibis.interval(milliseconds=round(seconds * 1000))  # type: ignore[no-any-return]


def _matches(table: ir.Table, component: Component) -> ir.BooleanValue:
    condition: ir.BooleanValue = ibis.literal(True)
    for flt in component.filters:
        part = filter_condition(table, flt)
        if part is not None:
            condition = condition & part
    return condition.fill_null(False)  # type: ignore[no-any-return]


def contribution(table: ir.Table, component: Component) -> ir.IntegerValue:
    """One event's scaled contribution to ``component`` (0 when it does not match)."""
    matches = _matches(table, component)
    if component.mode == "sum":
        assert component.value is not None
        scaled = (value_field(table, component.value) * VALUE_SCALE).round().cast("int64")
        return ibis.ifelse(matches, scaled.fill_null(0), 0)  # type: ignore[no-any-return]
    return ibis.ifelse(matches, 1, 0).cast("int64")  # type: ignore[no-any-return]


def in_window(
    ts: ir.TimestampValue, t0: ir.TimestampValue, component: Component
) -> ir.BooleanValue:
    """``t0 + start <= ts < t0 + end`` for the component's (metric's) window."""
    inside = ts >= _offset(t0, component.window_start)
    if component.window_end is not None:
        inside = inside & (ts < _offset(t0, component.window_end))
    return inside  # type: ignore[no-any-return]


def offset_micros(delta: timedelta) -> int:
    """The microseconds :func:`_offset` adds for ``delta`` (whole days and whole seconds
    exactly, anything finer rounded to milliseconds): the integer form of the same rule."""
    seconds = delta.total_seconds()
    if seconds == int(seconds):
        return int(seconds) * 1_000_000
    return round(seconds * 1000) * 1000


def in_window_micros(
    ts_us: ir.IntegerValue, t0_us: ir.IntegerValue, component: Component
) -> ir.BooleanValue:
    """:func:`in_window` on epoch microseconds (``compile.epoch_us``): the same instants in
    a UTC session, compared as integers (DuckDB adds an ``INTERVAL`` to a ``TIMESTAMPTZ``
    with calendar arithmetic, ~0.18 µs per row against ~0.01 for an integer add)."""
    inside = ts_us >= t0_us + offset_micros(component.window_start)
    if component.window_end is not None:
        inside = inside & (ts_us < t0_us + offset_micros(component.window_end))
    return inside  # type: ignore[no-any-return]


def in_pre_period(day: ir.IntegerValue, t0_day: ir.IntegerValue, days: int) -> ir.BooleanValue:
    """The ``days`` whole UTC days before the exposure day."""
    return (day >= t0_day - days) & (day < t0_day)  # type: ignore[no-any-return]


def _aggregate(values: ir.IntegerValue, mode: Mode) -> ir.Scalar:
    if mode == "any":
        return values.max().fill_null(0)  # type: ignore[no-any-return]
    return values.sum().fill_null(0).cast("int64")  # type: ignore[no-any-return]


def events_read(plan: StatsPlan) -> set[str] | None:
    """The event names the plan's components read (None: some component reads any event)."""
    names: set[str] = set()
    for component in plan.components:
        named = [set(f.events) for f in component.filters if f.events]
        if not named:
            return None
        names |= set.intersection(*named)
    return names


def event_scan(events: ir.Table, plan: StatsPlan) -> ir.Table:
    """The events any component reads (pushes the event-name filter into the scan)."""
    names = events_read(plan)
    return events if names is None else events.filter(events.event.isin(sorted(names)))


def window_key(component: Component) -> str:
    """Name of a component's analysis window (components with equal windows share it)."""
    end = "open" if component.window_end is None else str(int(component.window_end.total_seconds()))
    return f"{int(component.window_start.total_seconds())}_{end}"


def unit_bounds(units: ir.Table, plan: StatsPlan) -> ir.Table:
    """Per analysed unit, the bounds of every window as instants, computed once per unit.

    ``__ws_<w>``/``__we_<w>``: ``t0 + start`` and ``t0 + end`` of each distinct analysis
    window; ``__ps``/``__pe``: midnight (UTC) ``pre_period_days`` days before the exposure
    day, and midnight of the exposure day. Events are then placed in windows by plain
    timestamp comparisons: no per-event interval or time-zone arithmetic. The unit's cohort
    cell (:data:`CELL`) is carried along when ``units`` has one.

    ``__lo``/``__hi``: the hull of all these windows (earliest start, latest end; no
    ``__hi`` when some window is open-ended), added only where it is not one of the bounds
    already (:func:`window_hull`).
    """
    columns: dict[str, ir.Value] = {}
    for component in plan.components:
        key = window_key(component)
        columns[f"__ws_{key}"] = _offset(units.t0, component.window_start)
        if component.window_end is not None:
            columns[f"__we_{key}"] = _offset(units.t0, component.window_end)
    if plan.pre_period_days:
        exposure_day = units.t0.truncate("D")
        columns["__pe"] = exposure_day
        columns["__ps"] = exposure_day - ibis.interval(days=plan.pre_period_days)
    starts, ends = _hull_columns(plan)
    if len(starts) > 1:
        columns["__lo"] = ibis.least(*(columns[name] for name in starts))
    if ends is not None and len(ends) > 1:
        columns["__hi"] = ibis.greatest(*(columns[name] for name in ends))
    for carried in (CELL, INDEX):
        if carried in units.columns:
            columns[carried] = units[carried]
    return units.select(units[UNIT], **columns)


def _hull_columns(plan: StatsPlan) -> tuple[list[str], list[str] | None]:
    """The bound columns (:func:`unit_bounds`) whose earliest is the start of the hull of
    every window and whose latest is its end (None: some window is open-ended).

    When no window starts before ``t0``, the pre-period (which ends at midnight of the
    exposure day, at or before ``t0``) starts first and ends before every window ends
    (``end > start >= 0``), so it gives the start alone and none of the ends.
    """
    starts = {f"__ws_{window_key(c)}": None for c in plan.components}
    ends: dict[str, None] | None = {f"__we_{window_key(c)}": None for c in plan.components}
    if any(c.window_end is None for c in plan.components):
        ends = None
    if plan.pre_period_days:
        if all(c.window_start >= timedelta(0) for c in plan.components):
            starts = {"__ps": None}
        else:
            starts["__ps"] = None
            if ends is not None:
                ends["__pe"] = None
    return list(starts), None if ends is None else list(ends)


def window_hull(plan: StatsPlan) -> tuple[str, str | None]:
    """The bound columns of the hull of every window: its start and its end (None: open).

    Rows are kept when inside the hull (one range, ``lo <= ts < hi``) and placed in their
    windows afterwards. On DuckDB an ``OR`` of per-window ranges filtering the join's output
    cost ~10 CPU-s more than one range at 100M events; the rows in the hull but in no
    window (~4% there, e.g. the exposure day before ``t0``) are in no window's flag and add
    nothing. A single start (end) column is used as it is; several get ``__lo``
    (``__hi``) in :func:`unit_bounds`.
    """
    starts, ends = _hull_columns(plan)
    lo = starts[0] if len(starts) == 1 else "__lo"
    hi = None if ends is None else (ends[0] if len(ends) == 1 else "__hi")
    return lo, hi


def _component_aggregate(rows: ir.Table, component: Component, where: ir.BooleanValue) -> ir.Scalar:
    """Aggregate of one component over the rows where ``where`` (match and window) holds."""
    key = component.key
    if component.mode == "distinct":
        return rows[f"__s_{key}"].nunique(where=where)  # type: ignore[no-any-return]
    if component.mode == "sum":
        return rows[f"__v_{key}"].sum(where=where).fill_null(0).cast("int64")  # type: ignore[no-any-return]
    count = rows.count(where=where)
    if component.mode == "any":
        return ibis.ifelse(count > 0, 1, 0).cast("int64")  # type: ignore[no-any-return]
    return count.cast("int64")  # type: ignore[no-any-return]


def _derived_indicators(plan: StatsPlan) -> dict[str, str]:
    """``any`` components that equal ``count > 0`` of a count component (same filters and
    window): indicator key → count key. They are derived instead of aggregated again."""
    counts = {
        (json.dumps([f.model_dump(mode="json") for f in c.filters]), window_key(c)): c.key
        for c in plan.components
        if c.mode == "count"
    }
    out: dict[str, str] = {}
    for c in plan.components:
        if c.mode == "any":
            signature = (json.dumps([f.model_dump(mode="json") for f in c.filters]), window_key(c))
            if signature in counts:
                out[c.key] = counts[signature]
    return out


#: Column of each event's name as a small integer (:func:`event_codes`), in the per-unit join.
EVENT_CODE = "__e"


def event_codes(plan: StatsPlan) -> dict[str, int] | None:
    """A small integer per event name the plan reads (1, 2, …; 0 for any other name), or
    None when some component reads any event or there are too many names for ``int8``.

    Components whose filters name events only (no property predicates) are matched on this
    one code column: carrying a ``TINYINT`` through the join instead of one boolean per
    filter cost ~6 CPU-s less at 100M events (DuckDB).
    """
    names = events_read(plan)
    if names is None or not names or len(names) > 127:
        return None
    return {name: i + 1 for i, name in enumerate(sorted(names))}


def event_code(table: ir.Table, codes: Mapping[str, int]) -> ir.IntegerValue:
    """The code of each event's name (:func:`event_codes`), 0 for names not in ``codes``."""
    return table.event.substitute(dict(codes), else_=0).cast("int8")  # type: ignore[no-any-return]


def _codes_of(component: Component, codes: Mapping[str, int]) -> tuple[int, ...]:
    """The codes of the events ``component`` matches: the names every one of its filters
    lists (its filters name events only, so matching them is matching the name)."""
    names = set.intersection(*(set(f.events) for f in component.filters))
    return tuple(sorted(codes[name] for name in names))


@dataclass(frozen=True)
class Match:
    """How a component's filter is matched per event: by event code (``codes``, the names
    it lists) or by a boolean ``column`` computed in the scan (property predicates)."""

    codes: tuple[int, ...] | None = None
    column: str | None = None

    def condition(self, rows: ir.Table) -> ir.BooleanValue:
        if self.codes is not None:
            return rows[EVENT_CODE].isin(list(self.codes))  # type: ignore[no-any-return]
        assert self.column is not None
        return rows[self.column]  # type: ignore[no-any-return]


def per_unit_components(
    events: ir.Table,
    units: ir.Table,
    plan: StatsPlan,
    *,
    scan: ir.Table | None = None,
    strategy: Literal["auto", "engine"] = "auto",
) -> ir.Table:
    """Per analysed unit: ``a_<c>`` (analysis window) and ``p_<c>`` (pre-period) for every
    component, from raw events. Units without events are absent (callers count them as 0).

    The events the metrics read are joined to the per-unit window bounds
    (:func:`unit_bounds`, :func:`_rows_in_hull`); rows outside every window are dropped
    before aggregating; each event's window flags, filter matches and scaled values are
    computed once in a projection and summed per unit with filtered aggregates
    (``SUM(..) FILTER (WHERE ..)``). The dense strategy below joins on the unit id alone and
    flags windows after the join instead (:func:`_rows_in_windows_micros`).
    An indicator ("did X") whose count is also aggregated is derived from it (``count > 0``).
    When ``units`` carries a cohort cell (:data:`CELL`) the result carries it too, so the
    moments need no second join with the units; when it carries an integer unit index
    (:data:`INDEX`, :func:`coded_units`) rows are grouped by it and keyed by it instead of
    ``unit_id``. ``scan``: the events the plan reads when the caller has them already
    (:func:`tripwire.store.engine.narrow_events`), else ``events`` filtered by name.

    ``strategy``: ``auto`` lets the embedded engine (DuckDB) with coded units aggregate
    per unit index in NumPy (:mod:`tripwire.metrics.dense_aggregate`, the same exact sums,
    ~30% less CPU for the whole statistics); ``engine`` always uses the engine's ``GROUP BY`` (as Ibis/Spark do).
    """
    # imported here: dense_aggregate's helpers import this module's error type
    from tripwire.metrics import dense_aggregate

    if scan is None:
        scan = event_scan(events, plan)
    derived = _derived_indicators(plan)
    prefixes = [("a", None)] + ([("p", "__pre")] if plan.pre_period_days else [])
    # per aggregate: its component and its window's flag column (the match comes below)
    windows: dict[str, tuple[Component, str]] = {}
    for component in plan.components:
        if component.key in derived:
            continue
        for prefix, flag in prefixes:
            windows[f"{prefix}_{component.key}"] = (
                component, flag or f"__a_{window_key(component)}"
            )  # fmt: skip
    modes = {name: component.mode for name, (component, _) in windows.items()}
    dense = strategy != "engine" and dense_aggregate.applicable(units, modes, INDEX, CELL)
    # per-event columns (event code, filter matches, scaled values) are computed in the
    # scan, before the join: on the files' dictionary-encoded (or, for the hive ``event``
    # partition, constant) columns, and the join carries only them
    codes = event_codes(plan)
    event_columns: dict[str, ir.Value] = {
        "__unit": unit_key(scan, plan.unit).cast("string"),
        # the dense path places events in windows by integer microseconds
        "__ts": epoch_us(scan.timestamp) if dense else scan.timestamp,
    }
    matched: dict[str, Match] = {}  # component -> how its filter is matched
    match_of: dict[str, Match] = {}  # filter signature -> its match (shared by components)
    for component in plan.components:
        key = component.key
        if key in derived:
            continue
        signature = json.dumps([f.model_dump(mode="json") for f in component.filters])
        if signature not in match_of:
            if codes is not None and not any(f.where for f in component.filters):
                match_of[signature] = Match(codes=_codes_of(component, codes))
            else:
                match_of[signature] = Match(column=f"__m_{key}")
                event_columns[f"__m_{key}"] = _matches(scan, component)
        matched[key] = match_of[signature]
        if component.mode == "distinct":
            assert component.value is not None
            event_columns[f"__s_{key}"] = resolve_field(scan, component.value, "string")
        elif component.mode == "sum":
            assert component.value is not None
            value = value_field(scan, component.value) * VALUE_SCALE
            event_columns[f"__v_{key}"] = value.round().cast("int64")
    if codes is not None and any(m.codes is not None for m in match_of.values()):
        event_columns[EVENT_CODE] = event_code(scan, codes)
    scan = scan.select(**event_columns)
    carried = [name for name in event_columns if name not in ("__unit", "__ts")]
    per_unit: ir.Table
    if dense:
        per_unit = dense_aggregate.aggregate(
            _rows_in_windows_micros(scan, units, plan, carried),
            units,
            {
                name: dense_aggregate.Column(
                    c.mode,
                    window,
                    match=matched[c.key].column,
                    codes=matched[c.key].codes,
                    value=f"__v_{c.key}" if c.mode == "sum" else None,
                )
                for name, (c, window) in windows.items()
            },
            index=INDEX,
            cell=CELL,
            code=EVENT_CODE,
        )
    else:
        rows = _rows_in_hull(scan, units, plan, carried)
        group_key = INDEX if INDEX in rows.columns else UNIT
        aggregates: dict[str, ir.Scalar] = {}
        if CELL in rows.columns:
            aggregates[CELL] = rows[CELL].min()
        for name, (component, window) in windows.items():
            where = matched[component.key].condition(rows) & rows[window]
            aggregates[name] = _component_aggregate(rows, component, where)
        per_unit = rows.group_by(group_key).aggregate(**aggregates)
    if not derived:
        return per_unit
    return per_unit.mutate(
        **{
            f"{prefix}_{key}": ibis.ifelse(per_unit[f"{prefix}_{count}"] > 0, 1, 0).cast("int64")
            for key, count in derived.items()
            for prefix, _ in prefixes
        }
    )


def _rows_in_hull(
    scan: ir.Table, units: ir.Table, plan: StatsPlan, carried: Sequence[str]
) -> ir.Table:
    """The engine strategy's rows: ``scan`` (``__unit``, ``__ts`` and the ``carried``
    per-event columns) joined to the units' window bounds (:func:`unit_bounds`), kept
    inside the windows' hull, with a flag per window; keyed by the unit index when the
    units have one (cheaper to group by than the id), carrying the cohort cell if any."""
    bounds = unit_bounds(units, plan)
    joined = scan.inner_join(bounds, scan["__unit"] == bounds[UNIT])
    ts = joined["__ts"]
    columns: dict[str, ir.Value] = {}
    for component in plan.components:
        key = window_key(component)
        if f"__a_{key}" not in columns:
            inside = ts >= joined[f"__ws_{key}"]
            if component.window_end is not None:
                inside = inside & (ts < joined[f"__we_{key}"])
            columns[f"__a_{key}"] = inside
    if plan.pre_period_days:
        columns["__pre"] = (ts >= joined["__ps"]) & (ts < joined["__pe"])
    if CELL in bounds.columns:
        columns[CELL] = joined[CELL]
    columns |= {name: joined[name] for name in carried}
    lo, hi = window_hull(plan)
    in_hull = ts >= joined[lo]
    if hi is not None:
        in_hull = in_hull & (ts < joined[hi])
    group_key = INDEX if INDEX in bounds.columns else UNIT
    return joined.filter(in_hull).select(joined[group_key], **columns)


def _rows_in_windows_micros(
    scan: ir.Table, units: ir.Table, plan: StatsPlan, carried: Sequence[str]
) -> ir.Table:
    """The dense strategy's rows: ``scan`` (``__unit``, ``__ts`` in epoch microseconds and
    the ``carried`` per-event columns) joined to the coded units on the unit id alone, with
    a flag per window computed after the join (integer comparisons, :func:`in_window_micros`).

    Why not :func:`_rows_in_hull`: on DuckDB, window conditions next to the join key become
    conditions of the hash join, checked against the bounds gathered from its hash table
    per candidate row; at 10M units × 91M events that cost ~8 CPU-s more than the same
    comparisons as a projection of the join's output, and the bounds as ``TIMESTAMPTZ``
    (``date_trunc``, ``+ INTERVAL``: calendar arithmetic) another ~3 CPU-s. Rows outside
    every window (~10% there) stream through with every flag false and add nothing.
    """
    t0 = epoch_us(units.t0)
    build: dict[str, ir.Value] = {UNIT: units[UNIT], INDEX: units[INDEX], "__t0u": t0}
    if plan.pre_period_days:
        build["__pdu"] = micros_day(t0) * MICROS_PER_DAY  # midnight of the exposure day
    bounds = units.select(**build)
    joined = scan.inner_join(bounds, scan["__unit"] == bounds[UNIT])
    ts = joined["__ts"]
    columns: dict[str, ir.Value] = {}
    for component in plan.components:
        key = f"__a_{window_key(component)}"
        if key not in columns:
            columns[key] = in_window_micros(ts, joined["__t0u"], component)
    if plan.pre_period_days:
        midnight = joined["__pdu"]
        start = midnight - plan.pre_period_days * MICROS_PER_DAY
        columns["__pre"] = (ts >= start) & (ts < midnight)
    columns |= {name: joined[name] for name in carried}
    return joined.select(joined[INDEX], **columns)


def component_columns(plan: StatsPlan) -> list[str]:
    columns = [f"a_{c.key}" for c in plan.components]
    if plan.pre_period_days:
        columns += [f"p_{c.key}" for c in plan.components]
    return columns


def _product(table: ir.Table, prefix: str, keys: tuple[str, ...]) -> ir.IntegerValue:
    value: ir.IntegerValue = table[f"{prefix}_{keys[0]}"]
    for key in keys[1:]:
        value = value * table[f"{prefix}_{key}"]
    return value


def metric_variables(plan: StatsPlan) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Variable column → (component prefix, product of components), per metric.

    ``<metric>__x``/``__y`` (analysis window), ``__c``/``__d`` (their pre-period values).
    """
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for m in plan.metrics:
        out[f"{m.metric}__x"] = ("a", m.x)
        if m.y is not None:
            out[f"{m.metric}__y"] = ("a", m.y)
        if plan.pre_period_days:
            out[f"{m.metric}__c"] = ("p", m.x)
            if m.y is not None:
                out[f"{m.metric}__d"] = ("p", m.y)
    return out


#: Per metric, the sums computed: name → the variables multiplied (n is separate).
MOMENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("x", ("x",)), ("xx", ("x", "x")),
    ("y", ("y",)), ("yy", ("y", "y")), ("xy", ("x", "y")),
    ("c", ("c",)), ("cc", ("c", "c")),
    ("d", ("d",)), ("dd", ("d", "d")), ("cd", ("c", "d")),
    ("xc", ("x", "c")), ("xd", ("x", "d")), ("yc", ("y", "c")), ("yd", ("y", "d")),
)  # fmt: skip

#: ``floor(sqrt(2**63 - 1))``: two int64 factors at most this large multiply within int64.
INT64_FACTOR_LIMIT = 3_037_000_499


def product_type(plan: StatsPlan, factors: Sequence[tuple[str, ...]]) -> str:
    """The exact type to multiply per-unit variables (each a product of components) in.

    With only counts and indicators, at most two of them counts, ``int64`` (a count below
    3·10⁹ squared fits; on overflow engines raise rather than wrap: DuckDB always, Spark
    in its default ANSI mode); the products are summed as integers and the sum is cast to
    ``DECIMAL(38, 0)``. Anything involving fixed-point value sums is multiplied as
    ``DECIMAL(38, 0)``. Integer products are ~5x cheaper than ``DECIMAL(38, 0)`` ones in
    DuckDB (which computes those as 128-bit integers); both are exact.
    """
    modes = [plan.component(key).mode for keys in factors for key in keys]
    wide = [mode for mode in modes if mode != "any"]
    if "sum" not in wide and len(wide) <= 2:
        return "int64"
    return "decimal(38, 0)"


def _wide_factors(plan: StatsPlan, factors: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (prefix, component) factors of a product that are not 0/1 indicators."""
    return [(p, k) for p, k in factors if plan.component(k).mode != "any"]


def _product_sum(
    table: ir.Table, plan: StatsPlan, factors: Sequence[tuple[str, str]], split: bool
) -> ir.Scalar:
    """Exact ``SUM`` of the product of component columns, as ``DECIMAL(38, 0)``.

    Products of counts and indicators are int64 (:func:`product_type`). A product with
    value sums is ``DECIMAL(38, 0)``, unless ``split`` (DuckDB, whose ``SUM(BIGINT)``
    accumulates in 128 bits): then units whose (at most two) wide factors are all within
    :data:`INT64_FACTOR_LIMIT` multiply in int64 (~5x cheaper) and only the others in
    ``DECIMAL(38, 0)``; ``CASE`` evaluates each branch only on its own rows, so the int64
    branch never overflows. Both branches are exact, so is their sum.
    """
    columns = [table[f"{p}_{k}"] for p, k in factors]

    def multiply(kind: str) -> ir.IntegerValue:
        value = columns[0].cast(kind)
        for column in columns[1:]:
            value = value * column.cast(kind)
        return value  # type: ignore[no-any-return]

    kind = product_type(plan, [(k,) for _, k in factors])
    if kind == "int64":
        return multiply("int64").sum().cast("decimal(38, 0)")  # type: ignore[no-any-return]
    wide = _wide_factors(plan, factors)
    if len(wide) <= 1 and split:  # one int64 factor times 0/1 indicators: int64 is exact
        return multiply("int64").sum().cast("decimal(38, 0)")  # type: ignore[no-any-return]
    if not split or len(wide) > 2:
        return multiply(kind).sum().cast("decimal(38, 0)")  # type: ignore[no-any-return]
    small = functools.reduce(operator.and_, [table[f"__ok_{p}_{k}"] for p, k in wide])
    narrow = ibis.ifelse(small, multiply("int64"), ibis.null("int64")).sum()
    broad = ibis.ifelse(small, ibis.null(kind), multiply(kind)).sum()
    total = narrow.cast(kind).fill_null(0) + broad.cast(kind).fill_null(0)
    return total.cast("decimal(38, 0)")  # type: ignore[no-any-return]


def moment_columns(plan: StatsPlan) -> dict[str, tuple[tuple[str, str], ...]]:
    """``<metric>__<moment>`` → its product as sorted ``(prefix, component)`` factors.

    Metrics sharing a variable (``aov``'s numerator is ``revenue``'s value) share moments:
    the query computes each distinct product once (:func:`moments_expr`).
    """
    sources = metric_variables(plan)
    out: dict[str, tuple[tuple[str, str], ...]] = {}
    for m in plan.metrics:
        for moment, parts in MOMENTS:
            names = [f"{m.metric}__{p}" for p in parts]
            if not all(n in sources for n in names):
                continue
            factors = [(sources[n][0], key) for n in names for key in sources[n][1]]
            out[f"{m.metric}__{moment}"] = tuple(sorted(factors))
    return out


def moments_expr(per_unit: ir.Table, plan: StatsPlan, *, split: bool = False) -> ir.Table:
    """Per cohort cell (:data:`CELL`): exact sums of every distinct product of per-unit
    variables (``__p<i>``, see :func:`moment_columns`) and, per ratio metric, the units
    with a non-zero denominator (``<metric>__nonzero_den``).

    ``per_unit`` has :data:`CELL` and the component columns and holds only units with
    events; units without any are all zeros, so they add to ``n`` only (counted from the
    units table by the caller).
    """
    products = sorted(set(moment_columns(plan).values()))
    table = per_unit
    if split:
        wide = sorted({f for factors in products for f in _wide_factors(plan, factors)})
        table = table.mutate(
            **{
                f"__ok_{p}_{k}": table[f"{p}_{k}"].abs() <= INT64_FACTOR_LIMIT
                for p, k in wide
                if plan.component(k).mode == "sum"
            }
        )
        # counts are far below the limit: no per-unit check needed for them
        table = table.mutate(
            **{
                f"__ok_{p}_{k}": ibis.literal(True)
                for p, k in wide
                if plan.component(k).mode != "sum"
            }
        )
    aggregates: dict[str, ir.Scalar] = {
        f"__p{i}": _product_sum(table, plan, factors, split) for i, factors in enumerate(products)
    }
    for m in plan.metrics:
        if m.y is not None:
            y = _product(table, "a", m.y)
            aggregates[f"{m.metric}__nonzero_den"] = (y != 0).cast("int64").sum()
    return table.group_by(CELL).aggregate(**aggregates)


#: Column of the units table and of per-unit rows: the unit's (arm × cohort values) cell.
CELL = "__cell"
#: Column of a coded units table: a unique integer per unit (per-unit rows group by it).
INDEX = "__ix"


@dataclass(frozen=True)
class CellCoding:
    """Integer codes for (arm × folded cohort values) cells.

    Each cohort column keeps ``values`` (its most common ones); anything else is
    ``(other)``. A cell code is a mixed-radix number of the arm's index and each column's
    value index (``len(values)`` for ``(other)``), so per-unit rows carry one integer
    instead of several strings, and decoding is exact.
    """

    arms: tuple[str, ...]
    values: tuple[tuple[str, ...], ...]

    @property
    def radices(self) -> list[int]:
        return [len(self.arms) + 1] + [len(v) + 1 for v in self.values]

    def expr(self, units: ir.Table, cohorts: Sequence[str]) -> ir.IntegerValue:
        code: ir.IntegerValue = _code(units.arm, self.arms)
        for column, values in zip(cohorts, self.values, strict=True):
            code = code * (len(values) + 1) + _code(units[column], values)
        return code.cast("int64")  # type: ignore[no-any-return]

    def decode(self, code: int) -> tuple[str, list[str]]:
        digits = []
        for radix in reversed(self.radices):
            code, digit = divmod(code, radix)
            digits.append(digit)
        digits.reverse()
        arm_index, indexes = digits[0], digits[1:]
        arm = self.arms[arm_index] if arm_index < len(self.arms) else OTHER
        labels = [
            values[i] if i < len(values) else OTHER
            for values, i in zip(self.values, indexes, strict=True)
        ]
        return arm, labels


def _code(column: ir.Value, values: Sequence[str]) -> ir.IntegerValue:
    if not values:
        return ibis.literal(0, "int64")  # type: ignore[no-any-return]
    mapping = {value: index for index, value in enumerate(values)}
    return column.substitute(mapping, else_=len(values)).cast("int64")  # type: ignore[no-any-return,attr-defined]


def cohort_counts(units: ir.Table, columns: Sequence[str]) -> dict[str, list[tuple[str, int]]]:
    """Every value of each column with its number of units, most common first (one query)."""
    parts = [
        units.group_by(__value=units[c].cast("string"))
        .aggregate(__n=units.count())
        .mutate(__dim=ibis.literal(c))
        for c in columns
    ]
    rows = (parts[0] if len(parts) == 1 else ibis.union(*parts)).to_pyarrow().to_pylist()
    by_column: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for row in rows:
        if row["__value"] is not None:
            by_column[row["__dim"]].append((-int(row["__n"]), str(row["__value"])))
    return {c: [(v, -n) for n, v in sorted(by_column.get(c, []))] for c in columns}


def cell_coding(units: ir.Table, cohorts: Sequence[str], limit: int) -> CellCoding:
    """Arms and each cohort column's kept values: its ``limit`` most common (sorted)."""
    counts = cohort_counts(units, ["arm", *cohorts])
    arms = tuple(sorted(v for v, _ in counts["arm"]))
    values = tuple(tuple(sorted(v for v, _ in counts[c][:limit])) for c in cohorts)
    return CellCoding(arms, values)


def top_cohort_values(
    units: ir.Table, cohorts: Sequence[str], limit: int
) -> dict[str, list[str]] | None:
    """The ``limit`` most common values of each cohort column (None: all within limit)."""
    if not cohorts:
        return None
    counts = cohort_counts(units, cohorts)
    kept = {c: [v for v, _ in counts[c][:limit]] for c in cohorts if len(counts[c]) > limit}
    return kept or None


# --------------------------------------------------------------------------- results

MOMENT_NAMES = [name for name, _ in MOMENTS]


@dataclass(frozen=True)
class UnitStats:
    """Sufficient statistics per (metric, arm, cohort dimension, cohort value).

    ``table`` (Arrow) has one row per key with ``kind`` (mean/ratio), ``n`` and the sums
    ``sum_<moment>`` (x: value or numerator, y: denominator, c/d: their pre-period
    covariates; null where not applicable), plus ``zero_den`` (units with y = 0).
    The all-units rows have ``dimension = value = "(all)"``.
    """

    experiment: str
    exposures: ExposureSummary
    table: pa.Table
    dimensions: tuple[str, ...] = field(default_factory=tuple)

    def rows(self) -> list[dict[str, Any]]:
        return self.table.to_pylist()  # type: ignore[no-any-return]

    def get(
        self, metric: str, arm: str, dimension: str = ALL, value: str = ALL
    ) -> MeanStats | RatioStats | CupedMeanStats | CupedRatioStats:
        """The stats engine's sufficient statistics for one key (see :func:`to_stats`)."""
        for row in self.rows():
            if (row["metric"], row["arm"], row["dimension"], row["value"]) == (
                metric,
                arm,
                dimension,
                value,
            ):
                return to_stats(row)
        raise KeyError(f"no statistics for metric={metric!r} arm={arm!r} {dimension}={value!r}")

    def all_stats(
        self,
    ) -> dict[tuple[str, str, str, str], MeanStats | RatioStats | CupedMeanStats | CupedRatioStats]:
        return {
            (r["metric"], r["arm"], r["dimension"], r["value"]): to_stats(r) for r in self.rows()
        }


def to_stats(row: Mapping[str, Any]) -> MeanStats | RatioStats | CupedMeanStats | CupedRatioStats:
    """Build :mod:`tripwire.stats` sufficient statistics from one :class:`UnitStats` row.

    Mean metrics give :class:`MeanStats` (or :class:`CupedMeanStats` with a pre-period);
    ratio metrics :class:`RatioStats` (or :class:`CupedRatioStats`).
    """
    s: dict[str, Any] = {m: row.get(f"sum_{m}") for m in MOMENT_NAMES}
    n = row["n"]
    covariate = s["c"] is not None
    if row["kind"] == "mean":
        if covariate:
            return CupedMeanStats(n, s["x"], s["xx"], s["c"], s["cc"], s["xc"])
        return MeanStats(n, s["x"], s["xx"])
    if covariate:
        return CupedRatioStats(
            n, s["x"], s["xx"], s["y"], s["yy"], s["xy"],
            s["c"], s["cc"], s["d"], s["dd"], s["cd"],
            s["xc"], s["xd"], s["yc"], s["yd"],
        )  # fmt: skip
    return RatioStats(n, s["x"], s["xx"], s["y"], s["yy"], s["xy"])


def _moment_scale(plan: StatsPlan, m: MetricVariables, parts: tuple[str, ...]) -> int:
    scale = 1
    for part in parts:
        scale *= plan.variable_scale(m.x if part in ("x", "c") else m.y or ())
    return scale


def _to_int(value: Any) -> int:
    """Engine sums are integral (``DECIMAL(38, 0)`` or integers): convert exactly."""
    return 0 if value is None else int(value)


def collect(
    cells: pa.Table,
    counts: Mapping[int, int],
    plan: StatsPlan,
    coding: CellCoding,
    dimension_names: Sequence[str],
) -> pa.Table:
    """Roll exact per-cell sums up to the all-units total and to each cohort dimension's
    marginals, and convert to floats once (sum / scale).

    ``cells`` has one row per cell with units that have events (:func:`moments_expr`);
    ``counts`` is the number of units per cell, with or without events.
    """
    moments = moment_columns(plan)
    index = {factors: f"__p{i}" for i, factors in enumerate(sorted(set(moments.values())))}
    by_cell = {int(row[CELL]): row for row in cells.to_pylist()}
    totals: dict[tuple[str, str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for cell, n in counts.items():
        arm, labels = coding.decode(cell)
        row = by_cell.get(cell, {})
        sums = {name: _to_int(row.get(index[factors])) for name, factors in moments.items()}
        sums["n"] = n
        for m in plan.metrics:
            if m.y is not None:
                sums[f"{m.metric}__zero_den"] = n - _to_int(row.get(f"{m.metric}__nonzero_den"))
        targets = [(arm, ALL, ALL)]
        targets += [(arm, name, label) for name, label in zip(dimension_names, labels, strict=True)]
        for target in targets:
            bucket = totals[target]
            for key, amount in sums.items():
                bucket[key] += amount
    records: list[dict[str, Any]] = []
    for (arm, dimension, value), sums in sorted(totals.items()):
        for m in plan.metrics:
            record: dict[str, Any] = {
                "metric": m.metric,
                "arm": arm,
                "dimension": dimension,
                "value": value,
                "kind": m.kind,
                "n": int(sums["n"]),
            }
            for moment, parts in MOMENTS:
                name = f"{m.metric}__{moment}"
                record[f"sum_{moment}"] = (
                    float(sums[name] / _moment_scale(plan, m, parts))
                    if name in sums or _present(plan, m, parts)
                    else None
                )
            record["zero_den"] = int(sums[f"{m.metric}__zero_den"]) if m.y is not None else None
            records.append(record)
    return pa.Table.from_pylist(records, schema=RESULT_SCHEMA)


def _present(plan: StatsPlan, m: MetricVariables, parts: tuple[str, ...]) -> bool:
    needs_y = any(p in ("y", "d") for p in parts)
    needs_pre = any(p in ("c", "d") for p in parts)
    return (not needs_y or m.y is not None) and (not needs_pre or bool(plan.pre_period_days))


RESULT_SCHEMA = pa.schema(
    [
        pa.field("metric", pa.string()),
        pa.field("arm", pa.string()),
        pa.field("dimension", pa.string()),
        pa.field("value", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("n", pa.int64()),
        *[pa.field(f"sum_{m}", pa.float64()) for m in MOMENT_NAMES],
        pa.field("zero_den", pa.int64()),
    ]
)


def analysed_units(exposed: ir.Table) -> ir.Table:
    """The analysed population: units exposed to exactly one arm."""
    return exposed.filter(exposed.n_arms == 1)


def cohort_columns(dimensions: Sequence[str]) -> list[str]:
    return [f"d{i}" for i in range(len(dimensions))]


def coded_units(
    units: ir.Table, dimensions: Sequence[str], max_cohort_values: int
) -> tuple[ir.Table, CellCoding]:
    """Each unit of ``units`` (``unit_id``, ``t0``) with its cohort cell code (:data:`CELL`)
    and a unique integer index (:data:`INDEX`), and the coding (one query).

    Only what the per-unit scan and the cell counts read: the arm and cohort columns are
    in the cell code, and a narrower table is cheaper to cache (5M units: ~1 CPU-s).
    """
    cohorts = cohort_columns(dimensions)
    coding = cell_coding(units, cohorts, max_cohort_values)
    coded = units.select(
        units[UNIT],
        units.t0,
        **{CELL: coding.expr(units, cohorts), INDEX: ibis.row_number()},
    )
    return coded, coding


def _splits_products(table: ir.Table) -> bool:
    """Whether the engine sums ``BIGINT`` in 128 bits (DuckDB), see :func:`_product_sum`."""
    try:
        return table._find_backend().name == "duckdb"  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001 - unbound or multi-backend expressions: stay generic
        return False


def compute_from_units(
    per_unit: ir.Table,
    units: ir.Table,
    plan: StatsPlan,
    *,
    experiment: str,
    summary: ExposureSummary,
    dimensions: Sequence[str],
    max_cohort_values: int,
    coding: CellCoding | None = None,
) -> UnitStats:
    """Moments query + roll-up, shared by the full and the incremental paths.

    ``per_unit`` (``unit_id`` and the component columns; units without events may be
    absent) carries :data:`CELL` when it was computed from ``units`` already coded
    (:func:`coded_units`, pass its ``coding``); otherwise the cells are attached here.
    """
    if coding is None or CELL not in units.columns:
        units, coding = coded_units(units, dimensions, max_cohort_values)
    if CELL not in per_unit.columns:
        cells_of = units.select(__u=units[UNIT], **{CELL: units[CELL]})
        per_unit = per_unit.inner_join(cells_of, per_unit[UNIT] == cells_of["__u"]).drop("__u")
    counts = {
        int(r[CELL]): int(r["n"])
        for r in units.group_by(CELL).aggregate(n=units.count()).to_pyarrow().to_pylist()
    }
    cells = moments_expr(per_unit, plan, split=_splits_products(per_unit)).to_pyarrow()
    table = collect(cells, counts, plan, coding, dimensions)
    return UnitStats(experiment, summary, table, tuple(dimensions))


def unit_stats(
    events: ir.Table,
    experiment: str,
    metrics: Sequence[MetricBase],
    *,
    dimensions: Sequence[str] = (),
    analysis_window: timedelta | None = None,
    pre_period_days: int | None = None,
    unit: str = "user",
    sources: Sequence[ExposureSource] = (DEFAULT_SOURCE,),
    max_cohort_values: int = 20,
) -> UnitStats:
    """Sufficient statistics of ``metrics`` for ``experiment``'s exposed units.

    ``dimensions`` are cohort fields read from each unit's first exposure event (e.g.
    ``locale``, ``device``, ``context.traits.tenure``); each keeps its ``max_cohort_values``
    most common values, the rest become ``(other)``. ``pre_period_days`` enables CUPED
    covariates (each metric's own value over that many days before the exposure day).

    On a DuckDB lake the exposures read only the exposure events' partitions and the
    outcome scan only the partitions of the events the metrics read
    (:func:`tripwire.store.engine.narrow_events`).
    """
    if unit not in UNIT_COLUMNS and "." not in unit:
        raise UnitStatsError(f"unit must be one of {sorted(UNIT_COLUMNS)} or a field, got {unit!r}")
    plan = plan_metrics(
        metrics, analysis_window=analysis_window, pre_period_days=pre_period_days, unit=unit
    )
    exposure_events = narrow_events(events, {s.event for s in sources})
    exposed = resolve_exposures(
        events if exposure_events is None else exposure_events,
        experiment,
        sources=sources,
        dimensions=dimensions,
    )
    # (materialized by resolve_exposures: the queries below read it several times)
    summary = summarize(exposed, experiment)
    units, coding = coded_units(analysed_units(exposed), dimensions, max_cohort_values)
    # read by the per-unit and the cell-count queries: number and code the units once
    units = units.cache()
    names = events_read(plan)
    narrowed = None if names is None else narrow_events(events, names)
    per_unit = per_unit_components(events, units, plan, scan=narrowed)
    return compute_from_units(
        per_unit,
        units,
        plan,
        experiment=experiment,
        summary=summary,
        dimensions=dimensions,
        max_cohort_values=max_cohort_values,
        coding=coding,
    )
