"""Validation and normalization of one Segment message, and of batches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tripwire.events import (
    EventValidationError,
    Rejection,
    normalize_event,
    validate_batch,
)
from tripwire.events.envelope import EXTRA_KEY, MAX_EVENT_DIR_BYTES
from tripwire.store.lake import PropertyTypes, envelopes_to_table

RECEIVED = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
ENVELOPE_KEYS = {
    "messageId",
    "type",
    "event",
    "name",
    "userId",
    "anonymousId",
    "timestamp",
    "originalTimestamp",
    "sentAt",
    "receivedAt",
    "properties",
    "traits",
    "context",
    "source",
}


def track(**fields):
    return {"type": "track", "event": "Order Completed", "userId": "u1", **fields}


def normalize(raw, **kwargs):
    return normalize_event(raw, received_at=RECEIVED, source="app", **kwargs)


def rejection(raw, **kwargs) -> EventValidationError:
    with pytest.raises(EventValidationError) as info:
        normalize(raw, **kwargs)
    return info.value


def test_track_envelope_has_exactly_the_lake_keys():
    envelope = normalize(track(messageId="m1", properties={"revenue": 12.5}))
    assert set(envelope) == ENVELOPE_KEYS
    assert envelope["messageId"] == "m1"
    assert envelope["event"] == "Order Completed"
    assert envelope["properties"] == {"revenue": 12.5}
    assert envelope["receivedAt"] == "2026-03-01T12:00:00Z"
    assert envelope["source"] == "app"
    assert envelope["traits"] == {} and envelope["context"] == {}


def test_clock_skew_is_corrected_like_segment():
    # The device clock runs 1 h fast: both its timestamp and sentAt carry the error.
    envelope = normalize(
        track(timestamp="2026-03-01T13:00:00.000Z", sentAt="2026-03-01T13:00:30.000Z")
    )
    assert envelope["originalTimestamp"] == "2026-03-01T13:00:00.000Z"
    assert envelope["sentAt"] == "2026-03-01T13:00:30Z"
    corrected = datetime.fromisoformat(envelope["timestamp"])
    assert corrected == RECEIVED - timedelta(seconds=30)


def test_batch_sent_at_applies_and_message_sent_at_wins():
    envelope = normalize(track(timestamp="2026-03-01T11:00:00Z"), sent_at="2026-03-01T11:00:10Z")
    assert datetime.fromisoformat(envelope["timestamp"]) == RECEIVED - timedelta(seconds=10)
    own = normalize(
        track(timestamp="2026-03-01T11:00:00Z", sentAt="2026-03-01T11:00:01Z"),
        sent_at="2026-03-01T11:00:10Z",
    )
    assert datetime.fromisoformat(own["timestamp"]) == RECEIVED - timedelta(seconds=1)


def test_timestamp_without_sent_at_is_kept_and_missing_timestamp_is_received_at():
    kept = normalize(track(timestamp="2026-02-01T08:00:00+01:00"))
    assert kept["timestamp"] == kept["originalTimestamp"] == "2026-02-01T07:00:00Z"
    missing = normalize(track())
    assert missing["timestamp"] == missing["receivedAt"]
    assert missing["originalTimestamp"] is None and missing["sentAt"] is None


def test_naive_timestamps_are_utc_and_datetimes_are_accepted():
    naive = normalize(track(timestamp="2026-02-01T08:00:00"))
    assert naive["timestamp"] == "2026-02-01T08:00:00Z"
    from_datetime = normalize(track(timestamp=datetime(2026, 2, 1, 8, tzinfo=UTC)))
    assert from_datetime["timestamp"] == "2026-02-01T08:00:00Z"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("yesterday", "not an ISO 8601 time"),
        ("1969-12-31T23:59:59Z", "outside"),
        ("2300-01-01T00:00:00Z", "outside"),
        (1700000000, "expected an ISO 8601 string, got int"),
        ("2026-01-01T00:00:00Z" + " " * 60, "longer than"),
    ],
)
def test_bad_timestamps_are_rejected_with_reason(value, reason):
    error = rejection(track(timestamp=value))
    assert error.field == "timestamp"
    assert reason in error.reason


def test_skew_correction_that_leaves_the_range_is_rejected():
    error = rejection(track(timestamp="1970-01-01T00:00:01Z", sentAt="2199-01-01T00:00:00Z"))
    assert error.field == "timestamp" and "clock skew" in error.reason


def test_message_id_is_generated_when_absent_and_unique():
    first, second = normalize(track()), normalize(track())
    assert first["messageId"] and first["messageId"] != second["messageId"]
    assert normalize(track(messageId=42))["messageId"] == "42"


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        ([1, 2], "", "must be a JSON object, got list"),
        ({"event": "A", "userId": "u"}, "type", "required"),
        (track(type="purchase"), "type", "must be one of"),
        ({"type": "track", "event": "A"}, "userId", "one of userId or anonymousId"),
        (track(userId=""), "userId", "must not be empty"),
        (track(userId=None, anonymousId=["a"]), "anonymousId", "must be a string, got list"),
        (track(userId=True), "userId", "must be a string, got bool"),
        (track(event=None), "event", "required for a track call"),
        (track(event="  "), "event", "must not be empty"),
        (track(event=7), "event", "must be a string, got int"),
        (track(event="x" * 201), "event", "over the 200-character limit"),
        (track(event="$page"), "event", "reserved for page calls"),
        (track(messageId=""), "messageId", "must not be empty"),
        (track(messageId="m" * 256), "messageId", "longer than 255"),
        (track(messageId={"a": 1}), "messageId", "must be a string"),
        (track(properties=[1]), "properties", "must be an object, got list"),
        (track(context="en-US"), "context", "must be an object, got str"),
        (track(traits=3), "traits", "must be an object, got int"),
        (track(name=3), "name", "must be a string"),
        ({"type": "group", "userId": "u"}, "groupId", "required for a group call"),
        ({"type": "alias", "userId": "u"}, "previousId", "required for an alias call"),
        (
            {"type": "alias", "anonymousId": "a", "previousId": "p"},
            "userId",
            "required for an alias",
        ),
    ],
)
def test_invalid_messages_name_field_and_reason(raw, field, reason):
    error = rejection(raw)
    assert error.field == field
    assert reason in error.reason


def test_event_name_that_would_overflow_a_lake_folder_is_rejected():
    name = "日本" * 50  # 100 characters, 900 bytes url-quoted
    error = rejection(track(event=name))
    assert error.field == "event" and str(MAX_EVENT_DIR_BYTES) in error.reason
    assert normalize(track(event="日本語のイベント"))["event"] == "日本語のイベント"


def test_other_call_types_get_lake_event_names_and_their_ids_in_properties():
    identify = normalize({"type": "identify", "userId": "u", "traits": {"locale": "de-DE"}})
    assert identify["event"] == "$identify" and identify["traits"] == {"locale": "de-DE"}
    page = normalize({"type": "page", "anonymousId": "a", "name": "Home"})
    assert page["event"] == "$page" and page["name"] == "Home" and page["userId"] is None
    group = normalize({"type": "group", "userId": "u", "groupId": 17})
    assert group["properties"] == {"groupId": "17"}
    alias = normalize({"type": "alias", "userId": "u", "previousId": "anon-1"})
    assert alias["properties"] == {"previousId": "anon-1"}


def test_unknown_top_level_fields_are_kept_in_context_and_write_key_is_removed():
    envelope = normalize(
        track(
            writeKey="secret",
            channel="server",
            integrations={"All": False},
            context={"locale": "en-GB", EXTRA_KEY: {"earlier": 1}},
        )
    )
    assert envelope["context"]["locale"] == "en-GB"
    assert envelope["context"][EXTRA_KEY] == {
        "earlier": 1,
        "channel": "server",
        "integrations": {"All": False},
    }
    assert "secret" not in repr(envelope)
    assert EXTRA_KEY not in normalize(track(integrations={}))["context"]


def test_batch_context_is_a_default_under_the_message_context():
    envelope = normalize(
        track(context={"locale": "en-GB"}),
        base_context={"locale": "en-US", "library": {"name": "x"}},
    )
    assert envelope["context"] == {"locale": "en-GB", "library": {"name": "x"}}


def test_caller_dicts_are_not_mutated():
    properties = {"experiment": "e", "variant": "treatment"}
    context = {"locale": "en-US"}
    raw = {
        "type": "track",
        "event": "$exposure",
        "userId": "u",
        "properties": properties,
        "context": context,
        "extra_field": 1,
    }
    normalize(raw)
    assert properties == {"experiment": "e", "variant": "treatment"}
    assert context == {"locale": "en-US"}
    assert "extra_field" in raw


def test_size_limit_and_serializability():
    big = track(properties={"blob": "x" * 40_000})
    error = rejection(big)
    assert error.field == "" and "over the 32768-byte limit" in error.reason
    assert normalize(big, max_event_bytes=64_000)["properties"]["blob"] == "x" * 40_000
    unserializable = rejection(track(properties={"tags": {"a", "b"}}))
    assert unserializable.field == "properties" and "not JSON-serializable" in unserializable.reason
    deep: dict = {}
    node = deep
    for _ in range(300):
        node["x"] = {}
        node = node["x"]
    assert rejection(track(properties=deep)).field == "properties"
    assert rejection(track(properties={"s": "\ud800"})).field == "properties"


def test_validate_batch_keeps_good_events_and_indexes_bad_ones():
    messages = [track(messageId="a"), "junk", track(userId=None), track(messageId="d")]
    accepted, rejected = validate_batch(messages, received_at=RECEIVED, source="app")
    assert [e["messageId"] for e in accepted] == ["a", "d"]
    assert rejected == [
        Rejection(1, "", "an event must be a JSON object, got str"),
        Rejection(2, "userId", "one of userId or anonymousId is required"),
    ]
    assert rejected[0].as_dict() == {"index": 1, "field": "", "reason": rejected[0].reason}


def test_validate_batch_rejects_a_bad_batch_sent_at_as_a_whole():
    with pytest.raises(EventValidationError) as info:
        validate_batch([track()], received_at=RECEIVED, source=None, sent_at="soon")
    assert info.value.field == "sentAt"


def test_envelopes_feed_the_lake_conversion():
    accepted, _ = validate_batch(
        [
            track(
                context={"locale": "ja-JP", "device": {"model": "Echo Show"}},
                properties={"session_id": "s1", "revenue": 3},
            ),
            {"type": "identify", "anonymousId": "a", "traits": {"prime": True}},
        ],
        received_at=RECEIVED,
        source="app",
        sent_at="2026-03-01T11:59:59Z",
    )
    table = envelopes_to_table(accepted, PropertyTypes(_missing_path()))
    rows = table.to_pylist()
    assert [r["event"] for r in rows] == ["Order Completed", "$identify"]
    assert rows[0]["locale"] == "ja-JP" and rows[0]["device"] == "Echo Show"
    assert rows[0]["prop_revenue"] == 3.0 and rows[1]["trait_prime"] is True
    assert rows[0]["received_at"] == RECEIVED


def _missing_path():
    from pathlib import Path

    return Path("/nonexistent/tripwire-test/_property_types.json")
