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
    bucket_from_key,
    bucket_key,
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
    # Only groups with a step-1 event can enter the funnel: a semi-join keeps their rows
    # before the (costly) per-group lists are collected.
    entering = filter_condition(base, metric.steps[0])
    starters = (base.filter(entering) if entering is not None else base).select("__group")
    base = base.semi_join(starters.distinct(), "__group")

    # One pass: per group, the (sorted-free) list of each step's timestamps, and the
    # bucket/dimensions of its first step-1 event; then the greedy ordered match is a
    # chain of list expressions, t_k = min(x in list_k where x >= t_{k-1}).
    ts = base.timestamp
    step_conds = [filter_condition(base, step) for step in metric.steps]
    first_cond = step_conds[0]
    keys: dict[str, ir.Value] = {}
    time_bucket = bucket_key(base, grain)  # an integer on DuckDB: see bucket_from_key
    if time_bucket is not None:
        keys["__bucket"] = time_bucket
    for i, ref in enumerate(dimensions):
        kept = (dimension_values or {}).get(ref)
        keys[f"__dim{i}"] = fold_other(dimension(base, ref), kept)
    lists = {f"__l{i}": ts.collect(where=cond) for i, cond in enumerate(step_conds)}
    firsts = {name: expr.argmin(ts, where=first_cond) for name, expr in keys.items()}
    reached = base.group_by("__group").aggregate(**lists, **firsts)
    reached = reached.filter(reached["__l0"].length() > 0)
    reached = reached.mutate(t0=reached["__l0"].mins())
    for index in range(1, len(metric.steps)):
        previous = reached[f"t{index - 1}"]
        start_time = reached["t0"]

        def after(
            x: ir.Value, previous: ir.Value = previous, start_time: ir.Value = start_time
        ) -> ir.Value:
            ok = x >= previous
            if isinstance(metric.within, timedelta):
                ok = ok & (x <= start_time + interval(metric.within))
            return ok

        reached = reached.mutate(**{f"t{index}": reached[f"__l{index}"].filter(after).mins()})
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
    if "bucket" in result.columns:
        result = result.mutate(bucket=bucket_from_key(result["bucket"], grain))
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
