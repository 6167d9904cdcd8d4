"""Scalar metric time series against an independent pandas computation.

Every scalar type (count, sum, mean per event and per unit, proportion with and without a
population, ratio of counts/sums/distincts, exact quantile, distinct units) is computed
by :func:`tripwire.metrics.timeseries.timeseries` on a random hand-built lake and by pandas
on the same events kept as plain rows; edge cases: late events (counted at event time),
events outside the range, null dimensions, zero denominators (null value, never NaN),
empty periods, top-N + ``(other)`` and an explicit value list, filled buckets.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tripwire.metrics.definitions import Predicate, parse_metric
from tripwire.metrics.timeseries import OTHER, Query, timeseries
from tripwire.store.engine import connect_lake

from . import random_lake as rl

METRICS = [
    {"name": "turns", "type": "count", "events": "Turn Completed"},
    {"name": "revenue", "type": "sum", "events": "Order Completed", "value": "properties.revenue"},
    {
        "name": "latency_mean",
        "type": "mean",
        "events": "Turn Completed",
        "value": "properties.latency_ms",
    },
    {"name": "turns_per_user", "type": "mean", "per": "unit", "events": "Turn Completed"},
    {"name": "purchasers", "type": "proportion", "events": "Order Completed"},
    {
        "name": "rated_down",
        "type": "ratio",
        "numerator": {"events": "Turn Completed", "where": {"properties.thumbs": "down"}},
        "denominator": {
            "events": "Turn Completed",
            "where": [{"field": "properties.thumbs", "op": "not_null"}],
        },
    },
    {
        "name": "session_conversion",
        "type": "ratio",
        "numerator": {"events": "Order Completed", "agg": "distinct", "value": "session_id"},
        "denominator": {"events": "Session Started", "agg": "distinct", "value": "session_id"},
    },
    {
        "name": "aov",
        "type": "ratio",
        "numerator": {"events": "Order Completed", "agg": "sum", "value": "properties.revenue"},
        "denominator": {"events": "Order Completed"},
    },
    {
        "name": "p90",
        "type": "quantile",
        "events": "Turn Completed",
        "value": "properties.latency_ms",
        "q": 0.9,
    },
    {"name": "users", "type": "distinct"},
    {
        "name": "late_share",
        "type": "ratio",
        "numerator": {"where": [{"field": "lateness_seconds", "op": "gt", "value": 3600}]},
        "denominator": {},
    },
    {
        "name": "escalated_search",
        "type": "count",
        "events": "Turn Completed",
        "where": [
            {"field": "properties.escalated", "op": "eq", "value": True},
            {"field": "properties.intent", "op": "in", "value": ["product_search", "returns"]},
        ],
    },
]
POPULATION = {
    "name": "ordering_sessions_users",
    "type": "proportion",
    "events": "Order Completed",
    "population": {"events": "Session Started"},
}


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, pd.DataFrame]:
    rows = rl.random_rows(seed=11, users=60, days=3)
    path = tmp_path_factory.mktemp("lake")
    rl.write(path, rows)
    frame = pd.DataFrame(
        {
            "event": [r.event for r in rows],
            "user": [r.user for r in rows],
            "session": [r.session for r in rows],
            "ts": [r.ts for r in rows],
            "received": [r.received for r in rows],
            "locale": [r.locale for r in rows],
            "revenue": [r.props.get("revenue") for r in rows],
            "latency": [r.props.get("latency_ms") for r in rows],
            "thumbs": [r.props.get("thumbs") for r in rows],
            "escalated": [r.props.get("escalated") for r in rows],
            "intent": [r.props.get("intent") for r in rows],
        }
    )
    return connect_lake(path), frame


def _reference(df: pd.DataFrame, name: str) -> tuple[float | None, float | None, float | None]:
    """(numerator, denominator, value) of one metric over the rows of one slice."""
    turns = df[df.event == "Turn Completed"]
    orders = df[df.event == "Order Completed"]
    if name == "turns":
        return len(turns), None, len(turns)
    if name == "revenue":
        return orders.revenue.sum(), None, orders.revenue.sum()
    if name == "latency_mean":
        return _ratio(turns.latency.sum(), turns.latency.count())
    if name == "turns_per_user":
        return _ratio(len(turns), df.user.dropna().nunique())
    if name == "purchasers":
        return _ratio(orders.user.dropna().nunique(), df.user.dropna().nunique())
    if name == "ordering_sessions_users":
        started = set(df[df.event == "Session Started"].user.dropna())
        ordered = set(orders.user.dropna())
        return _ratio(len(ordered & started), len(started))
    if name == "rated_down":
        rated = turns[turns.thumbs.notna()]
        return _ratio((rated.thumbs == "down").sum(), len(rated))
    if name == "session_conversion":
        started = df[df.event == "Session Started"].session.dropna().nunique()
        return _ratio(orders.session.dropna().nunique(), started)
    if name == "aov":
        return _ratio(orders.revenue.sum(), len(orders))
    if name == "p90":
        values = turns.latency.dropna().to_numpy()
        q = float(np.quantile(values, 0.9)) if values.size else None  # linear = quantile_cont
        return None, len(values), q
    if name == "users":
        n = df.user.dropna().nunique()
        return n, None, n
    if name == "late_share":
        late = ((df.received - df.ts) > timedelta(hours=1)).sum()
        return _ratio(late, len(df))
    if name == "escalated_search":
        hit = turns[(turns.escalated == True) & turns.intent.isin(["product_search", "returns"])]  # noqa: E712
        return len(hit), None, len(hit)
    raise AssertionError(name)


def _ratio(num: float, den: float) -> tuple[float, float, float | None]:
    return float(num), float(den), (float(num) / float(den) if den else None)


def _close(actual: Any, expected: Any) -> bool:
    if expected is None or (isinstance(expected, float) and math.isnan(expected)):
        return actual is None
    return actual is not None and math.isclose(actual, float(expected), rel_tol=1e-9, abs_tol=1e-9)


def _check(result_table: Any, frame: pd.DataFrame, name: str, keys: list[str]) -> None:
    rows = result_table.to_pylist()
    assert rows, f"{name}: no rows"
    for row in rows:
        assert all(v is None or not (isinstance(v, float) and math.isnan(v)) for v in row.values())
        mask = pd.Series(True, index=frame.index)
        if "bucket" in keys:
            start = row["bucket"]
            mask &= (frame.ts >= start) & (
                frame.ts < start + timedelta(hours=1 if "hour" in keys else 24)
            )
        if "locale" in keys:
            mask &= frame.locale.isna() if row["locale"] is None else frame.locale == row["locale"]
        num, den, value = _reference(frame[mask], name)
        assert _close(row["numerator"], num), (name, row, num)
        assert _close(row["denominator"], den), (name, row, den)
        assert _close(row["value"], value), (name, row, value)


def test_every_scalar_type_by_day_and_locale_matches_pandas(lake: tuple[Any, pd.DataFrame]) -> None:
    backend, frame = lake
    metrics = [parse_metric(m) for m in [*METRICS, POPULATION]]
    results = timeseries(backend, metrics, Query(grain="day", dimensions=("locale",)))
    assert set(results) == {m.name for m in metrics}
    for metric in metrics:
        table = results[metric.name].table
        assert table.column_names == ["bucket", "locale", "numerator", "denominator", "value"]
        _check(table, frame, metric.name, ["bucket", "locale"])
    # null locale is a slice of its own, not dropped or folded into (other)
    assert None in results["turns"].table["locale"].to_pylist()


def test_totals_without_grain_and_range_excludes_outside_events(
    lake: tuple[Any, pd.DataFrame],
) -> None:
    backend, frame = lake
    start = rl.T0 + timedelta(hours=20)
    end = rl.T0 + timedelta(hours=50)
    metrics = [parse_metric(m) for m in METRICS]
    results = timeseries(backend, metrics, Query(grain=None, start=start, end=end))
    inside = frame[(frame.ts >= start) & (frame.ts < end)]
    for metric in metrics:
        (row,) = results[metric.name].table.to_pylist()
        num, den, value = _reference(inside, metric.name)
        assert _close(row["numerator"], num) and _close(row["denominator"], den), metric.name
        assert _close(row["value"], value), metric.name


def test_late_events_count_at_event_time(tmp_path: Path) -> None:
    happened = rl.T0 + timedelta(hours=1, minutes=30)
    rows = [
        rl.Row(
            "Turn Completed",
            "u1",
            "s1",
            happened,
            happened + timedelta(hours=30),
            "en-US",
            "web",
            "app",
        ),
        rl.Row("Turn Completed", "u2", "s2", happened, happened, "en-US", "web", "app"),
    ]
    rl.write(tmp_path, rows)
    backend = connect_lake(tmp_path)
    metrics = [parse_metric(METRICS[0]), parse_metric(METRICS[10])]
    results = timeseries(backend, metrics, Query(grain="hour"))
    (turns,) = results["turns"].table.to_pylist()
    assert turns["bucket"] == rl.T0 + timedelta(hours=1) and turns["numerator"] == 2
    (late,) = results["late_share"].table.to_pylist()
    assert (late["numerator"], late["denominator"], late["value"]) == (1.0, 2.0, 0.5)


def test_zero_denominator_gives_null_value_and_empty_period_gives_empty_table(
    lake: tuple[Any, pd.DataFrame],
) -> None:
    backend, _ = lake
    rated = parse_metric(METRICS[5])
    # a slice with turns but none rated: filter to a user's unrated turns via --where
    results = timeseries(
        backend,
        [rated, parse_metric(METRICS[0])],
        Query(grain=None, where=(Predicate(field="properties.thumbs", op="is_null"),)),
    )
    (row,) = results["rated_down"].table.to_pylist()
    assert row["denominator"] == 0 and row["value"] is None
    empty = timeseries(
        backend,
        [parse_metric(m) for m in METRICS],
        Query(
            grain="hour",
            dimensions=("locale",),
            start=datetime(2030, 1, 1, tzinfo=UTC),
            end=datetime(2030, 1, 2, tzinfo=UTC),
        ),
    )
    for result in empty.values():
        assert result.is_empty
        assert result.table.column_names == [
            "bucket",
            "locale",
            "numerator",
            "denominator",
            "value",
        ]


def test_fill_adds_missing_buckets_with_zero_counts(tmp_path: Path) -> None:
    rows = [
        rl.Row(
            "Turn Completed",
            "u1",
            "s1",
            rl.T0 + timedelta(hours=h),
            rl.T0 + timedelta(hours=h),
            "en-US",
            "web",
            "app",
            {"resolved": True},
        )
        for h in (0, 3)
    ]
    rl.write(tmp_path, rows)
    backend = connect_lake(tmp_path)
    rate = parse_metric(
        {
            "name": "res",
            "type": "ratio",
            "numerator": {"where": {"properties.resolved": True}},
            "denominator": {},
        }
    )
    count = parse_metric(METRICS[0])
    query = Query(grain="hour", start=rl.T0, end=rl.T0 + timedelta(hours=5), fill=True)
    results = timeseries(backend, [count, rate], query)
    assert results["turns"].table["numerator"].to_pylist() == [1, 0, 0, 1, 0]
    assert results["turns"].table["value"].to_pylist() == [1, 0, 0, 1, 0]
    assert results["res"].table["value"].to_pylist() == [1, None, None, 1, None]
    assert results["res"].table["denominator"].to_pylist() == [1, 0, 0, 1, 0]


def test_top_n_folds_the_rest_into_other_and_explicit_lists(lake: tuple[Any, pd.DataFrame]) -> None:
    backend, frame = lake
    turns = parse_metric(METRICS[0])
    results = timeseries(backend, [turns], Query(grain=None, dimensions=("locale",), top_n=2))
    table = {r["locale"]: r["numerator"] for r in results["turns"].table.to_pylist()}
    scanned = frame[frame.event == "Turn Completed"]
    volume = scanned.locale.value_counts()
    top = sorted(volume.index, key=lambda v: (-volume[v], v))[:2]
    assert set(table) == {*top, OTHER, None}
    for value in top:
        assert table[value] == volume[value]
    assert table[OTHER] == scanned.locale.notna().sum() - sum(volume[v] for v in top)
    explicit = timeseries(
        backend,
        [turns],
        Query(grain=None, dimensions=("locale",), dimension_values={"locale": ("ja-JP",)}),
    )
    kept = {r["locale"]: r["numerator"] for r in explicit["turns"].table.to_pylist()}
    assert set(kept) <= {"ja-JP", OTHER, None}
    assert kept["ja-JP"] == volume["ja-JP"]
    assert sum(kept.values()) == len(scanned)


@pytest.mark.parametrize("seed", [3])
def test_partition_pruned_scans_equal_the_whole_lake_scan(tmp_path: Path, seed: int) -> None:
    """The fast path (each scan reads only its metrics' event partitions) gives the same
    tables as the reference path (the same compiled metrics over a plain ``events`` view
    of the whole lake), on random lakes, with dimensions, top-N, filters and a funnel."""
    import ibis

    from tripwire.store.lake import create_events_view

    rows = rl.random_rows(seed=seed, users=40, days=3)
    rl.write(tmp_path, rows[: len(rows) // 2])
    rl.write(tmp_path, rows[len(rows) // 2 :])
    fast = connect_lake(tmp_path)
    reference = ibis.duckdb.connect()
    reference.raw_sql("SET lambda_syntax = 'ENABLE_SINGLE_ARROW'")
    create_events_view(reference.con, tmp_path)  # no lake registered: whole-table scans
    funnel = {
        "name": "order_funnel",
        "type": "funnel",
        "steps": ["Session Started", "Turn Completed", "Order Completed"],
    }
    retention = {
        "name": "return2",
        "type": "retention",
        "days": [0, 2],
        "start": {"events": ["Session Started"]},
        "returning": {"events": ["Order Completed"]},
    }
    metrics = [parse_metric(m) for m in [*METRICS, POPULATION, funnel, retention]]
    queries = [
        Query(grain="hour", dimensions=("locale", "device")),
        Query(grain="day", dimensions=("properties.intent",), top_n=2),
        Query(grain=None, where=(Predicate(field="locale", op="eq", value="de-DE"),)),
    ]
    for query in queries:
        got = timeseries(fast, metrics, query)
        want = timeseries(reference, metrics, query)
        for metric in metrics:
            keys = [c for c in want[metric.name].table.column_names if c in ("bucket", "step")]
            keys += list(query.dimensions)
            order = [(k, "ascending") for k in keys]
            a = got[metric.name].table
            b = want[metric.name].table
            assert a.schema == b.schema, metric.name
            if order:
                a, b = a.sort_by(order), b.sort_by(order)
            assert a.to_pylist() == b.to_pylist(), metric.name


def test_top_n_read_from_the_series_equals_the_pre_pass(
    lake: tuple[Any, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a metric of every event, the scalar series stand in for the top-N pre-pass:
    same tables as with the pre-pass, which runs only when a dimension has more than N
    values (then the series are computed again, folded)."""
    from tripwire.metrics import timeseries as ts

    backend, _ = lake
    metrics = [parse_metric(m) for m in METRICS]
    assert any(ts.event_names_read(m) is None for m in metrics)
    queries = [
        Query(grain="day", dimensions=("locale", "device")),  # few values: no pre-pass
        Query(grain=None, dimensions=("locale",), top_n=2),  # more than N: folded
        Query(grain="hour", dimensions=("properties.intent", "locale"), top_n=3),
    ]
    pre_passes: list[Query] = []
    counted = ts._dimension_values

    def counting(*args: Any) -> Any:
        pre_passes.append(args[-1])
        return counted(*args)

    monkeypatch.setattr(ts, "_dimension_values", counting)
    for query in queries:
        ts._MANY_VALUES.clear()
        pre_passes.clear()
        got = timeseries(backend, metrics, query)
        folded = bool(pre_passes)
        assert folded == (query.top_n != ts.DEFAULT_TOP_N), query
        with monkeypatch.context() as m:
            m.setattr(ts, "_top_n_from_series", lambda *args: False)
            want = timeseries(backend, metrics, query)
        for metric in metrics:
            _assert_same_table(got[metric.name].table, want[metric.name].table)
        if folded:  # remembered: the next query counts the values first
            pre_passes.clear()
            again = timeseries(backend, metrics, query)
            assert len(pre_passes) == 1
            for metric in metrics:
                _assert_same_table(again[metric.name].table, want[metric.name].table)


def _assert_same_table(got: Any, want: Any) -> None:
    """Same schema and rows; doubles equal up to summation order (parallel float sums)."""
    assert got.schema == want.schema
    for a, b in zip(got.to_pylist(), want.to_pylist(), strict=True):
        for key, value in b.items():
            if isinstance(value, float):
                assert a[key] == pytest.approx(value, rel=1e-12, nan_ok=True), key
            else:
                assert a[key] == value, key
