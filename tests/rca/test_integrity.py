"""Data integrity checks: volumes, lateness, rejected events and schema from one scan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tripwire.metrics.definitions import parse_metric
from tripwire.rca.data import Window, baseline_windows
from tripwire.rca.integrity import MEASUREMENT_ISSUE, OK, WARNING, check_integrity
from tripwire.store.engine import connect_lake
from tripwire.store.lake import write_events

START = datetime(2026, 11, 2, 18, tzinfo=UTC)
DAYS = 5
METRIC = parse_metric({"name": "orders", "type": "count", "events": ["Order Completed"]})


def _event(event: str, ts: datetime, source: str, i: int, **props: Any) -> dict[str, Any]:
    return {
        "messageId": f"{source}-{event}-{ts.isoformat()}-{i}",
        "type": "track",
        "event": event,
        "userId": f"u{i}",
        "timestamp": ts.isoformat(),
        "receivedAt": (ts + timedelta(seconds=2)).isoformat(),
        "properties": props,
        "context": {"locale": "en-GB"},
        "source": source,
    }


def _lake(tmp_path: Path, *, rejected_now: int, late_now: bool = False) -> Path:
    """Two hours a day for five days; on the last day ``rejected_now`` of "app"'s messages
    are ``$rejected`` (1 a day before) and optionally every event arrives an hour late."""
    rows = []
    for day in range(DAYS):
        last = day == DAYS - 1
        for i in range(200):
            ts = START + timedelta(days=day, seconds=36 * i)
            row = _event("Order Completed", ts, "app", i, revenue=10.0, order_id=f"{day}-{i}")
            if last and late_now:
                row["receivedAt"] = (ts + timedelta(hours=1)).isoformat()
            rows.append(row)
            rows.append(_event("Turn Completed", ts, "voice", i, resolved=True))
        for i in range(rejected_now if last else 1):
            ts = START + timedelta(days=day, seconds=30 * i + 1)
            rows.append(
                _event("$rejected", ts, "app", i, field="timestamp", reason="not a date", index=i)
            )
    write_events(tmp_path, rows)
    return tmp_path


def _check(lake: Path):
    current = Window(START + timedelta(days=DAYS - 1), START + timedelta(days=DAYS - 1, hours=2))
    baselines = baseline_windows(current, data_start=START)
    return check_integrity(connect_lake(lake), METRIC, current, baselines)


def test_a_rejected_event_spike_of_one_source_is_a_warning_with_evidence(tmp_path: Path) -> None:
    report = _check(_lake(tmp_path, rejected_now=60))
    spikes = [r for r in report.rejected if r.spike]
    assert [r.source for r in spikes] == ["app"]
    app = spikes[0]
    assert app.current_rejected == 60
    assert abs(app.current_share - 60 / 260) < 1e-12
    assert abs(app.baseline_share - 1 / 201) < 1e-12
    assert report.verdict == WARNING
    assert any("rejected at ingest" in line for line in report.evidence)
    assert "source app" in report.rejected_events
    # $rejected rows are neither a volume of their own nor a schema change
    assert all(v.event != "$rejected" for v in report.volumes)
    assert all(s.event != "$rejected" for s in report.schema)


def test_steady_rejections_are_not_a_spike(tmp_path: Path) -> None:
    report = _check(_lake(tmp_path, rejected_now=1))
    assert report.rejected and not any(r.spike for r in report.rejected)
    assert report.verdict == OK
    assert report.rejected_events.startswith("no spike")


def test_late_arrivals_and_volumes_come_from_the_same_scan(tmp_path: Path) -> None:
    report = _check(_lake(tmp_path, rejected_now=1, late_now=True))
    app = next(late for late in report.lateness if late.source == "app")
    voice = next(late for late in report.lateness if late.source == "voice")
    assert app.worse and app.current_late_share == 1.0 and app.baseline_late_share == 0.0
    assert not voice.worse
    orders = next(v for v in report.volumes if v.event == "Order Completed")
    assert orders.current == 200 and orders.baseline_per_window == 200 and not orders.dropped
    assert report.verdict == WARNING and report.verdict != MEASUREMENT_ISSUE
