"""What investigations read: the focused lake (hot events in memory, the rest as Parquet)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import ibis.expr.types as ir
import numpy as np
import pyarrow as pa
import pytest

from tripwire.metrics.compile import timeseries_expr
from tripwire.metrics.definitions import (
    FunnelMetric,
    MetricBase,
    Predicate,
    events_read,
    parse_metric,
)
from tripwire.rca import data
from tripwire.rca.data import (
    BUCKET,
    WINDOW_COLUMN,
    LeafTable,
    Window,
    baseline_windows,
    fetch_windowed,
    focus_lake,
    funnel_series,
    metric_leaves,
    windowed_events,
)
from tripwire.store.engine import connect_lake
from tripwire.store.lake import write_events

T0 = datetime(2026, 11, 2, 12, tzinfo=UTC)


def _envelopes(n_days: int = 3) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for day in range(n_days):
        for i in range(30):
            ts = T0 + timedelta(days=day, minutes=i)
            for event, props in (
                ("Order Completed", {"revenue": float(i), "order_id": f"o{day}-{i}"}),
                ("Turn Completed", {"latency_ms": 100.0 + i, "resolved": i % 2 == 0}),
                ("$latency", {"stage": "asr", "ms": 10.0 * i}),
            ):
                out.append(
                    {
                        "messageId": f"{event}-{day}-{i}",
                        "type": "track",
                        "event": event,
                        "userId": f"u{i % 7}",
                        "timestamp": ts.isoformat(),
                        "receivedAt": (ts + timedelta(seconds=i)).isoformat(),
                        "properties": props,
                        "context": {"locale": "en-GB" if i % 3 else "de-DE"},
                        "source": "app",
                    }
                )
    return out


QUERY = (
    "SELECT event, locale, count(*) AS n, sum(prop_revenue) AS revenue, "
    "sum(prop_latency_ms) AS latency, sum(prop_ms) AS ms, min(timestamp) AS first "
    "FROM events WHERE timestamp >= '2026-11-03' GROUP BY ALL ORDER BY ALL"
)


@pytest.mark.parametrize(
    "hot", [None, {"Order Completed"}, {"Order Completed", "Turn Completed"}, set()]
)
def test_the_focused_view_reads_the_same_rows_whatever_is_materialised(
    tmp_path: Path, hot: set[str] | None
) -> None:
    write_events(tmp_path, _envelopes())
    plain = connect_lake(tmp_path)
    expected = plain.raw_sql(QUERY).fetchall()  # type: ignore[attr-defined]
    focused = connect_lake(tmp_path)
    materialised = focus_lake(focused, tmp_path, date(2026, 11, 2), date(2026, 11, 4), hot)
    assert materialised == (3 * 3 if hot is None else 3 * len(hot))
    assert focused.raw_sql(QUERY).fetchall() == expected  # type: ignore[attr-defined]
    # Ibis sees every column of every event (the union of both parts)
    assert {"prop_revenue", "prop_latency_ms", "prop_ms"} <= set(focused.table("events").columns)


def test_days_outside_the_focus_are_left_out(tmp_path: Path) -> None:
    write_events(tmp_path, _envelopes())
    backend = connect_lake(tmp_path)
    focus_lake(backend, tmp_path, date(2026, 11, 3), date(2026, 11, 3), {"Order Completed"})
    rows = backend.raw_sql(  # type: ignore[attr-defined]
        "SELECT event, count(*) FROM events GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert rows == [("$latency", 30), ("Order Completed", 30), ("Turn Completed", 30)]


def test_events_read_is_a_superset_or_none_for_any_event() -> None:
    ratio = parse_metric(
        {
            "name": "conversion",
            "type": "ratio",
            "numerator": {"events": ["Order Completed"]},
            "denominator": {"events": ["Session Started"]},
        }
    )
    assert events_read(ratio) == {"Order Completed", "Session Started"}
    open_side = parse_metric(
        {
            "name": "per_event",
            "type": "ratio",
            "numerator": {"events": ["Order Completed"]},
            "denominator": {},
        }
    )
    assert events_read(open_side) is None
    narrowed = parse_metric(
        {
            "name": "narrowed",
            "type": "ratio",
            "events": ["Turn Completed"],
            "numerator": {"where": {"properties.resolved": True}},
            "denominator": {},
        }
    )
    assert events_read(narrowed) == {"Turn Completed"}
    funnel = parse_metric(
        {"name": "f", "type": "funnel", "steps": ["Session Started", "Order Completed"]}
    )
    assert events_read(funnel) == {"Session Started", "Order Completed"}
    proportion = parse_metric(
        {
            "name": "p",
            "type": "proportion",
            "events": ["Order Completed"],
            "population": {"events": ["Session Started"]},
        }
    )
    assert events_read(proportion) == {"Order Completed", "Session Started"}
    retention = parse_metric({"name": "r", "type": "retention", "days": [7, 14]})
    assert events_read(retention) is None
    count_all = parse_metric({"name": "all", "type": "count"})
    assert events_read(count_all) is None


def _leaves_as_rows(leaves: dict[str, LeafTable]) -> dict[str, list[tuple[object, ...]]]:
    return {
        name: sorted(zip(*t.columns.values(), t.numerator, t.denominator, strict=True))
        for name, t in leaves.items()
    }


def test_reusable_windows_label_the_same_rows_and_compile_once(tmp_path: Path) -> None:
    write_events(tmp_path, _envelopes())
    backend = connect_lake(tmp_path)
    focus_lake(backend, tmp_path, date(2026, 11, 2), date(2026, 11, 4), {"Order Completed"})
    revenue = parse_metric(
        {
            "name": "revenue_per_order",
            "type": "ratio",
            "numerator": {
                "events": ["Order Completed"],
                "agg": "sum",
                "value": "properties.revenue",
            },
            "denominator": {"events": ["Order Completed"]},
            "dimensions": ["locale"],
        }
    )
    dims = ("locale",)
    compiled = data._COMPILED.setdefault(backend, {})
    for shift in (timedelta(0), timedelta(minutes=7)):  # two sets of windows, one query shape
        current = Window(T0 + timedelta(days=2) + shift, T0 + timedelta(days=2, minutes=20))
        windows = {"current": (current,), "baseline": baseline_windows(current, days=2)}
        reused = metric_leaves(backend, revenue, dims, windows)
        table = windowed_events(backend, windows)  # the CASE label, compiled every time
        assert "rca_windows_" not in backend.compile(table)  # type: ignore[attr-defined]
        expected = backend.to_pyarrow(
            timeseries_expr([revenue], table, grain=None, dimensions=(WINDOW_COLUMN, *dims))
        )
        assert _leaves_as_rows(reused) == _leaves_as_rows(
            _leaves_from(expected, revenue, dims, windows)
        )
        assert reused["current"].numerator.sum() == sum(range(int(shift.seconds / 60), 20))
    assert len(compiled) == 1


def _leaves_from(
    arrow: pa.Table,
    metric: MetricBase,
    dims: tuple[str, ...],
    windows: dict[str, tuple[Window, ...]],
) -> dict[str, LeafTable]:
    labels = arrow[WINDOW_COLUMN].to_pylist()
    out = {}
    for name in windows:
        rows = [i for i, label in enumerate(labels) if label == name]
        out[name] = LeafTable(
            dims,
            {d: np.array([arrow[d][i].as_py() for i in rows], dtype=object) for d in dims},
            np.array([arrow[f"{metric.name}__numerator"][i].as_py() for i in rows], dtype=float),
            np.array([arrow[f"{metric.name}__denominator"][i].as_py() for i in rows], dtype=float),
        )
    return out


def test_overlapping_windows_keep_the_first_label(tmp_path: Path) -> None:
    write_events(tmp_path, _envelopes(1))
    backend = connect_lake(tmp_path)
    a = Window(T0, T0 + timedelta(minutes=20))
    b = Window(T0 + timedelta(minutes=10), T0 + timedelta(minutes=30))

    def orders_per_window(table: ir.Table) -> ir.Table:
        orders = table.filter(table.event == "Order Completed")
        return orders.group_by(WINDOW_COLUMN).aggregate(n=orders.count())

    counted: dict[str, int] = {}
    for windows in ({"a": (a,), "b": (b,)}, {"a": (a,), "c": (Window(a.end, b.end),)}):
        rows = fetch_windowed(backend, windows, (), orders_per_window, "orders per window")
        counted.update(zip(*rows.to_pydict().values(), strict=True))
    assert counted == {"a": 20, "b": 10, "c": 10}  # overlapping: the CASE label; disjoint: joined


def test_funnel_series_through_the_windowed_query_counts_the_same_groups(tmp_path: Path) -> None:
    write_events(tmp_path, _envelopes(2))
    backend = connect_lake(tmp_path)
    funnel = parse_metric(
        {
            "name": "turn_to_order",
            "type": "funnel",
            "within": "1h",
            "steps": ["Turn Completed", "Order Completed"],
        }
    )
    assert isinstance(funnel, FunnelMetric)
    window = Window(T0 - timedelta(minutes=20), T0 + timedelta(days=1, minutes=25))
    fast = funnel_series(backend, funnel, window)  # unfiltered and aligned: funnel_counts
    everything = (Predicate(field="event", op="not_null"),)  # the per-minute series
    slow = funnel_series(backend, funnel, window, everything)
    assert fast.shape == slow.shape == (int(np.ceil(window.duration / BUCKET)), 2)
    assert fast.sum() > 0 and np.array_equal(fast, slow)
