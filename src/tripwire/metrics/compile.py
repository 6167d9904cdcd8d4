"""Metric definitions → Ibis expressions (engine-neutral; DuckDB or Spark runs them).

The building blocks here are shared by every consumer of definitions:

* :func:`filter_condition` — an :class:`EventFilter` as a boolean expression;
* :func:`unit_key` — the unit column (user, anonymous id, session, or a property);
* :func:`slice_aggregates` — a scalar metric's aggregates for any grouping (time bucket ×
  dimensions): ``numerator``, ``denominator`` (and the quantile itself), so that a group of
  metrics is computed in **one query** (:func:`timeseries_expr`: one grouped scan, or one
  per event family, :func:`aggregate_families`);
* :func:`unit_aggregates` — a per-unit metric's components (``x``, and ``y`` for ratios)
  when grouped by unit, for experiment sufficient statistics.

Output columns of scalar metrics (one convention for monitors, RCA and the CLI):

=============  ===============================  =================================
type           numerator                        denominator
=============  ===============================  =================================
count          matching events                  null
sum            Σ value                          null
distinct       distinct units                   null
mean (event)   Σ value                          events with a value
mean (unit)    Σ value (or events)              distinct active units
proportion     distinct units that did X        distinct units in the population
ratio          Σ numerator measure              Σ denominator measure
quantile       null                             events with a value
=============  ===============================  =================================

``value`` is ``numerator`` for additive metrics, ``numerator / denominator`` (null when the
denominator is 0, never NaN) for the others, and the quantile for quantile metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import reduce
from typing import Any, Literal, TypeAlias, TypeVar

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir

from tripwire.metrics.definitions import (
    UNIT_COLUMNS,
    CountMetric,
    DistinctMetric,
    EventFilter,
    FunnelMetric,
    MeanMetric,
    Measure,
    MetricBase,
    Predicate,
    ProportionMetric,
    QuantileMetric,
    RatioMetric,
    RetentionMetric,
    SumMetric,
)
from tripwire.store.engine import Kind, field_kind, resolve_field

Grain = Literal["minute", "hour", "day"]
GRAIN_UNITS: dict[str, str] = {"minute": "m", "hour": "h", "day": "D"}
ADDITIVE_TYPES = ("count", "sum", "distinct")
OTHER = "(other)"


class NotScalarMetric(TypeError):
    """Funnels and retention have their own result shapes (see funnel.py, retention.py)."""


def _literal_kind(value: object) -> Kind:
    if isinstance(value, list):
        return _literal_kind(value[0]) if value else "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "double"
    return "string"


def predicate(table: ir.Table, pred: Predicate) -> ir.BooleanValue:
    """One predicate as a boolean expression (JSON values typed from the literal)."""
    column = field(table, pred.field, _literal_kind(pred.value))
    value = pred.value
    micros = _lateness_micros(table, pred)
    if micros is not None:  # the same comparison on whole microseconds, exactly
        column, value = micros
    if pred.op == "is_null":
        return column.isnull()
    if pred.op == "not_null":
        return column.notnull()
    if pred.op == "in":
        return column.isin(value)  # type: ignore[arg-type]
    if pred.op == "not_in":
        return ~column.isin(value)  # type: ignore[arg-type]
    ops = {
        "eq": column.__eq__,
        "ne": column.__ne__,
        "gt": column.__gt__,
        "ge": column.__ge__,
        "lt": column.__lt__,
        "le": column.__le__,
    }
    return ops[pred.op](value)  # type: ignore[no-any-return]


_COMPARISONS = ("eq", "ne", "gt", "ge", "lt", "le")


def _lateness_micros(table: ir.Table, pred: Predicate) -> tuple[ir.Value, int] | None:
    """``lateness_seconds <op> v`` as ``received_at − timestamp`` in integer microseconds
    against ``v × 10⁶`` on DuckDB, when ``v`` is a whole number of microseconds.

    The elapsed microseconds are exact integers, so the comparison is the exact one; the
    double seconds of :func:`field` round each epoch first (~0.2 µs at today's epoch) and
    cost more per row (the data-health scan compares every event's lateness).
    """
    value = pred.value
    if pred.field != "lateness_seconds" or pred.op not in _COMPARISONS:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not _on_duckdb(table):
        return None
    micros = float(value) * 1_000_000
    if not micros.is_integer():
        return None
    return epoch_us(table.received_at) - epoch_us(table.timestamp), int(micros)


def _and(parts: Iterable[ir.BooleanValue | None]) -> ir.BooleanValue | None:
    kept = [p for p in parts if p is not None]
    return reduce(lambda a, b: a & b, kept) if kept else None


def filter_condition(table: ir.Table, flt: EventFilter) -> ir.BooleanValue | None:
    """``event IN (...) AND where...`` for a filter; None when it selects every event."""
    parts: list[ir.BooleanValue | None] = []
    if flt.events:
        parts.append(table.event.isin(flt.events))
    parts += [predicate(table, p) for p in flt.where]
    return _and(parts)


def _cond(table: ir.Table, *filters: EventFilter) -> ir.BooleanValue | None:
    return _and(filter_condition(table, f) for f in filters)


def _count(table: ir.Table, cond: ir.BooleanValue | None) -> ir.Scalar:
    return (table.count(where=cond) if cond is not None else table.count()).cast("float64")  # type: ignore[no-any-return]


def unit_key(table: ir.Table, unit: str) -> ir.Value:
    """The unit id column: ``user`` → user_id, ``anonymous``, ``session``, or a field."""
    if unit in UNIT_COLUMNS:
        return table[UNIT_COLUMNS[unit]]
    return field(table, unit, "string")


def value_field(table: ir.Table, ref: str) -> ir.NumericValue:
    """A numeric value field (JSON values extracted as double, booleans as 0/1)."""
    column = field(table, ref, "double")
    if field_kind(table, ref) == "boolean":
        return column.cast("int64").cast("float64")  # type: ignore[no-any-return]
    return column.cast("float64")  # type: ignore[no-any-return]


def event_names_read(metric: MetricBase) -> set[str] | None:
    """The event names a metric reads (None: it needs every event)."""
    filters: list[EventFilter] = []
    if isinstance(metric, RatioMetric):
        filters = [metric.numerator, metric.denominator]
        if metric.events:
            return set(metric.events)
    elif isinstance(metric, ProportionMetric):
        filters = [metric, metric.population or EventFilter()]
    elif isinstance(metric, MeanMetric) and metric.per == "unit":
        return None  # the denominator is every active unit
    elif isinstance(metric, FunnelMetric):
        if metric.events:
            return set(metric.events)
        filters = list(metric.steps)
    elif isinstance(metric, RetentionMetric):
        filters = [metric.start, metric.returning]
    else:
        filters = [metric]
    names: set[str] = set()
    for flt in filters:
        if not flt.events:
            return None
        names.update(flt.events)
    return names


@dataclass(frozen=True)
class DistinctCount:
    """``COUNT(DISTINCT subject) FILTER (WHERE where)``, left for the caller to plan.

    :func:`timeseries_expr` computes all distinct counts of one subject (e.g. user_id) in
    a single two-level aggregation (per slice × subject, then per slice), far cheaper on
    large data than one hash set per distinct aggregate. With ``approximate``, the count is
    the engine's HyperLogLog sketch instead (DuckDB ``approx_count_distinct``, Spark
    ``approx_count_distinct``), a plain aggregate planned like any other.
    """

    subject: ir.Value
    where: ir.BooleanValue | None = None
    approximate: bool = False

    def scalar(self) -> ir.Scalar:
        """The plain ``nunique`` (or, approximate, ``approx_nunique``) aggregate."""
        if self.approximate:
            return self.subject.approx_nunique(where=self.where).cast("float64")  # type: ignore[no-any-return]
        return self.subject.nunique(where=self.where).cast("float64")  # type: ignore[no-any-return]


@dataclass(frozen=True)
class SharedQuantile:
    """The ``index``-th quantile of ``quantiles`` (one aggregate computing several ``q`` of
    the same values: DuckDB sorts each group's values once, not once per ``q``)."""

    quantiles: ir.ArrayValue
    index: int


Aggregate: TypeAlias = ir.Scalar | DistinctCount | SharedQuantile


def _measure(
    table: ir.Table, measure: Measure, cond: ir.BooleanValue | None, approximate: bool = False
) -> Aggregate:
    if measure.agg == "count":
        return _count(table, cond)
    assert measure.value is not None
    if measure.agg == "sum":
        return value_field(table, measure.value).sum(where=cond).coalesce(0).cast("float64")
    return DistinctCount(field(table, measure.value, "string"), cond, approximate)


def _scalar(aggregate: Aggregate) -> ir.Scalar:
    return aggregate.scalar() if isinstance(aggregate, DistinctCount) else aggregate


def slice_aggregates(
    metric: MetricBase,
    table: ir.Table,
    *,
    approximate: bool = False,
    sketch_quantiles: bool | None = None,
) -> dict[str, Aggregate]:
    """``numerator``/``denominator`` (and ``value`` for quantiles) of a scalar metric.

    Valid under any grouping of ``table`` (the caller groups by bucket and dimensions).
    Distinct counts come back as :class:`DistinctCount` (call ``.scalar()`` for a plain
    aggregate). ``approximate`` (the opt-in mode for large data) makes every distinct
    count a HyperLogLog estimate and every quantile the engine's sketch, as a quantile
    metric's own ``approximate: true`` does; counts and sums stay exact.
    ``sketch_quantiles`` (default: ``approximate``) decides the quantiles on their own:
    the mode allows estimates, so a caller may keep the exact quantile where it is the
    cheaper of the two (a metric's own ``approximate: true`` always sketches).
    """
    if sketch_quantiles is None:
        sketch_quantiles = approximate
    if isinstance(metric, CountMetric):
        return {"numerator": _count(table, _cond(table, metric))}
    if isinstance(metric, SumMetric):
        num = value_field(table, metric.value).sum(where=_cond(table, metric)).coalesce(0)
        return {"numerator": num.cast("float64")}
    if isinstance(metric, DistinctMetric):
        unit = unit_key(table, metric.unit)
        return {"numerator": DistinctCount(unit, _cond(table, metric), approximate)}
    if isinstance(metric, MeanMetric):
        cond = _cond(table, metric)
        if metric.per == "event":
            assert metric.value is not None
            value = value_field(table, metric.value)
            return {
                "numerator": value.sum(where=cond).coalesce(0).cast("float64"),
                "denominator": value.count(where=cond).cast("float64"),
            }
        unit = unit_key(table, metric.unit)
        num = (
            value_field(table, metric.value).sum(where=cond).coalesce(0).cast("float64")
            if metric.value
            else _count(table, cond)
        )
        return {
            "numerator": num,
            "denominator": DistinctCount(unit, None, approximate),
        }
    if isinstance(metric, ProportionMetric):
        unit = unit_key(table, metric.unit)
        did = _cond(table, metric)
        population = _cond(table, metric.population or EventFilter())
        return {
            "numerator": DistinctCount(unit, did, approximate),
            "denominator": DistinctCount(unit, population, approximate),
        }
    if isinstance(metric, RatioMetric):
        return {
            "numerator": _measure(
                table, metric.numerator, _cond(table, metric, metric.numerator), approximate
            ),
            "denominator": _measure(
                table, metric.denominator, _cond(table, metric, metric.denominator), approximate
            ),
        }
    if isinstance(metric, QuantileMetric):
        cond = _cond(table, metric)
        value = value_field(table, metric.value)
        quantile = (
            value.approx_quantile(metric.q, where=cond)
            if metric.approximate or sketch_quantiles
            else value.quantile(metric.q, where=cond)
        )
        return {
            "value": quantile.cast("float64"),
            "denominator": value.count(where=cond).cast("float64"),
        }
    raise NotScalarMetric(
        f"metric {metric.name!r} is a {metric.type}: use tripwire.metrics.funnel/retention"
    )


def value_expression(metric: MetricBase, table: ir.Table) -> ir.Value:
    """``value`` from a table that has ``numerator``/``denominator`` (null on 0 denominators)."""
    if isinstance(metric, QuantileMetric):
        return table.value
    if metric.type in ADDITIVE_TYPES:
        return table.numerator
    return ibis.ifelse(table.denominator == 0, ibis.null(), table.numerator / table.denominator)


def unit_aggregates(metric: MetricBase, table: ir.Table) -> dict[str, ir.Scalar]:
    """Per-unit components when ``table`` is grouped by the unit: ``x`` (and ``y``).

    count → events; sum → Σ value; distinct/proportion → 1 if the unit did X else 0;
    mean (per unit) → Σ value or events (per event: Σ value in ``x``, events in ``y``);
    ratio → ``x`` = numerator, ``y`` = denominator (the delta method's components).
    Units with no matching events must be filled with 0 by the caller (left join from
    the population of units, e.g. the exposed ones).
    """
    if isinstance(metric, CountMetric):
        return {"x": _count(table, _cond(table, metric))}
    if isinstance(metric, SumMetric):
        return {
            "x": value_field(table, metric.value)
            .sum(where=_cond(table, metric))
            .coalesce(0)
            .cast("float64")
        }
    if isinstance(metric, DistinctMetric | ProportionMetric):
        did = _count(table, _cond(table, metric))
        return {"x": ibis.ifelse(did > 0, 1.0, 0.0)}
    if isinstance(metric, MeanMetric):
        cond = _cond(table, metric)
        if metric.per == "event":
            assert metric.value is not None
            value = value_field(table, metric.value)
            return {
                "x": value.sum(where=cond).coalesce(0).cast("float64"),
                "y": value.count(where=cond).cast("float64"),
            }
        if metric.value:
            return {
                "x": value_field(table, metric.value).sum(where=cond).coalesce(0).cast("float64")
            }
        return {"x": _count(table, cond)}
    if isinstance(metric, RatioMetric):
        return {
            "x": _scalar(_measure(table, metric.numerator, _cond(table, metric, metric.numerator))),
            "y": _scalar(
                _measure(table, metric.denominator, _cond(table, metric, metric.denominator))
            ),
        }
    raise NotScalarMetric(f"metric {metric.name!r} ({metric.type}) has no per-unit form")


def interval(delta: timedelta) -> ir.IntervalScalar:
    """An interval literal (whole seconds, or milliseconds when finer)."""
    millis = round(delta.total_seconds() * 1000)
    if millis % 1000 == 0:
        return ibis.interval(seconds=millis // 1000)
    return ibis.interval(milliseconds=millis)


def time_filter(
    table: ir.Table, start: datetime | None, end: datetime | None
) -> ir.BooleanValue | None:
    """``start <= timestamp < end`` (either bound optional)."""
    parts: list[ir.BooleanValue | None] = []
    if start is not None:
        parts.append(table.timestamp >= start)
    if end is not None:
        parts.append(table.timestamp < end)
    return _and(parts)


def bucket(
    table: ir.Table, grain: Grain | None, ts: ir.TimestampValue | None = None
) -> ir.TimestampValue | None:
    """The time bucket column (``ts``, default ``table.timestamp``, truncated to the grain)."""
    if grain is None:
        return None
    if grain not in GRAIN_UNITS:
        raise ValueError(f"grain must be one of {', '.join(GRAIN_UNITS)}, got {grain!r}")
    column = table.timestamp if ts is None else ts
    return column.truncate(GRAIN_UNITS[grain])  # type: ignore[arg-type, no-any-return]


GRAIN_SECONDS: dict[str, int] = {"minute": 60, "hour": 3600, "day": 86400}


_UTC_TIMESTAMP = dt.Timestamp(timezone="UTC")


@ibis.udf.scalar.builtin(name="epoch_us")
def epoch_us(ts: _UTC_TIMESTAMP) -> dt.int64:  # type: ignore[empty-body, valid-type]
    """DuckDB's microseconds since the epoch (a plain integer read of the timestamp)."""


@ibis.udf.scalar.builtin(name="epoch")
def _epoch(ts: _UTC_TIMESTAMP) -> dt.float64:  # type: ignore[empty-body, valid-type]
    """DuckDB's seconds since the epoch of a ``TIMESTAMPTZ`` (microseconds / 10⁶)."""


def field(table: ir.Table, ref: str, kind: Kind | None = None) -> ir.Value:
    """:func:`~tripwire.store.engine.resolve_field`, compiled for the engine at hand.

    On DuckDB, ``lateness_seconds`` is ``epoch(received_at) - epoch(timestamp)``: the
    portable form casts each ``TIMESTAMPTZ`` to a local ``TIMESTAMP`` first, a calendar
    conversion that made the data-health scan of every event ~4× dearer per row (6.8 of
    ~31 CPU-s of the catalog at 20M events). In a UTC session both give the same double
    (µs / 10⁶ each); in any time zone this one is the true elapsed time.
    """
    if ref == "lateness_seconds" and _on_duckdb(table):
        return (_epoch(table.received_at) - _epoch(table.timestamp)).cast("float64")
    return resolve_field(table, ref, kind)


def _on_duckdb(table: ir.Table) -> bool:
    try:
        return bool(table._find_backend(use_default=False).name == "duckdb")
    except Exception:  # unbound tables (SQL rendering) and other engines
        return False


def bucket_key(
    table: ir.Table, grain: Grain | None, ts: ir.TimestampValue | None = None
) -> ir.Value | None:
    """A group key equivalent to :func:`bucket` that is cheaper to compute per row.

    On DuckDB, ``floor(epoch µs / grain µs)`` (an integer; truncating a ``TIMESTAMPTZ``
    goes through the calendar and costs ~4× more per row), turned back into the bucket's
    start by :func:`bucket_from_key` once per group. UTC grains of a minute, an hour or a
    day are whole multiples of the epoch, so both give the same buckets. Elsewhere the
    truncated timestamp itself. ``ts`` (default ``table.timestamp``) is the UTC timestamp
    column of ``table`` to bucket, e.g. a per-unit first time.
    """
    if grain is None or not _on_duckdb(table):
        return bucket(table, grain, ts)
    if grain not in GRAIN_SECONDS:
        raise ValueError(f"grain must be one of {', '.join(GRAIN_UNITS)}, got {grain!r}")
    column = table.timestamp if ts is None else ts
    micros = GRAIN_SECONDS[grain] * 1_000_000
    return (epoch_us(column) / micros).floor().cast("int64")


def bucket_from_key(key: ir.Value, grain: Grain | None) -> ir.Value:
    """The bucket's start (UTC timestamp) from a :func:`bucket_key` value."""
    if grain is None or not key.type().is_integer():
        return key
    return (key * GRAIN_SECONDS[grain]).as_timestamp("s")  # type: ignore[attr-defined, no-any-return]


def fold_other(column: ir.StringValue, kept: Sequence[str] | None) -> ir.StringValue:
    """Values outside ``kept`` become ``(other)`` (nulls stay null); None keeps all."""
    if kept is None:
        return column
    return ibis.ifelse(column.isin(list(kept)) | column.isnull(), column, ibis.literal(OTHER))


def dimension(table: ir.Table, ref: str) -> ir.StringValue:
    """A dimension as a string column (booleans/numbers cast for uniform slicing)."""
    return field(table, ref, "string").cast("string")  # type: ignore[no-any-return]


def scan_filter(
    metrics: Sequence[MetricBase], table: ir.Table, start: datetime | None, end: datetime | None
) -> ir.BooleanValue | None:
    """The WHERE of a shared scan: the time range and the union of the events read."""
    names: set[str] | None = set()
    for metric in metrics:
        read = event_names_read(metric)
        if read is None:
            names = None
            break
        assert names is not None
        names |= read
    parts = [time_filter(table, start, end)]
    if names is not None:
        parts.append(table.event.isin(sorted(names)))
    return _and(parts)


def slice_keys(
    base: ir.Table,
    grain: Grain | None,
    dimensions: Sequence[str] = (),
    dimension_values: dict[str, Sequence[str]] | None = None,
) -> dict[str, ir.Value]:
    """Group keys: ``bucket`` (when a grain is given) and each dimension by its reference.

    ``dimension_values`` maps a dimension to the values kept; the rest become ``(other)``.
    """
    keys: dict[str, ir.Value] = {}
    time_bucket = bucket_key(base, grain)
    if time_bucket is not None:
        keys["bucket"] = time_bucket
    for ref in dimensions:
        keys[ref] = fold_other(dimension(base, ref), (dimension_values or {}).get(ref))
    return keys


def needs_own_scan(metric: MetricBase) -> bool:
    """Proportions with a population need a per-unit pass (did X *and* in population)."""
    return isinstance(metric, ProportionMetric) and metric.population is not None


def _with_values(metrics: Sequence[MetricBase], grouped: ir.Table) -> ir.Table:
    values: dict[str, ir.Value] = {}
    null = ibis.null().cast("float64")
    for metric in metrics:
        parts = {
            part: grouped[f"{metric.name}__{part}"]
            if f"{metric.name}__{part}" in grouped.columns
            else null
            for part in ("numerator", "denominator")
        }
        values[f"{metric.name}__numerator"] = parts["numerator"]
        values[f"{metric.name}__denominator"] = parts["denominator"]
        if isinstance(metric, QuantileMetric):
            values[f"{metric.name}__value"] = grouped[f"{metric.name}__value"]
        elif metric.type in ADDITIVE_TYPES:
            values[f"{metric.name}__value"] = parts["numerator"]
        else:
            values[f"{metric.name}__value"] = ibis.ifelse(
                parts["denominator"] == 0, null, parts["numerator"] / parts["denominator"]
            ).cast("float64")
    return grouped.mutate(**values)


#: An event family: the event names a group of aggregates reads (None: every event).
EventSet: TypeAlias = frozenset[str] | None


def timeseries_expr(
    metrics: Sequence[MetricBase],
    table: ir.Table,
    *,
    grain: Grain | None,
    dimensions: Sequence[str] = (),
    start: datetime | None = None,
    end: datetime | None = None,
    dimension_values: dict[str, Sequence[str]] | None = None,
    source: Callable[[EventSet], ir.Table] | None = None,
    approximate: bool = False,
    day_source: Callable[[EventSet], Sequence[ir.Table]] | None = None,
    exact_quantiles: Callable[[EventSet], bool] | None = None,
) -> ir.Table:
    """One query computing every metric's ``<name>__numerator``/``__denominator``/``__value``.

    Grouped by the :func:`slice_keys`. A metric for which :func:`needs_own_scan` holds
    must be the only one passed (it is computed in two levels: per unit, then per slice).

    With ``source`` (event names → a table holding at least those events' rows, e.g. only
    their lake partitions), the aggregates are split by *event family* (the event names
    each numerator/denominator reads, :func:`aggregate_families`): each family is one
    grouped scan of its own events only, and its aggregates no longer test the event name
    per row; the families' slices are then stacked and merged. Each aggregate sees exactly
    the rows it saw in the single scan over ``table``, so the numbers are the same; the
    rows are the slices where any event the metrics read occurs, as in the single scan.

    ``approximate`` estimates distinct counts and quantiles with sketches (see
    :func:`slice_aggregates`); a proportion with a population stays exact (its per-unit
    pass needs each unit's "did X and in population", which no sketch gives).
    ``exact_quantiles`` (with ``source``: event names → True) keeps a family's quantiles
    exact in that mode, which allows estimates but does not require them: the caller
    decides where the exact quantile is the cheaper one (see
    :data:`tripwire.metrics.timeseries.EXACT_QUANTILE_MAX_ROWS`).

    ``day_source`` (with ``source`` and a grain: event names → the same rows as
    ``source`` gives, one table per UTC day, e.g. each day's lake partitions) splits the
    exact distinct counts' first level by day: a time bucket never spans two UTC days,
    so each (bucket, slice, unit) pair is found in one day's rows only, and the per-day
    pairs are simply stacked before they are counted per slice. Same counts; each day's
    hash table is a fourteenth of a fortnight's (see :func:`_grouped_parts`).
    """
    if any(needs_own_scan(m) for m in metrics):
        if len(metrics) != 1:
            raise ValueError("a proportion with a population is computed in its own scan")
        condition = scan_filter(metrics, table, start, end)
        base = table.filter(condition) if condition is not None else table
        keys = slice_keys(base, grain, dimensions, dimension_values)
        grouped = _proportion_two_level(metrics[0], base, keys)  # type: ignore[arg-type]
    elif source is None:
        condition = scan_filter(metrics, table, start, end)
        base = table.filter(condition) if condition is not None else table
        keys = slice_keys(base, grain, dimensions, dimension_values)
        aggregates: dict[str, Aggregate] = {}
        for metric in metrics:
            for part, expr in slice_aggregates(metric, base, approximate=approximate).items():
                aggregates[f"{metric.name}__{part}"] = expr
        grouped = _merge(_grouped_parts(base, keys, aggregates), list(keys), aggregates)
    else:
        key_names, grouped = _family_scans(
            metrics,
            source,
            grain,
            dimensions,
            start,
            end,
            dimension_values,
            approximate,
            day_source if grain is not None else None,
            exact_quantiles,
        )
        keys = dict.fromkeys(key_names)
    result = _with_values(metrics, grouped)
    if "bucket" in keys:
        result = result.mutate(bucket=bucket_from_key(result["bucket"], grain))
    return result.order_by(list(keys)) if keys else result


def _events_of(*filters: EventFilter) -> EventSet:
    """The event names rows must have to pass all ``filters`` (None: any event)."""
    named = [frozenset(f.events) for f in filters if f.events]
    return reduce(lambda a, b: a & b, named) if named else None


def aggregate_families(metric: MetricBase) -> dict[str, EventSet]:
    """The event family of each of a scalar metric's aggregates (see :func:`slice_aggregates`).

    ``numerator``/``denominator``/``value`` → the event names its condition requires
    (None: any event, e.g. the active units of a per-unit mean or of a proportion).
    """
    own = _events_of(metric)
    if isinstance(metric, RatioMetric):
        return {
            "numerator": _events_of(metric, metric.numerator),
            "denominator": _events_of(metric, metric.denominator),
        }
    if isinstance(metric, ProportionMetric):
        population = _events_of(metric.population) if metric.population else None
        return {"numerator": own, "denominator": population}
    if isinstance(metric, MeanMetric) and metric.per == "unit":
        return {"numerator": own, "denominator": None}
    parts = ("value", "denominator") if isinstance(metric, QuantileMetric) else (
        ("numerator", "denominator") if isinstance(metric, MeanMetric) else ("numerator",)
    )  # fmt: skip
    return dict.fromkeys(parts, own)


def _without_events(metric: MetricBase) -> MetricBase:
    """The metric with no event-name conditions (its family's scan keeps only those rows)."""
    update: dict[str, Any] = {"events": []}
    for side in ("numerator", "denominator", "population"):
        flt = getattr(metric, side, None)
        if isinstance(flt, EventFilter):
            update[side] = flt.model_copy(update={"events": []})
    return metric.model_copy(update=update)


def _family_scans(
    metrics: Sequence[MetricBase],
    source: Callable[[EventSet], ir.Table],
    grain: Grain | None,
    dimensions: Sequence[str],
    start: datetime | None,
    end: datetime | None,
    dimension_values: dict[str, Sequence[str]] | None,
    approximate: bool = False,
    day_source: Callable[[EventSet], Sequence[ir.Table]] | None = None,
    exact_quantiles: Callable[[EventSet], bool] | None = None,
) -> tuple[list[str], ir.Table]:
    """Every metric's aggregates, one grouped scan per event family, merged per slice
    (exact distinct counts by day with ``day_source``, exact quantiles in the approximate
    mode with ``exact_quantiles``: see :func:`timeseries_expr`)."""
    families: dict[EventSet, list[tuple[MetricBase, str]]] = {}
    covered: set[str] | None = set()
    for metric in metrics:
        for part, family in aggregate_families(metric).items():
            if family is not None and not family:  # contradictory names: no row matches
                family = None  # computed on every event with the full condition
            families.setdefault(family, []).append((metric, part))
            if family is None or covered is None:
                covered = None
            else:
                covered |= family
    if covered is not None:
        read: set[str] = set()
        for metric in metrics:
            read |= event_names_read(metric) or set()
        if read - covered:  # slices of events read by no aggregate (e.g. a ratio's events)
            families.setdefault(frozenset(read - covered), [])
    parts: list[ir.Table] = []
    aggregates: dict[str, Aggregate] = {}
    key_names: list[str] = []
    for family, members in families.items():
        table = source(family)
        condition = _and(
            [
                time_filter(table, start, end),
                table.event.isin(sorted(family)) if family is not None else None,
            ]
        )
        base = table.filter(condition) if condition is not None else table
        keys = slice_keys(base, grain, dimensions, dimension_values)
        key_names = list(keys)
        quantiles = any(isinstance(metric, QuantileMetric) for metric, _ in members)
        sketch = approximate and not (
            quantiles and exact_quantiles is not None and exact_quantiles(family)
        )
        mine: dict[str, Aggregate] = {}
        for metric, part in members:
            stripped = _without_events(metric) if family is not None else metric
            aggregates_of = slice_aggregates(
                stripped, base, approximate=approximate, sketch_quantiles=sketch
            )
            mine[f"{metric.name}__{part}"] = aggregates_of[part]
        if _on_duckdb(base):
            mine.update(
                _shared_quantiles(members, base, stripped=family is not None, approximate=sketch)
            )
        aggregates.update(mine)
        days = day_source(family) if day_source is not None else None
        parts += _grouped_parts(base, keys, mine, (table, days) if days else None)
    return key_names, _merge(parts, key_names, aggregates, fill_zero=True)


def _grouped_parts(
    base: ir.Table,
    keys: dict[str, ir.Value],
    aggregates: dict[str, Aggregate],
    by_day: tuple[ir.Table, Sequence[ir.Table]] | None = None,
) -> list[ir.Table]:
    """Plain aggregates in one grouped scan; exact distinct counts of a subject under
    several conditions in two levels (per slice × subject, then per slice). Approximate
    distinct counts are plain aggregates (one sketch per slice).

    ``by_day`` (the table ``base`` filters, and the same rows split by UTC day) computes
    every exact distinct count in two levels with the first level run per day (the
    slices' buckets must not span days): see :func:`timeseries_expr`."""
    plain: dict[str, Any] = {
        k: v for k, v in aggregates.items() if not isinstance(v, DistinctCount | SharedQuantile)
    }
    distinct = {
        k: v for k, v in aggregates.items() if isinstance(v, DistinctCount) and not v.approximate
    }
    plain.update(
        {
            k: v.scalar()
            for k, v in aggregates.items()
            if isinstance(v, DistinctCount) and v.approximate
        }
    )
    by_subject: dict[Any, dict[str, DistinctCount]] = {}
    for name, count in distinct.items():
        by_subject.setdefault(count.subject.op(), {})[name] = count
    for subject_op, counts in list(by_subject.items()):
        if by_day is not None:
            break  # every subject in two levels, the first one per day
        if len({None if c.where is None else c.where.op() for c in counts.values()}) == 1:
            # one condition: a plain COUNT(DISTINCT), cheaper than two levels
            plain.update({name: c.scalar() for name, c in counts.items()})
            del by_subject[subject_op]
    shared = {k: v for k, v in aggregates.items() if isinstance(v, SharedQuantile)}
    arrays: dict[Any, str] = {}
    for share in shared.values():
        arrays.setdefault(share.quantiles.op(), f"__quantiles{len(arrays)}")
        plain[arrays[share.quantiles.op()]] = share.quantiles
    parts: list[ir.Table] = []
    if not aggregates:  # only the slices (events read by no aggregate)
        parts.append(base.select(**keys).distinct() if keys else base.limit(0).select())
    elif plain or not distinct:
        part = base.group_by(**keys).aggregate(**plain) if keys else base.aggregate(**plain)
        if shared:
            part = part.mutate(
                **{
                    name: part[arrays[share.quantiles.op()]][share.index]
                    for name, share in shared.items()
                }
            ).drop(*arrays.values())
        parts.append(part)
    for counts in by_subject.values():
        subject = next(iter(counts.values())).subject
        conditions = [c.where for c in counts.values()]
        # A count without a condition counts every (slice, subject) pair: no flag needed
        flags = {
            name: _count(base, c.where) > 0 for name, c in counts.items() if c.where is not None
        }
        level1_keys = {**keys, "__subject": subject}
        rows = base
        if all(c is not None for c in conditions):  # rows matching none count for nothing
            rows = base.filter(reduce(lambda a, b: a | b, conditions))  # type: ignore[operator, arg-type]
            flags = {k: _rebase(v, base, rows) for k, v in flags.items()}
            level1_keys = {k: _rebase(v, base, rows) for k, v in level1_keys.items()}
        level1 = (
            rows.group_by(**level1_keys).aggregate(**flags)
            if flags
            else rows.select(**level1_keys).distinct()
        )
        level1 = level1.filter(level1["__subject"].notnull())
        sums = {
            name: level1[name].cast("int64").sum().cast("float64")
            if name in flags
            else level1.count().cast("float64")
            for name in counts
        }
        counted = (
            level1.group_by(list(keys)).aggregate(**sums) if keys else level1.aggregate(**sums)
        )
        if by_day is not None:  # each day's slices are its own: the days' counts are stacked
            whole, days = by_day
            daily = [_rebase(counted, whole, day) for day in days]
            counted = daily[0] if len(daily) == 1 else ibis.union(*daily, distinct=False)
        parts.append(counted)
    return parts


def _shared_quantiles(
    members: Sequence[tuple[MetricBase, str]],
    base: ir.Table,
    *,
    stripped: bool,
    approximate: bool = False,
) -> dict[str, Aggregate]:
    """Quantiles of the same value under the same condition, as one aggregate each.

    DuckDB's ``quantile_cont(x, [q1, q2, …])`` gives each ``q`` exactly the value of
    ``quantile_cont(x, q)`` (same sort, same interpolation). Approximate quantiles (the
    metric's ``approximate`` or the query's) share one t-digest the same way,
    ``approx_quantile(x, [q1, q2, …])``: one sketch per group costs ~1/3 of three (the
    digest's inserts dominate; measured on 7.4 M turns by hour × locale × device).
    """
    groups: dict[tuple[Any, ...], list[QuantileMetric]] = {}
    for metric, part in members:
        if isinstance(metric, QuantileMetric) and part == "value":
            where = tuple(p.model_dump_json() for p in metric.where)
            events = () if stripped else tuple(sorted(metric.events))
            sketch = metric.approximate or approximate
            groups.setdefault((sketch, metric.value, where, events), []).append(metric)
    shared: dict[str, Aggregate] = {}
    for group in groups.values():
        if len(group) < 2:
            continue
        first = _without_events(group[0]) if stripped else group[0]
        assert isinstance(first, QuantileMetric)
        value = value_field(base, first.value)
        qs, condition = [m.q for m in group], _cond(base, first)
        if first.approximate or approximate:
            quantiles = value.approx_quantile(qs, where=condition)
        else:
            quantiles = value.quantile(qs, where=condition)
        for index, metric in enumerate(group):
            shared[f"{metric.name}__value"] = SharedQuantile(quantiles, index)  # type: ignore[arg-type]
    return shared


_E = TypeVar("_E", bound=ir.Expr)


def _rebase(expr: _E, old: ir.Table, new: ir.Table) -> _E:
    """``expr`` (built on ``old``) reading the same columns of ``new`` (a filter of it, or
    a table of the same schema)."""
    return expr.op().replace({old.op(): new.op()}).to_expr()  # type: ignore[no-any-return]


def _merge(
    parts: list[ir.Table],
    keys: list[str],
    aggregates: dict[str, Aggregate],
    *,
    fill_zero: bool = False,
) -> ir.Table:
    """The parts stacked (UNION ALL, each part filling only its own columns) and merged per
    slice with MAX, which keeps null keys (e.g. a null locale) as one slice.

    A slice missing from a part gets 0 for that part's distinct counts (and, with
    ``fill_zero``, for its counts and sums too: parts scanning different events see
    different slices); a quantile stays null.
    """
    distinct = {k for k, v in aggregates.items() if isinstance(v, DistinctCount)}
    if len(parts) == 1 and not distinct:
        return parts[0]
    columns = list(aggregates)
    null = ibis.null().cast("float64")
    stacked = [
        part.select(
            *[part[k] for k in keys],
            **{c: part[c].cast("float64") if c in part.columns else null for c in columns},
        )
        for part in parts
    ]
    union = stacked[0] if len(stacked) == 1 else ibis.union(*stacked, distinct=False)
    zero = distinct | ({c for c in columns if not c.endswith("__value")} if fill_zero else set())
    merged = {c: union[c].max().coalesce(0.0) if c in zero else union[c].max() for c in columns}
    if not merged:
        return union.select(*keys).distinct() if keys else union.limit(1)
    return union.group_by(keys).aggregate(**merged) if keys else union.aggregate(**merged)


def _proportion_two_level(
    metric: ProportionMetric, base: ir.Table, keys: dict[str, ir.Value]
) -> ir.Table:
    """Units that did X and are in the population, per slice, over population units."""
    unit = unit_key(base, metric.unit)
    did = _cond(base, metric)
    population = _cond(base, metric.population or EventFilter())
    per_unit = base.group_by(**keys, __unit=unit).aggregate(
        __did=_count(base, did) > 0, __in=_count(base, population) > 0
    )
    per_unit = per_unit.filter(per_unit["__unit"].notnull())
    slice_cols = [per_unit[k] for k in keys]
    aggregates = {
        f"{metric.name}__numerator": (per_unit["__did"] & per_unit["__in"])
        .cast("int64")
        .sum()
        .cast("float64"),
        f"{metric.name}__denominator": per_unit["__in"].cast("int64").sum().cast("float64"),
    }
    if slice_cols:
        return per_unit.group_by(slice_cols).aggregate(**aggregates)
    return per_unit.aggregate(**aggregates)


def compile_sql(expr: ir.Expr, dialect: str = "duckdb") -> str:
    """The SQL an expression compiles to (what ``tripwire metrics show`` prints)."""
    return str(ibis.to_sql(expr, dialect=dialect))
