"""Ordered funnels: how many sessions (or units) reach each step, and where they stop.

A *group* is a session (``within: session``) or a unit with a time limit (``within: 1h``:
steps must happen within that long after the group's first step-1 event). Step 1 is
reached at the group's first step-1 event; step k at the earliest step-k event at or
after the time step k-1 was reached (the greedy earliest match, which reaches as far as
any ordering of the events allows). In window mode each unit has one attempt, starting
at its first step-1 event in the range.

The group's time bucket and dimensions are those of its first step-1 event. Results are
long: one row per (bucket, dimensions, step) with ``entered`` (groups reaching the step),
``step_conversion`` (entered / entered at the previous step), ``overall_conversion``
(entered / entered at step 1) and ``stopped`` (groups whose last step is this one).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import ibis
import ibis.expr.types as ir
import pyarrow as pa
import pyarrow.compute as pc

from tripwire.metrics.compile import (
    Grain,
    _and,
    bucket,
    dimension,
    filter_condition,
    fold_other,
    interval,
    time_filter,
    unit_key,
)
from tripwire.metrics.definitions import FunnelMetric

FUNNEL_COLUMNS = (
    "step",
    "step_name",
    "entered",
    "step_conversion",
    "overall_conversion",
    "stopped",
)


def _group_key(metric: FunnelMetric, table: ir.Table) -> ir.Value:
    return table.session_id if metric.within == "session" else unit_key(table, metric.unit)


def funnel_expr(
    metric: FunnelMetric,
    table: ir.Table,
    *,
    grain: Grain | None = None,
    dimensions: Sequence[str] = (),
    start: datetime | None = None,
    end: datetime | None = None,
    dimension_values: dict[str, Sequence[str]] | None = None,
    extra: ir.BooleanValue | None = None,
) -> ir.Table:
    """Wide per-slice counts: ``reached_0`` … ``reached_{k-1}`` by bucket and dimensions."""
    names: set[str] = set()
    for step in metric.steps:
        names.update(step.events)
    every_step_named = all(step.events for step in metric.steps)
    base_condition = _and(
        [
            time_filter(table, start, end),
            table.event.isin(sorted(names)) if every_step_named else None,
            filter_condition(table, metric),
            extra,
        ]
    )
    base = table.filter(base_condition) if base_condition is not None else table
    group = _group_key(metric, base)
    base = base.mutate(__group=group).filter(ibis._["__group"].notnull())

    first_cond = filter_condition(base, metric.steps[0])
    first_events = base.filter(first_cond) if first_cond is not None else base
    keys: dict[str, ir.Value] = {}
    time_bucket = bucket(first_events, grain)
    if time_bucket is not None:
        keys["__bucket"] = time_bucket
    for i, ref in enumerate(dimensions):
        kept = (dimension_values or {}).get(ref)
        keys[f"__dim{i}"] = fold_other(dimension(first_events, ref), kept)
    ts = first_events.timestamp
    first = first_events.group_by("__group").aggregate(
        t0=ts.min(), **{name: expr.argmin(ts) for name, expr in keys.items()}
    )
    reached = first
    previous = first.select("__group", t_prev=first.t0, t_start=first.t0)
    for index, step in enumerate(metric.steps[1:], start=1):
        cond = filter_condition(base, step)
        candidates = (base.filter(cond) if cond is not None else base).select(
            "__group", ts=base.timestamp
        )
        joined = previous.join(candidates, "__group")
        ok = joined.ts >= joined.t_prev
        if isinstance(metric.within, timedelta):
            ok = ok & (joined.ts <= joined.t_start + interval(metric.within))
        step_times = (
            joined.filter(ok)
            .group_by("__group")
            .aggregate(t=ibis._.ts.min(), t_start=ibis._.t_start.min())
        )
        previous = step_times.select("__group", t_prev=step_times.t, t_start=step_times.t_start)
        reached = reached.left_join(
            step_times.select("__group", **{f"t{index}": step_times.t}), "__group"
        ).drop("__group_right")
    aggregates = {
        f"reached_{i}": reached[f"t{i}"].count().cast("int64") for i in range(len(metric.steps))
    }
    group_by = [reached[k] for k in keys]
    result = (
        reached.group_by(group_by).aggregate(**aggregates)
        if group_by
        else reached.aggregate(**aggregates)
    )
    renames = {"bucket": "__bucket"} if "__bucket" in keys else {}
    renames.update({ref: f"__dim{i}" for i, ref in enumerate(dimensions)})
    result = result.rename(renames) if renames else result
    order = [c for c in ("bucket", *dimensions) if c in result.columns]
    return result.order_by(order) if order else result


def funnel_long(metric: FunnelMetric, wide: pa.Table, keys: Sequence[str]) -> pa.Table:
    """Wide ``reached_i`` counts → one row per step with conversions and stops.

    Conversions are null (not NaN) when the previous step had no groups.
    """
    steps = len(metric.steps)
    columns: dict[str, list[pa.Array]] = {name: [] for name in (*keys, *FUNNEL_COLUMNS)}
    n = wide.num_rows
    first = wide["reached_0"]
    for i, step in enumerate(metric.steps):
        entered = wide[f"reached_{i}"]
        prev = wide[f"reached_{i - 1}"] if i else entered
        after = wide[f"reached_{i + 1}"] if i + 1 < steps else pa.array([0] * n, pa.int64())
        for key in keys:
            columns[key].append(wide[key].combine_chunks() if n else pa.array([], wide[key].type))
        columns["step"].append(pa.array([i + 1] * n, pa.int64()))
        columns["step_name"].append(pa.array([step.label] * n, pa.string()))
        columns["entered"].append(entered.combine_chunks())
        columns["step_conversion"].append(_safe_divide(entered, prev))
        columns["overall_conversion"].append(_safe_divide(entered, first))
        columns["stopped"].append(pc.subtract(entered, after).combine_chunks())
    arrays = {
        name: pa.concat_arrays(parts) if parts else pa.array([]) for name, parts in columns.items()
    }
    table = pa.table(arrays)
    sort = [(k, "ascending") for k in keys] + [("step", "ascending")]
    return table.sort_by(sort)


def _safe_divide(numerator: pa.ChunkedArray, denominator: pa.ChunkedArray) -> pa.Array:
    num = pc.cast(numerator, pa.float64())
    den = pc.cast(denominator, pa.float64())
    zero = pc.equal(den, 0.0)
    return pc.if_else(zero, pa.scalar(None, pa.float64()), pc.divide(num, den)).combine_chunks()
