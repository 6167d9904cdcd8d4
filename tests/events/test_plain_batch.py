"""The whole-batch path (normalize_plain_batch) accepts only what normalize_batch accepts in
full, and then gives exactly its rows; well-formed batches do take it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tripwire.events import plain_batch
from tripwire.events.columns import ENVELOPE_BATCH_SCHEMA, batch_envelopes, normalize_batch
from tripwire.events.plain_batch import normalize_plain_batch

from .test_adversarial import messages as adversarial_messages
from .test_columns import plausible

RECEIVED = datetime(2026, 3, 1, 12, tzinfo=UTC)

plain_ids = st.sampled_from(["u1", "user-2", "a", "anon-7f3c", "日本"])
ids = st.one_of(
    plain_ids,
    plain_ids,
    st.text(st.sampled_from(list("ab9-_ .é日\u3000\t\x1f")), min_size=0, max_size=4),
    st.sampled_from(["x" * 255, "x" * 256, "x" * 257, "日" * 90, "日" * 257]),
)
texts = st.text(st.sampled_from(list('az "\\\x7f\x00é日/')), max_size=5)
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
    st.lists(st.integers(0, 3), max_size=2),
)
objects = st.dictionaries(
    st.sampled_from(["session_id", "$session_id", "revenue", "intent", "experiment", "variant"]),
    values | st.dictionaries(texts, values, max_size=2),
    max_size=4,
)
canonical_times = st.sampled_from(
    [
        "2026-03-01T11:00:00Z",
        "2026-03-01T11:00:00.250Z",
        "2026-02-28T23:59:59.999999Z",
        "2099-12-31T23:59:59Z",
        "1999-01-01T00:00:00Z",
    ]
)
well_formed = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["track", "track", "track", "identify", "page", "screen"]),
        "event": st.sampled_from(["Order Completed", "Turn Completed", "é 日", "E", "$exposure"]),
        "userId": ids,
        "timestamp": canonical_times,
    },
    optional={
        "anonymousId": ids,
        "messageId": ids,
        "name": st.none() | ids,
        "properties": objects | st.none(),
        "context": objects | st.none(),
        "traits": objects | st.none(),
        "sentAt": st.none(),
    },
)


@pytest.fixture(scope="module")
def small_batches():
    """Let the whole-batch path (and Arrow's time parsing) take batches of any size, and
    dump their objects in chunks of 3 rows (so that chunk boundaries are crossed)."""
    from tripwire.events import columns

    saved = plain_batch.MIN_ROWS, columns._ARROW_TIMES_MIN_ROWS, plain_batch._JSON_CHUNK
    plain_batch.MIN_ROWS = columns._ARROW_TIMES_MIN_ROWS = 1
    plain_batch._JSON_CHUNK = 3
    yield
    plain_batch.MIN_ROWS, columns._ARROW_TIMES_MIN_ROWS, plain_batch._JSON_CHUNK = saved


def assert_plain_agrees(batch: list[Any], max_event_bytes: int | None = 32 * 1024) -> bool:
    """If the whole-batch path takes ``batch``, normalize_batch accepts every message and
    stores the same rows. Returns whether it took it."""
    kwargs: dict[str, Any] = dict(received_at=RECEIVED, source="app")
    plain = normalize_plain_batch(batch, max_event_bytes=max_event_bytes, **kwargs)
    reference, rejected = normalize_batch(batch, max_event_bytes=max_event_bytes, **kwargs)
    if plain is None:
        return False
    assert rejected == []
    assert plain.batch.schema == ENVELOPE_BATCH_SCHEMA
    assert len(plain) == len(reference) == len(batch)
    generated = [m.get("messageId") is None for m in batch]
    for name in ENVELOPE_BATCH_SCHEMA.names:
        got, want = plain.batch.column(name), reference.batch.column(name)
        if name == "message_id" and any(generated):
            keep = pa.array([not g for g in generated])
            got, want = got.filter(keep), want.filter(keep)
        assert got.equals(want), (name, got, want)
    assert plain.message_ids == plain.batch.column("message_id").to_pylist()
    assert len(set(plain.message_ids[i] for i, g in enumerate(generated) if g)) == sum(generated)
    assert len(batch_envelopes(plain.batch)) == len(batch)
    return True


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(well_formed, min_size=1, max_size=8))
def test_well_formed_batches_agree_with_normalize_batch(small_batches, batch):
    taken = assert_plain_agrees(batch)
    # a batch normalize_batch accepts whole, of ids it trusts at a glance, must be taken
    _, rejected = normalize_batch(batch, received_at=RECEIVED, source="app")
    ids = [
        value
        for message in batch
        for key in ("userId", "anonymousId", "messageId", "name")
        if (value := message.get(key)) is not None
    ]
    plain_ids = all(
        value.isascii() and value.isprintable() and value.strip() == value and 0 < len(value) <= 255
        for value in ids
    )
    no_del = "\x7f" not in repr(batch)  # (a DEL byte: the objects are dumped one by one)
    assert taken == (not rejected) or not (plain_ids and no_del), batch


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(well_formed, min_size=1, max_size=6),
    st.lists(plausible | adversarial_messages, min_size=1, max_size=2),
    st.data(),
)
def test_a_doubtful_message_anywhere_is_left_to_normalize_batch(small_batches, good, bad, data):
    """Malformed or unusual messages mixed into well-formed ones: whenever the whole-batch
    path takes the batch, normalize_batch accepted all of it, with the same rows."""
    batch = list(good)
    for message in bad:
        batch.insert(data.draw(st.integers(0, len(batch))), message)
    assert_plain_agrees(batch)


def _large_batch(n: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "track",
            "event": ("Turn Completed", "Cart Updated")[i % 2],
            "userId": f"user-{i % 97}",
            "messageId": f"m-{i}",
            "timestamp": f"2026-11-0{1 + i % 9}T10:{i % 60:02d}:00.{i % 1000:03d}Z",
            "properties": {"session_id": f"s-{i // 12}", "latency_ms": 180.0 + i, "ok": i % 3 == 0},
            "context": {"locale": "de-DE", "device": {"model": "Echo Show"}},
        }
        for i in range(n)
    ]


def test_a_large_well_formed_batch_takes_the_whole_batch_path():
    batch = _large_batch(9000)  # past the dump chunks and the Arrow thresholds
    assert assert_plain_agrees(batch)


@pytest.mark.parametrize(
    ("change", "taken"),
    [
        ({"userId": "   "}, False),
        ({"userId": "\u3000x"}, True),  # not all whitespace: checked by str.isspace
        ({"userId": 7}, False),  # valid (made "7"), but only normalize_event converts it
        ({"messageId": ""}, False),
        ({"messageId": "x" * 256}, False),
        ({"event": "$identify"}, False),
        ({"timestamp": "2026-02-30T10:00:00Z"}, False),
        ({"timestamp": "2026-03-01T11:00:00+01:00"}, False),
        ({"properties": [1]}, False),
        ({"properties": {"blob": "x" * 40_000}}, False),
        ({"properties": {"bad": {1, 2}}}, False),
        ({"properties": {"when": datetime(2026, 1, 1)}}, True),  # orjson writes it alike
        ({"context": {"note": "\x7f"}}, True),  # a DEL byte: dumped one by one
        ({"sentAt": "2026-03-01T12:00:00Z"}, False),
        ({"sentAt": None}, True),  # a historical import's null sentAt: none
        ({"writeKey": "k"}, False),
    ],
)
def test_one_doubtful_message_in_a_large_batch(change, taken):
    """One message changed in a large batch: the path declines it (normalize_batch decides),
    or takes it with exactly normalize_batch's rows."""
    batch = _large_batch(600)
    batch[317] = {**batch[317], **change}
    assert assert_plain_agrees(batch) == taken


def test_plain_means_only_known_keys_counted_exactly():
    """The key count stops reading early only when it proves every message plain."""
    from tripwire.events.plain_batch import _read_plain

    batch = _large_batch(300)
    read = _read_plain(batch)
    assert read is not None
    assert read[0]["traits"] == [None] * 300 and read[1]["traits"] == {type(None)}
    assert read[0]["userId"] == [m["userId"] for m in batch]
    for extra in ({"writeKey": "k"}, {"integrations": {}}, {"$session_id": "s"}):
        odd = [*batch[:150], {**batch[150], **extra}, *batch[151:]]
        assert _read_plain(odd) is None, extra
    # a null or absent plain field is still plain (its column holds None there)
    for change in ({"traits": None}, {"name": "Home"}, {"anonymousId": "a"}, {"sentAt": None}):
        mixed = [*batch[:150], {**batch[150], **change}, *batch[151:]]
        result = _read_plain(mixed)
        assert result is not None, change
        ((key, value),) = change.items()
        assert result[0][key][150] == value
        assert result[0][key].count(value) == (300 if value is None else 1)
    without = [dict(batch[0]) for _ in range(300)]
    for message in without[::2]:
        del message["userId"]
        message["anonymousId"] = "a"
    result = _read_plain(without)
    assert result is not None and result[0]["anonymousId"].count("a") == 150


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(well_formed, min_size=2, max_size=10),
    st.lists(objects | st.none(), min_size=1, max_size=3),
    st.data(),
)
def test_shared_context_objects_are_dumped_once_with_the_same_texts(
    small_batches, batch, pool, data
):
    """Messages sharing a few context (and traits) objects, as a user's events do: each
    object is dumped once and its text taken per row; the rows are normalize_batch's."""
    shared = []
    for message in batch:
        message = dict(message)
        pick = data.draw(st.integers(0, len(pool) - 1))
        message["context"] = pool[pick]
        if data.draw(st.booleans()):
            message["traits"] = pool[-1 - pick]
        shared.append(message)
    assert_plain_agrees(shared)


def test_a_large_batch_of_per_user_contexts_takes_the_shared_dump():
    """Per-user context objects, a user's events adjacent (what the simulator sends); one
    context holds a DEL byte (its objects dumped one by one)."""
    from tripwire.events.plain_batch import _few_objects

    contexts = [{"locale": "de-DE", "user": u, "note": "\x7f" if u == 3 else ""} for u in range(40)]
    batch = _large_batch(2000)
    for i, message in enumerate(batch):
        message["context"] = contexts[i // 50]
    column = [m["context"] for m in batch]
    assert _few_objects(column) is not None
    assert _few_objects([dict(c) for c in column]) is None  # one object per row
    assert assert_plain_agrees(batch)


@pytest.mark.parametrize(
    "change",
    [
        {"event": "E\ud800"},
        {"userId": "u\ud800"},
        {"messageId": "m\ud800"},
        {"properties": {"session_id": "s\ud800"}},
        {"context": {"note": "\ud800"}},
    ],
)
def test_a_lone_surrogate_makes_the_path_decline(change):
    """Text Arrow (and JSON) cannot hold: declined without an exception, so normalize_batch
    decides exactly as before."""
    batch = _large_batch(300)
    batch[7] = {**batch[7], **change}
    assert (
        normalize_plain_batch(batch, received_at=RECEIVED, source="app", max_event_bytes=None)
        is None
    )
