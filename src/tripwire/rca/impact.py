"""Step 6 — quantify the impact.

Inside the localized segments (everything when the change is global):

    loss per day = ΔCR × affected units per day × AOV

where ΔCR is the baseline rate minus the current rate with its 95% interval (two-proportion
z test from :mod:`tripwire.stats`), affected units per day are the current window's
denominator scaled to a day, and AOV is the baseline average order value of the segment
(revenue / orders of ``Order Completed``; treated as known, so the interval reflects the
uncertainty of ΔCR only). Counts use expected − observed. Metrics that are not about
orders report the loss in the metric's own unit (e.g. unresolved turns) without money.
Customers affected are the distinct users of the segments in the window; the cumulative
loss since onset is summed per time bucket.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from ibis.backends import BaseBackend

from tripwire.metrics.compile import _and, event_names_read, predicate
from tripwire.metrics.definitions import MetricBase
from tripwire.rca.data import BUCKET, LeafTable, Window, metric_series, segment_where
from tripwire.stats import MeanStats, two_proportion_z_test
from tripwire.store.engine import events_table

ORDER_EVENT = "Order Completed"


@dataclass(frozen=True)
class Impact:
    unit: str  # what is lost: orders, turns resolved, …
    affected_units: float
    affected_units_per_day: float
    delta_rate: float
    delta_rate_low: float
    delta_rate_high: float
    lost_units: float
    aov: float | None
    loss_per_day: float | None
    loss_per_day_low: float | None
    loss_per_day_high: float | None
    customers_affected: int
    cumulative_starts: tuple[datetime, ...]
    cumulative_loss: tuple[float, ...]
    note: str


def _mask(leaves: LeafTable, segments: Sequence[Mapping[str, str]]) -> np.ndarray:
    if not segments:
        return np.ones(leaves.size, dtype=bool)
    mask = np.zeros(leaves.size, dtype=bool)
    for segment in segments:
        mask |= leaves.select(segment)
    return mask


def average_order_value(
    backend: BaseBackend, windows: Sequence[Window], where: Sequence
) -> float | None:
    table = events_table(backend)
    if "prop_revenue" not in table.columns:
        return None
    spans = _and([(table.timestamp >= w.start) & (table.timestamp < w.end) for w in windows[:1]])
    for w in windows[1:]:
        spans = spans | ((table.timestamp >= w.start) & (table.timestamp < w.end))
    condition = _and([table.event == ORDER_EVENT, spans, *[predicate(table, p) for p in where]])
    filtered = table.filter(condition)
    row = backend.to_pyarrow(
        filtered.aggregate(revenue=filtered.prop_revenue.sum(), orders=filtered.count())
    ).to_pylist()[0]
    if not row["orders"]:
        return None
    return float(row["revenue"]) / float(row["orders"])


def customers(backend: BaseBackend, metric: MetricBase, window: Window, where: Sequence) -> int:
    table = events_table(backend)
    names = sorted(event_names_read(metric) or [])
    condition = _and(
        [
            (table.timestamp >= window.start) & (table.timestamp < window.end),
            table.event.isin(names) if names else None,
            *[predicate(table, p) for p in where],
        ]
    )
    filtered = table.filter(condition) if condition is not None else table
    user = filtered.user_id.fill_null(filtered.anonymous_id)
    return int(backend.to_pyarrow(filtered.aggregate(n=user.nunique())).to_pylist()[0]["n"] or 0)


def estimate_impact(
    backend: BaseBackend,
    metric: MetricBase,
    baseline: LeafTable,
    current: LeafTable,
    segments: Sequence[Mapping[str, str]],
    window: Window,
    baselines: Sequence[Window],
    *,
    measurement_issue: bool = False,
) -> Impact:
    """The impact inside ``segments`` over ``window`` (see the module docstring)."""
    base, cur = baseline.aligned(current)
    mask = _mask(cur, segments)
    additive = metric.type in ("count", "sum", "distinct")
    per_day = timedelta(days=1) / window.duration
    reads_orders = ORDER_EVENT in (event_names_read(metric) or set())
    unit = "orders" if reads_orders else f"{metric.name} numerator"
    where_all = [segment_where(s, cur.dimensions) for s in segments] or [()]
    where = where_all[0]
    if additive:
        windows = float(base.denominator[0]) if base.size else 1.0
        expected = float(base.numerator[mask].sum()) / max(windows, 1.0)
        observed = float(cur.numerator[mask].sum())
        lost = expected - observed
        spread = float(np.sqrt(max(expected, 1.0)) * 1.96)
        delta, low, high = lost, lost - spread, lost + spread
        affected = observed
        rate0 = None
    else:
        bn, bd = float(base.numerator[mask].sum()), float(base.denominator[mask].sum())
        cn, cd = float(cur.numerator[mask].sum()), float(cur.denominator[mask].sum())
        rate0 = bn / bd if bd else 0.0
        if bd and cd and bn <= bd and cn <= cd:
            test = two_proportion_z_test(
                MeanStats.from_proportion(cd, cn), MeanStats.from_proportion(bd, bn)
            )
            delta = float(test.absolute.estimate)
            low, high = float(test.absolute.ci_low), float(test.absolute.ci_high)
        else:
            delta = rate0 - (cn / cd if cd else 0.0)
            low = high = delta
        affected = cd
        lost = delta * cd
    aov = average_order_value(backend, baselines, where) if reads_orders else None
    scale = per_day if not additive else per_day
    if additive:
        units_per_day = lost * scale
        money = (
            (units_per_day * aov, low * scale * aov, high * scale * aov)
            if aov
            else (None, None, None)
        )
    else:
        units_per_day = affected * scale
        money = (
            (delta * units_per_day * aov, low * units_per_day * aov, high * units_per_day * aov)
            if aov
            else (None, None, None)
        )
    series = metric_series(backend, metric, window, where, bucket=BUCKET)
    if additive:
        buckets = max(series.numerator.size, 1)
        per_bucket = (expected / buckets) - series.numerator
    else:
        per_bucket = (rate0 or 0.0) * series.denominator - series.numerator
    cumulative = np.cumsum(per_bucket * (aov if aov else 1.0))
    note = ""
    if measurement_issue:
        note = "measurement issue: these orders were placed (the ledger has them) but not reported; no revenue was lost"
        money = (0.0, 0.0, 0.0) if aov else (None, None, None)
    if len(where_all) > 1:
        note += (" " if note else "") + "cumulative series and AOV use the first segment"
    return Impact(
        unit=unit,
        affected_units=float(affected),
        affected_units_per_day=float(affected * per_day),
        delta_rate=float(delta),
        delta_rate_low=float(low),
        delta_rate_high=float(high),
        lost_units=float(lost),
        aov=aov,
        loss_per_day=money[0],
        loss_per_day_low=money[1],
        loss_per_day_high=money[2],
        customers_affected=customers(backend, metric, window, where),
        cumulative_starts=series.starts,
        cumulative_loss=tuple(float(x) for x in cumulative),
        note=note,
    )
