"""The incremental outcome partials compare metric windows on epoch microseconds; these
must be the same instants as the full path's ``t0 + INTERVAL`` (unit_stats.in_window)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import ibis
import pytest

from tripwire.metrics.compile import epoch_us
from tripwire.metrics.unit_stats import (
    Component,
    _offset,
    in_window,
    in_window_micros,
    offset_micros,
)

DELTAS = [
    timedelta(0),
    timedelta(days=7),
    timedelta(days=2, seconds=3),
    timedelta(hours=-12),
    timedelta(seconds=1.5),
    timedelta(microseconds=1500),  # finer than a millisecond: _offset rounds it
    timedelta(microseconds=-2500),
    timedelta(days=400, microseconds=7),
]
T0 = [
    datetime(2026, 2, 1, 10, 0, 0, 123456, tzinfo=UTC),
    datetime(2026, 3, 29, 0, 59, 59, 999999, tzinfo=UTC),  # a DST change elsewhere
    datetime(1999, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
]


def _table(rows: list[dict[str, datetime]]) -> ibis.Table:
    table = ibis.memtable(rows)
    return table.mutate(**{c: table[c].cast("timestamp('UTC')") for c in table.columns})


@pytest.mark.parametrize("delta", DELTAS, ids=str)
def test_microsecond_offsets_are_the_interval_offsets(delta: timedelta) -> None:
    table = _table([{"t0": t0} for t0 in T0])
    expr = table.select(
        via_interval=epoch_us(_offset(table.t0, delta)),
        via_micros=epoch_us(table.t0) + offset_micros(delta),
    )
    result = ibis.duckdb.connect().to_pyarrow(expr).to_pylist()
    assert all(r["via_interval"] == r["via_micros"] for r in result), result


def test_window_membership_is_the_same_to_the_microsecond() -> None:
    component = Component(
        key="c0",
        mode="count",
        filters=(),
        value=None,
        window_start=timedelta(hours=-12),
        window_end=timedelta(days=2, microseconds=1500),
    )
    rows = []
    for t0 in T0:
        for edge in (component.window_start, timedelta(days=2, milliseconds=2)):
            for nudge in (-1, 0, 1):  # one microsecond either side of each bound
                rows.append({"t0": t0, "ts": t0 + edge + timedelta(microseconds=nudge)})
    table = _table(rows)
    expr = table.select(
        interval=in_window(table.ts, table.t0, component),
        micros=in_window_micros(epoch_us(table.ts), epoch_us(table.t0), component),
    )
    result = ibis.duckdb.connect().to_pyarrow(expr).to_pylist()
    assert [r["interval"] for r in result] == [r["micros"] for r in result]
    assert {r["interval"] for r in result} == {True, False}  # both sides of the bounds occur
