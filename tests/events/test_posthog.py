"""PostHog capture events mapped onto the Segment envelope."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tripwire.events import normalize_event, posthog_to_segment, posthog_write_key

RECEIVED = datetime(2026, 3, 1, 12, tzinfo=UTC)


def envelope(event, **kwargs):
    message = posthog_to_segment(event, received_at=RECEIVED, **kwargs)
    return normalize_event(message, received_at=RECEIVED, source="web")


def test_capture_maps_ids_times_and_context():
    result = envelope(
        {
            "event": "Added To Cart",
            "distinct_id": "u1",
            "uuid": "0190-1",
            "timestamp": "2026-03-01T10:00:00Z",
            "type": "capture",
            "properties": {
                "price": 9,
                "$device_id": "dev-7",
                "$lib": "posthog-python",
                "$lib_version": "3.0",
                "$os": "Android",
                "$device_type": "Mobile",
                "$app_version": "5.12.0",
            },
        },
        sent_at="2026-03-01T10:00:02Z",
    )
    assert result["type"] == "track" and result["event"] == "Added To Cart"
    assert (result["userId"], result["anonymousId"], result["messageId"]) == (
        "u1",
        "dev-7",
        "0190-1",
    )
    assert result["properties"]["price"] == 9 and result["properties"]["$os"] == "Android"
    assert result["context"]["library"] == {"name": "posthog-python", "version": "3.0"}
    assert result["context"]["device"] == {"type": "Mobile"}
    assert result["context"]["app"] == {"version": "5.12.0"}
    assert result["context"]["$extra"] == {"type": "capture"}
    assert datetime.fromisoformat(result["timestamp"]) == RECEIVED - timedelta(seconds=2)


def test_offset_gives_the_time_when_no_timestamp():
    result = envelope({"event": "e", "distinct_id": "u", "offset": 1500})
    assert datetime.fromisoformat(result["timestamp"]) == RECEIVED - timedelta(milliseconds=1500)


def test_special_events_become_segment_calls():
    identify = envelope(
        {
            "event": "$identify",
            "distinct_id": "u1",
            "properties": {"$set": {"prime": True}, "$anon_distinct_id": "a1"},
        }
    )
    assert (identify["type"], identify["traits"], identify["anonymousId"]) == (
        "identify",
        {"prime": True},
        "a1",
    )
    page = envelope(
        {"event": "$pageview", "distinct_id": "u", "properties": {"$pathname": "/cart"}}
    )
    assert (page["type"], page["name"]) == ("page", "/cart")
    screen = envelope(
        {"event": "$screen", "distinct_id": "u", "properties": {"$screen_name": "Home"}}
    )
    assert (screen["type"], screen["name"]) == ("screen", "Home")
    group = envelope(
        {
            "event": "$groupidentify",
            "distinct_id": "u",
            "properties": {"$group_key": "acme", "$group_set": {"size": 3}},
        }
    )
    assert (group["type"], group["properties"]["groupId"], group["traits"]) == (
        "group",
        "acme",
        {"size": 3},
    )
    alias = envelope({"event": "$create_alias", "distinct_id": "u", "properties": {"alias": "old"}})
    assert (alias["type"], alias["properties"]["previousId"]) == ("alias", "old")


def test_distinct_id_from_properties_and_key_lookup():
    result = envelope({"event": "e", "properties": {"distinct_id": "p-9"}})
    assert result["userId"] == "p-9"
    assert posthog_write_key({"api_key": "k1", "batch": []}) == "k1"
    assert posthog_write_key({"batch": [{"api_key": "k2"}]}) == "k2"
    assert posthog_write_key([{"properties": {"token": "k3"}}]) == "k3"
    assert posthog_write_key({"event": "e"}) is None
    assert posthog_write_key("junk") is None
