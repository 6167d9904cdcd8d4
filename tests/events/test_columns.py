"""The batch path (normalize_batch) decides exactly as validate_batch, message by message."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tripwire.events import validate_batch
from tripwire.events.columns import (
    REJECTED_EVENT,
    batch_envelopes,
    envelopes_to_batch,
    normalize_batch,
    rejection_batch,
)
from tripwire.events.errors import Rejection

from .test_adversarial import messages as adversarial_messages

RECEIVED = datetime(2026, 3, 1, 12, tzinfo=UTC)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
)
objects = st.dictionaries(
    st.sampled_from(["revenue", "session_id", "intent", "n", "$session_id", "a b"]),
    scalars | st.dictionaries(st.text(max_size=2), scalars, max_size=2),
    max_size=4,
)
times = st.sampled_from(
    [
        "2026-03-01T11:00:00Z",
        "2026-03-01T11:00:00.250Z",
        "2026-02-28T23:59:59.999999Z",
        "2026-03-01T11:00:00+01:00",
        "2026-03-01 11:00:00",
        "1969-12-31T23:59:59Z",
        "2026-02-30T10:00:00Z",
        "2026-03-01T11:00:00.1Z",
    ]
)
plausible = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["track", "track", "track", "identify", "page", "alias"]),
        "userId": st.sampled_from(["u1", "u2", " ", "", None]) | st.integers(0, 9),
    },
    optional={
        "event": st.sampled_from(
            ["Order Completed", "$exposure", "$latency", "$page", "", "x" * 201]
        )
        | st.integers(0, 3),
        "anonymousId": st.sampled_from(["a1", None]),
        "messageId": st.sampled_from(["m1", "m2", "m3", "", None, "x" * 300]) | st.integers(0, 3),
        "timestamp": times,
        "properties": objects | st.none() | st.just([1]),
        "context": objects,
        "traits": objects,
        "name": st.sampled_from(["Home", None]) | st.integers(0, 2),
        "integrations": st.sampled_from([{}, {"All": False}]),
        "sentAt": st.none() | times,
        "extra": st.just(1),
    },
)


def _comparable(raw: Any, envelope: dict[str, Any]) -> dict[str, Any]:
    """Generated messageIds differ between two runs: leave them out when the sender sent none."""
    if not isinstance(raw, dict) or raw.get("messageId") is None:
        return {k: v for k, v in envelope.items() if k != "messageId"}
    return envelope


def assert_same_decisions(batch: list[Any], **kwargs: Any) -> None:
    accepted, rejected = validate_batch(batch, received_at=RECEIVED, source="app", **kwargs)
    columns, column_rejected = normalize_batch(batch, received_at=RECEIVED, source="app", **kwargs)
    assert column_rejected == rejected
    rejected_at = {r.index for r in rejected}
    raws = [m for i, m in enumerate(batch) if i not in rejected_at]
    got = batch_envelopes(columns.batch)
    assert [_comparable(r, e) for r, e in zip(raws, got, strict=True)] == [
        _comparable(r, e) for r, e in zip(raws, accepted, strict=True)
    ]
    assert columns.message_ids == [e["messageId"] for e in got]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(plausible, max_size=12),
    st.sampled_from([None, "2026-03-01T12:00:05Z"]),
    st.sampled_from([None, {"locale": "en-GB", "traits": {"prime": True}}]),
)
def test_batch_path_matches_validate_batch_on_plausible_messages(batch, sent_at, context):
    assert_same_decisions(batch, sent_at=sent_at, context=context)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(adversarial_messages, max_size=6))
def test_batch_path_matches_validate_batch_on_adversarial_messages(batch):
    assert_same_decisions(batch)


@pytest.mark.parametrize("limit", [600, 4000])
def test_size_limit_near_the_edge_is_decided_exactly(limit):
    batch = [
        {"type": "track", "event": "E", "userId": "u", "properties": {"blob": "x" * size}}
        for size in range(0, limit + 200, 37)
    ]
    assert_same_decisions(batch, max_event_bytes=limit)


def test_envelopes_round_trip_and_odd_envelopes_are_kept_verbatim():
    odd = {"messageId": "a", "timestamp": datetime(2026, 1, 1, tzinfo=UTC), "custom": [1]}
    accepted, _ = validate_batch(
        [{"type": "track", "event": "E", "userId": "u", "messageId": "b"}],
        received_at=RECEIVED,
        source=None,
    )
    batch = envelopes_to_batch([odd, *accepted])
    assert batch.message_ids == ["a", "b"]
    assert batch_envelopes(batch.batch) == [
        {"messageId": "a", "timestamp": "2026-01-01T00:00:00+00:00", "custom": [1]},
        *accepted,
    ]


def test_rejection_records_name_source_key_field_and_reason():
    messages = [{"type": "track", "userId": "u", "messageId": "m9"}, "junk"]
    rejections = [Rejection(0, "event", "required for a track call"), Rejection(1, "", "bad")]
    records = rejection_batch(
        rejections, messages, received_at=RECEIVED, source="app", write_key="k1"
    ).envelopes()
    assert [r["event"] for r in records] == [REJECTED_EVENT] * 2
    assert records[0]["properties"] == {
        "field": "event",
        "reason": "required for a track call",
        "index": 0,
        "write_key": "k1",
        "rejected_message_id": "m9",
    }
    assert records[1]["properties"]["rejected_message_id"] is None
    assert {r["source"] for r in records} == {"app"} and records[0]["receivedAt"].startswith(
        "2026-03-01T12"
    )


digit_times = st.builds(
    "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}{}Z".format,
    st.sampled_from([0, 1969, 1970, 2024, 2026, 2199, 2200, 9999]),
    st.integers(0, 13),
    st.integers(0, 32),
    st.integers(0, 24),
    st.integers(0, 60),
    st.integers(0, 60),
    st.sampled_from(["", ".000", ".250", ".999999", ".1"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(digit_times, min_size=1, max_size=8),
    st.sampled_from([None, "2026-03-01T12:00:05Z", "1970-01-01T00:00:01Z"]),
)
def test_column_wise_time_parsing_decides_like_fromisoformat(monkeypatch_times, times, sent_at):
    """Arrow parses a large batch's canonical times (here forced on small ones): the same
    envelopes and rejections as the per-message path, invalid dates and ranges included."""
    batch = [
        {"type": "track", "event": "E", "userId": "u", "messageId": f"m{i}", "timestamp": t}
        for i, t in enumerate(times)
    ]
    assert_same_decisions(batch, sent_at=sent_at)


@pytest.fixture(scope="module")
def monkeypatch_times():
    from tripwire.events import columns

    saved = columns._ARROW_TIMES_MIN_ROWS
    columns._ARROW_TIMES_MIN_ROWS = 1
    yield
    columns._ARROW_TIMES_MIN_ROWS = saved


_LONE_SURROGATE = "x\ud800y"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(
        ["userId", "anonymousId", "messageId", "event", "name", "timestamp", "sentAt"]
        + ["properties", "context", "traits"]
    ),
    st.integers(0, 299),
)
def test_a_lone_surrogate_in_a_large_batch_rejects_that_event_only(field, position):
    """Large batches take the column-wise path; a text UTF-8 cannot encode (which a Python
    caller can pass, JSON cannot) is rejected with its index like the per-event path does,
    and the other events land (it used to pass the column checks and fail Arrow's build)."""
    batch: list[Any] = [
        {
            "type": "track",
            "event": "Order Completed",
            "userId": f"u{i}",
            "messageId": f"m{i}",
            "timestamp": "2026-03-01T11:00:00Z",
            "properties": {"revenue": i},
            "context": {"locale": "en-GB"},
        }
        for i in range(300)
    ]
    bad = batch[position]
    if field in ("properties", "context", "traits"):
        bad[field] = {"key": _LONE_SURROGATE}
    elif field == "name":
        bad |= {"type": "page", "name": _LONE_SURROGATE}
    else:
        bad[field] = _LONE_SURROGATE
    assert_same_decisions(batch)
    columns, rejected = normalize_batch(batch, received_at=RECEIVED, source="app")
    assert [r.index for r in rejected] == [position]
    assert len(columns) == 299
