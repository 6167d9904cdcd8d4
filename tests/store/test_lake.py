"""The lake's envelope-to-row conversion and the `events` view."""

from __future__ import annotations

import duckdb

from tripwire.store.lake import create_events_view, write_events


def _view(lake):
    connection = duckdb.connect()
    create_events_view(connection, lake)
    return connection


def test_empty_lake_has_typed_view(tmp_path):
    rows = _view(tmp_path).execute("select count(*), count(message_id) from events").fetchall()
    assert rows == [(0, 0)]


def test_rows_are_partitioned_flattened_and_typed(tmp_path):
    envelopes = [
        {
            "messageId": "a",
            "type": "track",
            "event": "Order Completed",
            "timestamp": "2026-11-01T10:00:00Z",
            "properties": {"revenue": 12, "session_id": "s1", "ok": True, "bad key": 1},
            "context": {
                "locale": "en-GB",
                "device": {"model": "Echo Show"},
                "traits": {"tenure": "new"},
            },
        },
        {
            "messageId": "b",
            "type": "identify",
            "userId": "u",
            "timestamp": "2026-11-01T10:00:00Z",
            "traits": {"prime": True},
        },
        {
            "messageId": "c",
            "type": "track",
            "event": "Order Completed",
            "timestamp": "2026-11-02T10:00:00Z",
            "properties": {"revenue": "twelve"},
        },
    ]
    files = write_events(tmp_path, envelopes)
    assert sorted(p.parent.name for p in files) == [
        "event=%24identify",
        "event=Order%20Completed",
        "event=Order%20Completed",
    ]
    rows = (
        _view(tmp_path)
        .execute(
            "select message_id, event, locale, device, prop_revenue, prop_ok, trait_tenure, trait_prime, session_id,"
            " json_extract(properties, '$.revenue')::VARCHAR from events order by 1"
        )
        .fetchall()
    )
    assert rows[0][:9] == (
        "a",
        "Order Completed",
        "en-GB",
        "Echo Show",
        12.0,
        True,
        "new",
        None,
        "s1",
    )
    assert rows[1][1] == "$identify" and rows[1][7] is True
    # A value of another type than the first seen stays only in the JSON.
    assert rows[2][4] is None and rows[2][9] == '"twelve"'
