"""Backfill and streaming evaluation on the same simulated data give the same alerts."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from tripwire.monitor.alerts import AlertStore
from tripwire.monitor.rules import Clear, Trigger
from tripwire.monitor.runner import (
    CONSUMER,
    StreamingMonitor,
    apply_events,
    floor_to,
    lake_range,
    load_definitions,
    run_backfill,
)
from tripwire.store.buffer import Buffer
from tripwire.store.engine import connect
from tripwire.store.workspace import Workspace

pytestmark = pytest.mark.slow


def _history_end(ws: Workspace) -> tuple[datetime, datetime, datetime]:
    backend = connect(ws)
    span = lake_range(backend)
    assert span is not None
    lo, hi = span
    first = datetime.fromtimestamp(-(-int(lo.timestamp()) // 60) * 60, UTC)
    monitors, _ = load_definitions(ws)
    return lo, hi, first + monitors["resolution"].detector.calibration


def test_streaming_equals_backfill(small_world: Workspace) -> None:
    ws = small_world
    monitors, catalog = load_definitions(ws)
    lo, hi, history_end = _history_end(ws)
    backfill = run_backfill(connect(ws), list(monitors), catalog, start=lo, end=hi)

    stream = StreamingMonitor(
        ws,
        lateness=timedelta(hours=3),
        use_wall_clock=False,
        history_end=history_end,
        notify=False,
        chunk_events=60_000,
    )
    seen: list = []
    import tripwire.monitor.runner as runner

    original = runner.apply_events

    def capture(store, events):  # type: ignore[no-untyped-def]
        seen.extend(events)
        return original(store, events)

    runner.apply_events = capture
    try:
        stats = stream.run(until_idle=True)
    finally:
        runner.apply_events = original
    assert stats.errors == []
    assert stats.late_events == 0  # the precondition of "same data"
    assert stream._evaluator is not None
    seen += stream._evaluator.close_until(floor_to(hi, 60))  # the buckets the lateness held back

    expected = [e.key() for e in backfill.events]
    got = sorted(e.key() for e in seen)
    assert len(expected) > 20, "the comparison needs triggers and clears to mean something"
    assert any(isinstance(e.item, Trigger) for e in backfill.events)
    assert any(isinstance(e.item, Clear) for e in backfill.events)
    assert got == expected
    # and the numbers the alerts carry agree too
    by_key = {e.key(): e.item for e in backfill.events}
    for event in seen:
        item = by_key[event.key()]
        if isinstance(item, Trigger):
            assert event.item.observed == pytest.approx(item.observed, nan_ok=True)
            assert event.item.onset == item.onset
    with Buffer.for_workspace(ws) as buffer:
        assert buffer.committed(CONSUMER) == buffer.last_offset()

    # recorded twice into fresh stores: the same alerts, one open alert per rule x segment
    stored = []
    for _ in range(2):
        with AlertStore(sqlite3.connect(":memory:", isolation_level=None)) as store:
            store.changes.sync_lake(connect(ws))
            apply_events(store, backfill.events)
            alerts = store.query()
            stored.append([a.to_json() for a in alerts])
            open_keys = [(a.monitor, a.rule, a.segment_text) for a in store.query(status="open")]
            assert len(open_keys) == len(set(open_keys))
            for alert in alerts:
                assert alert.onset_at <= alert.opened_at and alert.observed is not None
    assert stored[0] == stored[1] and stored[0]
