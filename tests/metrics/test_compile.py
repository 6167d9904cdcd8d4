"""Engine-aware compilation in :mod:`tripwire.metrics.compile`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import ibis
import pyarrow as pa

from tripwire.metrics.compile import compile_sql, field, predicate
from tripwire.metrics.definitions import Predicate
from tripwire.store.engine import resolve_field


def test_lateness_on_duckdb_equals_the_portable_form_row_by_row() -> None:
    """``epoch(received_at) - epoch(timestamp)`` gives exactly the portable expression's
    doubles (sub-second, negative, zero and multi-day lateness; null arrival)."""
    base = datetime(2026, 3, 29, 0, 59, 59, 999_999, tzinfo=UTC)
    lags = [
        timedelta(microseconds=1),
        timedelta(seconds=300),
        timedelta(seconds=300, microseconds=1),
        timedelta(seconds=-7, microseconds=250_001),
        timedelta(0),
        timedelta(days=3, hours=5, microseconds=123_457),
    ]
    stamps = [base + timedelta(hours=i, microseconds=37 * i) for i in range(len(lags))]
    received = [t + lag for t, lag in zip(stamps, lags, strict=True)]
    utc = pa.timestamp("us", tz="UTC")
    con = ibis.duckdb.connect()
    table = con.create_table(
        "events",
        pa.table(
            {
                "timestamp": pa.array([*stamps, base], utc),
                "received_at": pa.array([*received, None], utc),
            }
        ),
    )
    fast = field(table, "lateness_seconds", "double")
    portable = resolve_field(table, "lateness_seconds", "double")
    assert "EPOCH(CAST" not in compile_sql(table.select(late=fast))
    rows = con.to_pyarrow(table.select(fast=fast, portable=portable)).to_pylist()
    assert [r["fast"] for r in rows] == [r["portable"] for r in rows]
    assert rows[-1]["fast"] is None
    assert rows[1]["fast"] == 300.0 and rows[2]["fast"] > 300.0


def test_lateness_elsewhere_is_the_portable_form() -> None:
    """Unbound tables (and so Spark's SQL) keep :func:`resolve_field`'s expression."""
    table = ibis.table({"timestamp": "timestamp('UTC')", "received_at": "timestamp('UTC')"}, "e")
    late = field(table, "lateness_seconds", "double")
    assert late.equals(resolve_field(table, "lateness_seconds", "double"))


def test_lateness_comparisons_count_whole_microseconds_exactly() -> None:
    """``lateness_seconds <op> v`` on DuckDB compares integer microseconds: each row's
    result is that of the exact elapsed time (one microsecond either side of the bound,
    a bound that is not whole microseconds, a null arrival)."""
    base = datetime(2026, 3, 29, 0, 59, 59, 999_999, tzinfo=UTC)
    lags = [
        timedelta(seconds=300, microseconds=-1),
        timedelta(seconds=300),
        timedelta(seconds=300, microseconds=1),
        timedelta(seconds=-300),
        timedelta(days=2, microseconds=7),
        None,
    ]
    stamps = [base + timedelta(minutes=i, microseconds=11 * i) for i in range(len(lags))]
    received = [None if lag is None else t + lag for t, lag in zip(stamps, lags, strict=True)]
    utc = pa.timestamp("us", tz="UTC")
    con = ibis.duckdb.connect()
    table = con.create_table(
        "events",
        pa.table({"timestamp": pa.array(stamps, utc), "received_at": pa.array(received, utc)}),
    )
    checks = {
        ("gt", 300): lambda s: s > 300,
        ("ge", 300): lambda s: s >= 300,
        ("lt", 300): lambda s: s < 300,
        ("le", -300): lambda s: s <= -300,
        ("eq", 300): lambda s: s == 300,
        ("ne", 300): lambda s: s != 300,
        ("gt", 300.0000005): lambda s: s > 300.0000005,  # not whole µs: the double form
    }
    for (op, value), expected in checks.items():
        pred = Predicate(field="lateness_seconds", op=op, value=value)
        got = con.to_pyarrow(table.select(hit=predicate(table, pred)))["hit"].to_pylist()
        exact = [None if lag is None else expected(lag / timedelta(seconds=1)) for lag in lags]
        assert got == exact, (op, value)
    pred = Predicate(field="lateness_seconds", op="gt", value=300)
    assert "EPOCH_US" in compile_sql(table.select(hit=predicate(table, pred))).upper()
