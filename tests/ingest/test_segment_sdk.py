"""Segment's own Python SDK (segment-analytics-python, unchanged) pointed at the local server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from segment.analytics import Client


@pytest.mark.parametrize("use_gzip", [False, True])
def test_segment_sdk_events_land_in_the_buffer(live, use_gzip):
    errors: list[object] = []
    client = Client(
        live.key,
        host=live.url,
        gzip=use_gzip,
        on_error=lambda error, batch: errors.append(error),
        max_retries=1,
        upload_size=40,
    )
    happened = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    for i in range(100):
        client.track(
            f"user-{i % 7}",
            "Turn Completed",
            {"session_id": f"s{i}", "turn_index": i, "resolved": i % 2 == 0},
            context={"locale": "en-GB", "device": {"model": "Echo Show"}},
            timestamp=happened,
            message_id=f"sdk-{use_gzip}-{i}",
        )
    client.identify("user-1", {"prime": True, "tenure": "loyal"})
    client.page("user-1", "Shop", "Cart", {"path": "/cart"})
    client.screen("user-1", "App", "Home")
    client.group("user-1", "household-9", {"size": 3})
    client.alias("anon-1", "user-1")
    client.flush()
    client.join()
    assert errors == []

    stored = live.stored()
    tracks = [e for e in stored if e["type"] == "track"]
    assert sorted(e["messageId"] for e in tracks) == sorted(
        f"sdk-{use_gzip}-{i}" for i in range(100)
    )
    assert {e["type"] for e in stored} == {"track", "identify", "page", "screen", "group", "alias"}
    first = next(e for e in tracks if e["messageId"] == f"sdk-{use_gzip}-0")
    assert first["userId"] == "user-0" and first["source"] == "app"
    assert first["context"]["locale"] == "en-GB"
    assert first["context"]["library"]["name"] == "analytics-python"
    assert first["properties"] == {"session_id": "s0", "turn_index": 0, "resolved": True}
    assert datetime.fromisoformat(first["originalTimestamp"]) == happened
    # sentAt came from the SDK, so the stored timestamp is skew-corrected onto server time
    assert first["sentAt"] is not None
    corrected = datetime.fromisoformat(first["timestamp"])
    received = datetime.fromisoformat(first["receivedAt"])
    sent = datetime.fromisoformat(first["sentAt"])
    assert corrected == received - (sent - happened)


def test_segment_sdk_retry_of_a_delivered_batch_is_stored_once(live):
    client = Client(live.key, host=live.url, sync_mode=True)
    for _ in range(3):  # the same messageId sent three times, as a retry would
        client.track("u1", "Order Completed", {"revenue": 5}, message_id="once")
    assert [e["messageId"] for e in live.stored()] == ["once"]


def test_segment_sdk_with_a_revoked_key_reports_the_failure(live):
    live.keys.revoke(live.key)
    errors: list[object] = []
    client = Client(live.key, host=live.url, on_error=lambda e, b: errors.append(e), max_retries=0)
    client.track("u1", "Order Completed")
    client.flush()
    client.join()
    assert errors and "revoked" in str(errors[0])
    assert live.stored() == []
