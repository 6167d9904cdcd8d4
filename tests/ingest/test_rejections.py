"""Rejected events are recorded, so the catalog's ``rejected_event_share`` has data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import tripwire
from tripwire.metrics.catalog import install_catalog
from tripwire.metrics.loader import load_metrics
from tripwire.metrics.timeseries import Query, timeseries
from tripwire.store.engine import connect
from tripwire.store.workspace import init_workspace


def test_rejected_event_share_counts_rejections_per_source(tmp_path) -> None:
    ws = init_workspace(tmp_path / "ws")
    install_catalog(ws)
    when = (datetime.now(UTC) - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    good = [
        {"type": "track", "event": "Turn Completed", "userId": f"u{i}", "timestamp": when}
        for i in range(30)
    ]
    bad = [
        {"type": "track", "userId": "u"},  # no event name
        {"type": "track", "event": "X"},  # no user
        {"type": "track", "event": "X", "userId": "u", "timestamp": "tomorrow"},
    ]
    with tripwire.open(ws.root, source="app") as tw:
        result = tw.track_many(good + bad)
        assert result.queued == 30 and len(result.rejected) == 3
    with tripwire.open(ws.root, source="kiosk") as tw:
        assert tw.track_many(good[:9] + bad[:1]).queued == 9
    with tripwire.open(ws.root) as tw:
        tw.archive()
        reasons = tw.sql(
            "SELECT prop_field AS field, count(*) AS n FROM events"
            " WHERE event = '$rejected' GROUP BY 1 ORDER BY 1"
        ).to_pylist()
    assert reasons == [
        {"field": "event", "n": 2},
        {"field": "timestamp", "n": 1},
        {"field": "userId", "n": 1},
    ]
    backend = connect(ws)
    metric = load_metrics(ws, check_lake=False)["rejected_event_share"]
    table = timeseries(backend, [metric], Query(grain=None, dimensions=("source",)))[
        "rejected_event_share"
    ].table
    shares = {row["source"]: row["value"] for row in table.to_pylist()}
    assert shares == {"app": 3 / 33, "kiosk": 1 / 10}
