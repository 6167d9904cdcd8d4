"""Engine-aware compilation in :mod:`tripwire.metrics.compile`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import ibis
import pyarrow as pa

from tripwire.metrics.compile import compile_sql, field
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
