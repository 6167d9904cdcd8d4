"""The lake's DuckDB fast path gives the same rows as the reference Python conversion."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tripwire.events.columns import envelopes_to_batch
from tripwire.store import lake
from tripwire.store.lake import (
    PropertyTypes,
    envelope_batch_to_table,
    envelopes_to_table,
    payloads_to_table,
    write_payloads,
)

JSON_COLUMNS = ("properties", "context", "traits")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.text(max_size=8),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=2),
    st.dictionaries(st.text(max_size=3), scalars, max_size=2),
)
keys = st.sampled_from(["revenue", "ok", "intent", "n", "bad key", "$x", "_y", "price"])
objects = st.dictionaries(keys, values, max_size=5)


@st.composite
def envelope(draw, index: int = 0):
    kind = draw(st.sampled_from(["track", "track", "identify", "page", "alias"]))
    properties = draw(objects)
    if draw(st.booleans()):
        properties["session_id"] = draw(st.one_of(st.text(max_size=4), st.integers(0, 99)))
    context = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "locale": st.sampled_from(["en-GB", "ja-JP"]),
                "device": st.fixed_dictionaries(
                    {},
                    optional={"model": st.sampled_from(["Echo Show", ""]), "type": st.just("tv")},
                ),
                "app": st.fixed_dictionaries({"version": st.just("5.1")}),
                "os": st.fixed_dictionaries({"name": st.just("iOS")}),
                "traits": objects,
            },
        )
    )
    return {
        "messageId": draw(st.uuids()).hex,
        "type": kind,
        "event": draw(st.sampled_from(["Order Completed", "A/B", "日本"]))
        if kind == "track"
        else None,
        "name": draw(st.one_of(st.none(), st.just("Home"))),
        "userId": draw(st.one_of(st.none(), st.just("u1"))),
        "anonymousId": "a1",
        "timestamp": draw(st.sampled_from(["2026-11-01T10:00:00Z", "2026-11-02T23:59:59.999999Z"])),
        "originalTimestamp": draw(st.one_of(st.none(), st.just("2026-11-01T09:00:00.5Z"))),
        "sentAt": None,
        "receivedAt": "2026-11-02T10:00:00Z",
        "properties": properties,
        "traits": draw(objects) if kind == "identify" else {},
        "context": context,
        "source": "app",
    }


def track_envelopes(
    events: list[str],
    properties: Callable[[str, int], dict[str, object]],
    context: dict[str, object] | None = None,
) -> list[dict[str, object]]:
    """One track envelope per event name, ``messageId`` its index, at one fixed time."""
    envelopes: list[dict[str, object]] = []
    for i, event in enumerate(events):
        message: dict[str, object] = {
            "messageId": str(i),
            "type": "track",
            "event": event,
            "timestamp": "2026-11-01T10:00:00Z",
            "receivedAt": "2026-11-01T10:00:01Z",
            "properties": properties(event, i),
        }
        if context is not None:
            message["context"] = context
        envelopes.append(message)
    return envelopes


def assert_same(reference: pa.Table, fast: pa.Table) -> None:
    assert reference.schema.equals(fast.schema), (reference.schema, fast.schema)
    for name in reference.column_names:
        left, right = reference[name].to_pylist(), fast[name].to_pylist()
        if name in JSON_COLUMNS:
            left = [orjson.loads(v) for v in left]
            right = [orjson.loads(v) for v in right]
        assert left == right, name


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(envelope(), min_size=1, max_size=12), min_size=1, max_size=3))
def test_fast_path_matches_reference_chunk_after_chunk(tmp_path_factory, chunks):
    folder = tmp_path_factory.mktemp("types")
    reference_types = PropertyTypes(folder / "a.json")
    fast_types = PropertyTypes(folder / "b.json")
    for chunk in chunks:
        payloads = [orjson.dumps(e) for e in chunk]
        reference = envelopes_to_table([orjson.loads(p) for p in payloads], reference_types)
        fast = payloads_to_table(payloads, fast_types)
        assert_same(reference, fast)
        assert reference_types.types == fast_types.types


def test_first_type_seen_wins_within_and_across_chunks(tmp_path):
    types = PropertyTypes(tmp_path / "t.json")
    first = [
        {"messageId": "a", "timestamp": "2026-11-01T10:00:00Z", "properties": {"k": None}},
        {"messageId": "b", "timestamp": "2026-11-01T10:00:00Z", "properties": {"k": "text"}},
        {"messageId": "c", "timestamp": "2026-11-01T10:00:00Z", "properties": {"k": 3}},
    ]
    table = payloads_to_table([orjson.dumps(e) for e in first], types)
    assert types.types == {"prop_k": "string"}
    assert table["prop_k"].to_pylist() == [None, "text", None]
    later = [{"messageId": "d", "timestamp": "2026-11-01T10:00:00Z", "properties": {"k": 4.5}}]
    # As in the reference conversion, a chunk without a value of the column's type has no
    # such column (the view's union_by_name restores it as NULL).
    assert "prop_k" not in payloads_to_table([orjson.dumps(e) for e in later], types).column_names


def test_keys_differing_only_by_case_fall_back_to_the_reference_path(tmp_path):
    envelope = {
        "messageId": "a",
        "timestamp": "2026-11-01T10:00:00Z",
        "properties": {"K": 1, "k": 2},
    }
    table = payloads_to_table([orjson.dumps(envelope)], PropertyTypes(tmp_path / "t.json"))
    assert (table["prop_K"].to_pylist(), table["prop_k"].to_pylist()) == ([1.0], [2.0])


def test_write_payloads_partitions_like_write_events(tmp_path):
    envelopes = [
        {"messageId": "a", "type": "track", "event": "A/B", "timestamp": "2026-11-01T10:00:00Z"},
        {"messageId": "b", "type": "identify", "timestamp": "2026-11-02T10:00:00Z"},
    ]
    files = write_payloads(tmp_path, [orjson.dumps(e) for e in envelopes], file_id="x")
    assert sorted(f.relative_to(tmp_path).as_posix() for f in files) == [
        "events/date=2026-11-01/event=A%2FB/part-x.parquet",
        "events/date=2026-11-02/event=%24identify/part-x.parquet",
    ]


def test_a_key_mixing_huge_and_negative_integers_is_flattened_as_double(tmp_path):
    # DuckDB's structure of such a key is HUGEINT; the reference flattens both as DOUBLE.
    envelopes = [
        {"messageId": "a", "timestamp": "2026-11-01T10:00:00Z", "properties": {"n": 2**63}},
        {"messageId": "b", "timestamp": "2026-11-01T10:00:00Z", "properties": {"n": -5}},
    ]
    payloads = [orjson.dumps(e) for e in envelopes]
    reference_types = PropertyTypes(tmp_path / "a.json")
    fast_types = PropertyTypes(tmp_path / "b.json")
    reference = envelopes_to_table([orjson.loads(p) for p in payloads], reference_types)
    fast = payloads_to_table(payloads, fast_types)
    assert_same(reference, fast)
    assert fast["prop_n"].to_pylist() == [float(2**63), -5.0]


def test_uniform_and_mixed_keys_in_one_chunk_match_the_reference(tmp_path):
    # "a" has one type in the chunk (typed json_transform); "b" mixes types (per-value test).
    envelopes = [
        {"messageId": str(i), "timestamp": "2026-11-01T10:00:00Z", "properties": properties}
        for i, properties in enumerate(
            [{"a": 1, "b": "x"}, {"a": 2.5, "b": 3}, {"a": None, "b": True}, {"b": "y"}]
        )
    ]
    payloads = [orjson.dumps(e) for e in envelopes]
    reference_types = PropertyTypes(tmp_path / "a.json")
    fast_types = PropertyTypes(tmp_path / "b.json")
    reference = envelopes_to_table([orjson.loads(p) for p in payloads], reference_types)
    fast = payloads_to_table(payloads, fast_types)
    assert_same(reference, fast)
    assert fast["prop_b"].to_pylist() == ["x", None, None, "y"]
    assert reference_types.types == fast_types.types


# -- the archiver's path: envelope batches (buffer segments) ---------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(envelope(), min_size=1, max_size=12), min_size=1, max_size=3))
def test_envelope_batches_match_reference_chunk_after_chunk(tmp_path_factory, chunks):
    folder = tmp_path_factory.mktemp("types")
    reference_types = PropertyTypes(folder / "a.json")
    batch_types = PropertyTypes(folder / "b.json")
    for chunk in chunks:
        reference = envelopes_to_table(chunk, reference_types)
        columnar = envelope_batch_to_table(envelopes_to_batch(chunk).batch, batch_types)
        assert_same(reference, columnar)
        assert reference_types.types == batch_types.types


def test_large_chunk_with_conflicting_and_time_like_values_matches_reference(tmp_path):
    envelopes = [
        {
            "messageId": str(i),
            "type": "identify" if i % 7 == 0 else "track",
            "event": "E",
            "timestamp": f"2026-11-0{1 + i % 3}T10:00:00Z",
            "receivedAt": "2026-11-04T00:00:00Z",
            "properties": {
                "n": i if i % 500 else "text",  # one key, two kinds: split in halves
                "when": "2026-11-01T10:00:00Z" if i % 2 else "2026-11-01",
                "session_id": i,
                "nested": {"a": i},
            },
            "context": {
                "locale": "en-GB",
                "device": {"model": "" if i % 3 else "Echo", "type": "speaker"},
                "traits": {"prime": i % 2 == 0, "tier": "gold"},
            },
            "traits": {"tier": None, "plan": "pro"}
            if i == 700
            else ({"tier": "x"} if i % 7 == 0 else {}),
        }
        for i in range(3000)
    ]
    reference_types = PropertyTypes(tmp_path / "a.json")
    batch_types = PropertyTypes(tmp_path / "b.json")
    reference = envelopes_to_table(envelopes, reference_types)
    columnar = envelope_batch_to_table(envelopes_to_batch(envelopes).batch, batch_types)
    assert_same(reference, columnar)
    assert reference_types.types == batch_types.types
    assert columnar["prop_when"].to_pylist()[:2] == ["2026-11-01", "2026-11-01T10:00:00Z"]


def test_a_chunked_and_sliced_segment_table_matches_reference(tmp_path, monkeypatch):
    """The archiver's input: several segments (record batches) and a chunk that starts and
    ends inside one; the JSON texts of every piece are parsed back to back, in order, on the
    columnar path (not by falling back to the reference conversion)."""
    envelopes = [
        {
            "messageId": str(i),
            "type": "track",
            "event": "E",
            "timestamp": "2026-11-01T10:00:00Z",
            "receivedAt": "2026-11-01T10:00:01Z",
            "properties": {"n": i, "text": f"line\n{i} {{}}", "ok": i % 2 == 0},
            "context": {"locale": "en-GB" if i % 3 else "ja-JP"},
        }
        for i in range(40)
    ]
    segments = [
        envelopes_to_batch(envelopes[start : start + 10]).batch for start in (0, 10, 20, 30)
    ]
    table = pa.Table.from_batches(segments).slice(7, 26)  # rows 7..32: inside the 1st and 4th
    assert table["properties"].num_chunks == 4
    reference = envelopes_to_table(envelopes[7:33], PropertyTypes(tmp_path / "a.json"))

    def no_fallback(*args, **kwargs):
        raise AssertionError("the columnar path fell back to the reference conversion")

    monkeypatch.setattr(lake, "envelopes_to_table", no_fallback)
    columnar = envelope_batch_to_table(table, PropertyTypes(tmp_path / "b.json"))
    assert_same(reference, columnar)
    assert columnar["prop_n"].to_pylist() == [float(i) for i in range(7, 33)]


def test_the_previous_chunks_properties_schema_is_tried_first_and_exact(tmp_path, monkeypatch):
    """Chunk after chunk, properties are parsed with the previous chunk's schema when it fits
    (one parse, time-like strings kept as text) and by inference when a key is new, a kind
    changes, or an integer column meets a fraction; the rows always equal the reference's."""

    def chunk(first: int, properties) -> list[dict[str, object]]:
        return [
            {
                "messageId": f"{first}-{i}",
                "type": "track",
                "event": "E",
                "timestamp": "2026-11-01T10:00:00Z",
                "receivedAt": "2026-11-01T10:00:01Z",
                "properties": properties(i),
                "context": {"locale": "en-GB"},
            }
            for i in range(600)
        ]

    chunks = [
        chunk(0, lambda i: {"n": i, "at": "2026-11-01T10:00:00Z", "ok": True}),
        chunk(1, lambda i: {"n": i + 1, "at": "2026-11-02T10:00:00Z", "ok": False}),  # fits
        chunk(2, lambda i: {"n": i / 2, "at": "x", "ok": True}),  # n: int64 meets 0.5
        chunk(3, lambda i: {"n": 2**60 + i, "at": "y", "ok": False}),  # fits (n: double)
        chunk(4, lambda i: {"n": i, "at": "2026-11-03", "new": "key"}),  # a new key
        chunk(5, lambda i: {"n": "text", "at": 1, "new": "key"}),  # kinds change
    ]
    reads = []
    real_read = lake.pa_json.read_json

    def counting(*args, **kwargs):
        reads.append(kwargs.get("parse_options"))
        return real_read(*args, **kwargs)

    monkeypatch.setattr(lake.pa_json, "read_json", counting)
    reference_types = PropertyTypes(tmp_path / "a.json")
    batch_types = PropertyTypes(tmp_path / "b.json")
    parses = []
    for envelopes in chunks:
        reads.clear()
        reference = envelopes_to_table(envelopes, reference_types)
        columnar = envelope_batch_to_table(envelopes_to_batch(envelopes).batch, batch_types)
        assert_same(reference, columnar)
        assert reference_types.types == batch_types.types
        parses.append(len(reads))
        if envelopes is chunks[3]:
            assert columnar["prop_n"].to_pylist() == [float(2**60 + i) for i in range(600)]
    # context and traits (distinct objects) are one read each per chunk; properties one
    # read when the previous chunk's schema fits (chunks 1 and 3), else a refused read (none
    # for the first chunk) and inference, plus a read as text when inference met time-like
    # strings (chunks 0 and 4)
    assert parses == [4, 3, 4, 3, 5, 4]
    assert batch_types.types["prop_at"] == "string"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(envelope(), min_size=1, max_size=12), min_size=1, max_size=3))
def test_properties_parsed_per_event_match_reference_chunk_after_chunk(tmp_path_factory, chunks):
    """As above with every event name its own properties group (the archiver's chunks have
    thousands of rows per event; these a few)."""
    folder = tmp_path_factory.mktemp("types")
    reference_types = PropertyTypes(folder / "a.json")
    batch_types = PropertyTypes(folder / "b.json")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lake, "_MIN_GROUP_ROWS", 1)
        for chunk in chunks:
            reference = envelopes_to_table(chunk, reference_types)
            columnar = envelope_batch_to_table(envelopes_to_batch(chunk).batch, batch_types)
            assert_same(reference, columnar)
            assert reference_types.types == batch_types.types


def test_properties_are_parsed_once_per_event_and_kinds_settled_across_events(
    tmp_path, monkeypatch
):
    """Each event's properties are one parse of its own keys; a new key with two kinds in two
    events takes the kind of the first value in row order, a known key keeps its kind (the
    other event's values stay in the JSON only), all without the reference conversion."""
    rows = 3 * lake._MIN_GROUP_ROWS

    def properties(event: str, i: int) -> dict[str, object]:
        if event == "A":  # "mixed": a string, first seen at row 5 (an A row)
            return {"mixed": f"s{i}", "known": "text", "a_only": i}
        if event == "B":  # "mixed": a number, first seen at row 8 (a B row)
            return {"mixed": i, "known": i, "at": "2026-11-01T10:00:00Z"} if i >= 7 else {}
        return {"c": i % 2 == 0}

    # B is the first event of the chunk (its group comes first) but not the first with "mixed"
    events = ["B" if i == 0 else "C" if i < 5 else "AB"[i % 2 == 0] for i in range(rows)]
    envelopes = track_envelopes(events, properties, context={"locale": "en-GB"})
    assert events[:9] == ["B", "C", "C", "C", "C", "A", "B", "A", "B"]
    reference_types = PropertyTypes(tmp_path / "a.json")
    reference_types.types["prop_known"] = "double"
    batch_types = PropertyTypes(tmp_path / "b.json")
    batch_types.types["prop_known"] = "double"
    reference = envelopes_to_table(envelopes, reference_types)

    def no_fallback(*args, **kwargs):
        raise AssertionError("the columnar path fell back to the reference conversion")

    reads = []
    real_read = lake.pa_json.read_json

    def counting(*args, **kwargs):
        reads.append(kwargs.get("parse_options"))
        return real_read(*args, **kwargs)

    monkeypatch.setattr(lake, "envelopes_to_table", no_fallback)
    monkeypatch.setattr(lake.pa_json, "read_json", counting)
    columnar = envelope_batch_to_table(envelopes_to_batch(envelopes).batch, batch_types)
    assert_same(reference, columnar)
    assert reference_types.types == batch_types.types
    assert batch_types.types["prop_mixed"] == "string"
    assert columnar["prop_known"].to_pylist()[:10] == [None] * 8 + [8.0, None]
    # properties: A, B (inferred, then as text: time-like), C; context and traits: one each
    assert len(reads) == 6


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(envelope(), min_size=1, max_size=12), min_size=1, max_size=3))
def test_partitioned_conversion_is_the_table_in_partition_order(tmp_path_factory, chunks):
    """The archiver's conversion (rows gathered into partition order first) gives the rows of
    the reference in the order of ``partition_rows``, and ``write_table`` keeps that order."""
    folder = tmp_path_factory.mktemp("types")
    reference_types = PropertyTypes(folder / "a.json")
    batch_types = PropertyTypes(folder / "b.json")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lake, "_MIN_GROUP_ROWS", 1)
        for chunk in chunks:
            batch = envelopes_to_batch(chunk).batch
            order, _ = lake.partition_rows(pa.Table.from_batches([batch]))
            reference = envelopes_to_table(chunk, reference_types).take(order)
            grouped = lake.envelope_batch_to_partitions(batch, batch_types)
            assert_same(reference, grouped)
            assert reference_types.types == batch_types.types
            again, _ = lake.partition_rows(grouped)
            assert again.to_pylist() == list(range(len(chunk)))


def test_partitioned_conversion_settles_a_new_keys_kind_by_offset_order(tmp_path, monkeypatch):
    """Gathered by partition, event B's rows come first (its code is the chunk's first), but
    event A holds the first value of the new key "mixed": its kind wins, as in the reference."""
    rows = 3 * lake._MIN_GROUP_ROWS
    events = ["B"] + ["AB"[i % 2] for i in range(1, rows)]

    def properties(event: str, i: int) -> dict[str, object]:
        if event == "A":
            return {"mixed": f"s{i}"}
        return {"mixed": i} if i >= 10 else {"other": True}

    envelopes = track_envelopes(events, properties)
    batch = envelopes_to_batch(envelopes).batch
    order, _ = lake.partition_rows(pa.Table.from_batches([batch]))
    reference_types = PropertyTypes(tmp_path / "a.json")
    reference = envelopes_to_table(envelopes, reference_types).take(order)

    def no_fallback(*args, **kwargs):
        raise AssertionError("the columnar path fell back to the reference conversion")

    monkeypatch.setattr(lake, "envelopes_to_table", no_fallback)
    monkeypatch.setattr(lake, "envelope_batch_to_table", no_fallback)
    batch_types = PropertyTypes(tmp_path / "b.json")
    grouped = lake.envelope_batch_to_partitions(batch, batch_types)
    assert_same(reference, grouped)
    assert batch_types.types == reference_types.types
    assert batch_types.types["prop_mixed"] == "string"
    assert grouped["event"].to_pylist()[0] == "B"
