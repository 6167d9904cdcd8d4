"""Property tests: whatever a client sends, the validator answers with an envelope or a
named rejection, and every accepted envelope is storable JSON of the documented shape."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tripwire.events import EventValidationError, normalize_event, validate_batch

RECEIVED = datetime(2026, 3, 1, 12, tzinfo=UTC)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=50)
    | st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=3)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
timestamps = st.one_of(
    st.none(),
    st.text(max_size=30),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(
        ["2026-03-01T11:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2026-13-01"]
    ),
    st.integers(),
)
field_values = {
    "type": st.sampled_from(["track", "identify", "page", "screen", "group", "alias", "x"])
    | json_values,
    "event": st.sampled_from(["$exposure", "$change", "$latency", "$page", "Order Completed"])
    | json_values,
    "userId": st.text(max_size=5) | json_values,
    "anonymousId": st.text(max_size=5) | json_values,
    "messageId": st.text(max_size=5) | json_values,
    "timestamp": timestamps,
    "sentAt": timestamps,
    "properties": json_values,
    "context": json_values,
    "traits": json_values,
    "groupId": json_values,
    "previousId": json_values,
    "name": json_values,
}
messages = st.fixed_dictionaries({}, optional=field_values) | json_values
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


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_any_message_is_normalized_or_rejected_with_a_field(raw):
    try:
        envelope = normalize_event(raw, received_at=RECEIVED, source="app")
    except EventValidationError as error:
        assert isinstance(error.field, str) and error.reason
        return
    assert set(envelope) == ENVELOPE_KEYS
    assert envelope["userId"] or envelope["anonymousId"]
    assert isinstance(envelope["messageId"], str) and envelope["messageId"]
    stored = orjson.loads(orjson.dumps(envelope))
    datetime.fromisoformat(stored["timestamp"])
    assert stored["type"] in {"track", "identify", "page", "screen", "group", "alias"}


@settings(max_examples=50, deadline=None)
@given(st.lists(messages, max_size=8))
def test_batches_split_into_accepted_and_indexed_rejections(batch):
    accepted, rejected = validate_batch(batch, received_at=RECEIVED, source=None)
    assert len(accepted) + len(rejected) == len(batch)
    assert [r.index for r in rejected] == sorted({r.index for r in rejected})
    assert all(0 <= r.index < len(batch) for r in rejected)
