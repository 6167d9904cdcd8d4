"""The Parquet lake: one layout, one envelope-to-row conversion, one `events` view.

Layout: ``<lake>/events/date=YYYY-MM-DD/event=<url-quoted name>/part-<id>.parquet``.
Each file holds the envelope columns, the typed context columns, the raw JSON and every
top-level scalar property flattened as ``prop_<key>`` (and ``context.traits``/identify
traits as ``trait_<key>``). The first type seen for a flattened key is recorded in
``<lake>/events/_property_types.json`` and wins for ever after, so the union of all files
has one stable type per column; values of another type stay only in the JSON.

Every reader goes through :func:`events_relation_sql` (DuckDB) so that the view has the same
columns whichever files exist, including none.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq

TS = pa.timestamp("us", tz="UTC")

#: Columns every lake file has, in this order.
ENVELOPE_FIELDS: list[pa.Field] = [
    pa.field("message_id", pa.string(), nullable=False),
    pa.field("type", pa.string(), nullable=False),
    pa.field("event", pa.string(), nullable=False),
    pa.field("name", pa.string()),
    pa.field("user_id", pa.string()),
    pa.field("anonymous_id", pa.string()),
    pa.field("timestamp", TS, nullable=False),
    pa.field("original_timestamp", TS),
    pa.field("sent_at", TS),
    pa.field("received_at", TS, nullable=False),
    pa.field("source", pa.string()),
    pa.field("locale", pa.string()),
    pa.field("device", pa.string()),
    pa.field("app_version", pa.string()),
    pa.field("os", pa.string()),
    pa.field("session_id", pa.string()),
    pa.field("properties", pa.string()),
    pa.field("context", pa.string()),
    pa.field("traits", pa.string()),
]
ENVELOPE_SCHEMA = pa.schema(ENVELOPE_FIELDS)
ENVELOPE_COLUMNS = [f.name for f in ENVELOPE_FIELDS]

PROPERTY_PREFIX = "prop_"
TRAIT_PREFIX = "trait_"
_FLATTENABLE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_TYPE_NAMES = {"double": pa.float64(), "boolean": pa.bool_(), "string": pa.string()}
PROPERTY_TYPES_FILE = "_property_types.json"

NON_TRACK_EVENT_NAMES = {
    "identify": "$identify",
    "page": "$page",
    "screen": "$screen",
    "group": "$group",
    "alias": "$alias",
}


def event_name_of(envelope: Mapping[str, Any]) -> str:
    """The lake's ``event`` value: the track name, or ``$<type>`` for other calls."""
    kind = envelope.get("type", "track")
    if kind == "track":
        return str(envelope.get("event") or "")
    return NON_TRACK_EVENT_NAMES.get(kind, f"${kind}")


def _scalar_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "double"
    if isinstance(value, str):
        return "string"
    return None


def _parse_ts(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _device_of(context: Mapping[str, Any]) -> str | None:
    device = context.get("device")
    if isinstance(device, Mapping):
        return device.get("model") or device.get("type")
    return None


def _nested(context: Mapping[str, Any], section: str, key: str) -> Any:
    part = context.get(section)
    return part.get(key) if isinstance(part, Mapping) else None


def _json(value: Any) -> str:
    return orjson.dumps(value if value is not None else {}, default=str).decode()


class PropertyTypes:
    """The lake's registry of flattened column types (first type seen wins)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.types: dict[str, str] = {}
        if path.exists():
            self.types = json.loads(path.read_text())
        #: Per event name (``None``: the chunk's small groups together), the Arrow schema
        #: the previous chunk's ``properties`` of that event parsed to (times kept as text),
        #: which the next chunk's are parsed with first: see :func:`_parse_distinct` and
        #: :func:`_flatten_properties`. A hint only (never saved): any key or kind it does
        #: not foresee means inference.
        self.properties_schemas: dict[str | None, pa.Schema] = {}

    def observe(self, column: str, value: Any) -> bool:
        """Record ``column``'s type if new; True when ``value`` fits the column."""
        kind = _scalar_type(value)
        if kind is None:
            return False
        known = self.types.setdefault(column, kind)
        return known == kind

    def arrow_type(self, column: str) -> pa.DataType:
        return _TYPE_NAMES[self.types[column]]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.types, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


def envelopes_to_table(envelopes: Iterable[Mapping[str, Any]], types: PropertyTypes) -> pa.Table:
    """Convert normalized envelopes (see docs/world.md) to one Arrow table of lake rows."""
    columns: dict[str, list[Any]] = {name: [] for name in ENVELOPE_COLUMNS}
    flat: dict[str, dict[int, Any]] = defaultdict(dict)
    count = 0
    for envelope in envelopes:
        context = envelope.get("context") or {}
        properties = envelope.get("properties") or {}
        traits = dict(context.get("traits") or {}) if isinstance(context, Mapping) else {}
        traits.update(envelope.get("traits") or {})
        row = columns
        row["message_id"].append(str(envelope["messageId"]))
        row["type"].append(str(envelope.get("type", "track")))
        row["event"].append(event_name_of(envelope))
        row["name"].append(envelope.get("name"))
        row["user_id"].append(envelope.get("userId"))
        row["anonymous_id"].append(envelope.get("anonymousId"))
        row["timestamp"].append(_parse_ts(envelope["timestamp"]))
        row["original_timestamp"].append(_parse_ts(envelope.get("originalTimestamp")))
        row["sent_at"].append(_parse_ts(envelope.get("sentAt")))
        row["received_at"].append(_parse_ts(envelope.get("receivedAt") or envelope["timestamp"]))
        row["source"].append(envelope.get("source"))
        row["locale"].append(context.get("locale") if isinstance(context, Mapping) else None)
        row["device"].append(_device_of(context) if isinstance(context, Mapping) else None)
        row["app_version"].append(_nested(context, "app", "version"))
        row["os"].append(_nested(context, "os", "name"))
        session = properties.get("session_id", properties.get("$session_id"))
        row["session_id"].append(None if session is None else str(session))
        row["properties"].append(_json(properties))
        row["context"].append(_json(context))
        row["traits"].append(_json(envelope.get("traits")))
        for prefix, values in ((PROPERTY_PREFIX, properties), (TRAIT_PREFIX, traits)):
            for key, value in values.items():
                if value is None or not _FLATTENABLE_KEY.match(key):
                    continue
                column = prefix + key
                if types.observe(column, value):
                    flat[column][count] = float(value) if types.types[column] == "double" else value
        count += 1
    arrays: list[pa.Array] = [pa.array(columns[f.name], type=f.type) for f in ENVELOPE_FIELDS]
    fields = list(ENVELOPE_FIELDS)
    for column in sorted(flat):
        values = flat[column]
        fields.append(pa.field(column, types.arrow_type(column)))
        arrays.append(
            pa.array([values.get(i) for i in range(count)], type=types.arrow_type(column))
        )
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


# -- the archiver's path: envelope batches (buffer segments) to lake rows ----------------------


class _MixedChunk(Exception):
    """The chunk's JSON objects give one key two kinds of value (or otherwise need the
    reference conversion): convert it in smaller pieces."""


#: Below this many rows a chunk the columnar path cannot take goes to the reference.
_SPLIT_ROWS = 512


def _json_texts(column: pa.ChunkedArray | pa.Array) -> pa.Buffer:
    """The JSON texts of a string column back to back, as one buffer: the values buffer of
    each chunk as is (zero copy for a single chunk; the chunks' bytes joined otherwise).

    No separator is needed: Arrow's JSON reader parses a run of objects (each one is
    self-delimiting) when it reads the buffer as one block (:func:`_json_read_options`).
    Appending a newline to every value instead (``binary_join_element_wise``) cost ~0.35
    CPU-µs per event for the properties column, a copy of every text.
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = []
    for array in chunks:
        if len(array) == 0:
            continue
        if array.type != pa.string():
            array = array.cast(pa.string())
        offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)
        begin, end = int(offsets[array.offset]), int(offsets[array.offset + len(array)])
        parts.append(array.buffers()[2].slice(begin, end - begin))
    if len(parts) == 1:
        return parts[0]
    return pa.py_buffer(b"".join(memoryview(part) for part in parts))


def _without_timestamps(kind: pa.DataType) -> tuple[pa.DataType, bool]:
    """``kind`` with every (inferred) timestamp replaced by string, and whether it had one."""
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return pa.string(), True
    if pa.types.is_struct(kind):
        fields = []
        changed = False
        for child in kind:
            child_type, child_changed = _without_timestamps(child.type)
            changed |= child_changed
            fields.append(pa.field(child.name, child_type))
        return pa.struct(fields), changed
    if pa.types.is_list(kind):
        value_type, changed = _without_timestamps(kind.value_type)
        return pa.list_(value_type), changed
    return kind, False


def _parse_objects(
    column: pa.ChunkedArray | pa.Array,
    rows: int,
    *,
    repeated: bool = True,
    schema: pa.Schema | None = None,
) -> tuple[pa.Table, pa.Array | None]:
    """Parse a column of JSON objects (Arrow's JSON reader). Strings that look like times
    stay strings (the reader would make them timestamps).

    A column with many repeated texts (a user's context, empty traits) is parsed once per
    distinct text: the result is then the table of distinct objects and the row → distinct
    object ``indices`` (the caller takes rows of the few columns it needs with
    :func:`_rows_of`, not of every nested field); else ``(table, None)``, one row per row.
    ``repeated=False`` (properties: nearly one text per row) skips the hashing that would
    only find that out; ``schema`` is then tried first (see :func:`_parse_distinct`)."""
    if not repeated:
        return _parse_distinct(column, rows, schema), None
    encoded = pc.dictionary_encode(column)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    if len(encoded.dictionary) * 2 <= rows:
        distinct = _parse_distinct(encoded.dictionary, len(encoded.dictionary))
        # (``take`` of lists of nulls inside structs yields malformed arrays in pyarrow 26:
        # such columns are parsed row by row instead)
        if not any(_has_list(field.type) for field in distinct.schema):
            return distinct, encoded.indices
    return _parse_distinct(column, rows), None


def _rows_of(values: Any, indices: pa.Array | None) -> Any:
    """Per-row values of a column computed on distinct objects (see :func:`_parse_objects`)."""
    if values is None or indices is None:
        return values
    return values.take(indices)


def _has_list(kind: pa.DataType) -> bool:
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return True
    return pa.types.is_struct(kind) and any(_has_list(child.type) for child in kind)


#: One thread: the archiver shares 2 cores with the server, and Arrow's threaded JSON reader
#: costs ~40% more CPU for the same rows (block splitting, chunked output to combine).
_JSON_THREADS = False
#: Arrow's reader takes a block size up to 2**31 - 1 bytes; texts of a chunk beyond that
#: (never with the default chunk size: 200,000 events of ~1 KB) are split into blocks, which
#: needs the newline-delimited form.
_MAX_BLOCK = (1 << 31) - 1


def _json_read_options(size: int) -> pa_json.ReadOptions:
    """One block holding all ``size`` bytes: no block splitting (which looks for newlines
    between objects), one output chunk."""
    return pa_json.ReadOptions(use_threads=_JSON_THREADS, block_size=max(size, 1))


def _parse_distinct(
    column: pa.ChunkedArray | pa.Array, rows: int, schema: pa.Schema | None = None
) -> pa.Table:
    """The objects of a column of JSON texts as a table, times kept as text.

    With ``schema`` (the previous chunk's, :attr:`PropertyTypes.properties_schemas`) the
    texts are parsed with it as an explicit schema that refuses anything else (a key it
    lacks, a value of another kind: Arrow raises), so a success is the table inference
    would give, up to integers read as the doubles they become in the lake anyway and
    keys absent from this chunk as all-null columns (dropped downstream). Any refusal means
    inference, which reads time-like strings as timestamps: those columns are then parsed
    a second time as strings. Measured on world-shaped properties with one time-like
    string: 2.2 -> 1.1 CPU-µs per event.
    """
    data = _json_texts(column)
    if data.size > _MAX_BLOCK:  # pragma: no cover - multi-GB chunks only
        joined = pc.binary_join_element_wise(column, "\n", "")
        data = _json_texts(joined)
        options = pa_json.ReadOptions(use_threads=_JSON_THREADS, block_size=16 << 20)
    else:
        options = _json_read_options(data.size)

    def read(parse: pa_json.ParseOptions | None = None) -> pa.Table:
        return pa_json.read_json(pa.BufferReader(data), read_options=options, parse_options=parse)

    if schema is not None:
        try:
            table = read(
                pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
            )
        except pa.ArrowException:
            pass  # not what the hint foresaw: infer
        else:
            if table.num_rows == rows:
                return table
    try:
        table = read()
        inferred, changed = _without_timestamps(pa.struct(list(table.schema)))
        if changed:
            table = read(pa_json.ParseOptions(explicit_schema=pa.schema(list(inferred))))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise _MixedChunk(str(error)) from None
    if table.num_rows != rows:
        raise _MixedChunk(f"parsed {table.num_rows} objects from {rows} rows")
    return table


def _kind(kind: pa.DataType) -> str | None:
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return "double"
    if pa.types.is_boolean(kind):
        return "boolean"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "string"
    return None


def _string_of(values: pa.ChunkedArray | pa.Array | None, rows: int) -> pa.Array:
    """A context field as the lake's string column (null where absent)."""
    if values is None or pa.types.is_null(values.type):
        return pa.nulls(rows, pa.string())
    if isinstance(values, pa.ChunkedArray):
        try:
            values = values.combine_chunks()
        except pa.ArrowException as error:
            raise _MixedChunk(str(error)) from None
    if _kind(values.type) is None:
        raise _MixedChunk("a context field is not a scalar")
    return values.cast(pa.string())


def _child(values: pa.ChunkedArray | pa.Array | None, name: str) -> pa.Array | None:
    if values is None:
        return None
    if isinstance(values, pa.ChunkedArray):
        try:
            values = values.combine_chunks()
        except pa.ArrowException as error:
            raise _MixedChunk(str(error)) from None
    if pa.types.is_null(values.type):
        return None
    if not pa.types.is_struct(values.type):
        raise _MixedChunk(f"context.{name}'s parent is not an object")
    if values.type.get_field_index(name) < 0:
        return None
    return pc.struct_field(values, name)


def _columns_of(values: pa.ChunkedArray | pa.Array | pa.Table | None) -> dict[str, Any]:
    if values is None:
        return {}
    if isinstance(values, pa.Table):
        return {name: values[name] for name in values.column_names}
    if isinstance(values, pa.ChunkedArray):
        try:
            values = values.combine_chunks()
        except pa.ArrowException as error:  # e.g. lists of nulls taken from a dictionary
            raise _MixedChunk(str(error)) from None
    if pa.types.is_null(values.type):
        return {}
    if not pa.types.is_struct(values.type):
        raise _MixedChunk("traits is not an object")
    return {
        values.type.field(i).name: pc.struct_field(values, [i])
        for i in range(values.type.num_fields)
    }


def _flatten(
    prefix: str, columns: Mapping[str, Any], types: PropertyTypes, out: dict[str, pa.Array]
) -> None:
    """Add the flattenable scalar keys of parsed objects as lake columns (first kind wins)."""
    for key, values in columns.items():
        if not _FLATTENABLE_KEY.match(key):
            continue
        kind = _kind(values.type)
        if kind is None:
            continue
        column = prefix + key
        if types.types.setdefault(column, kind) != kind:
            continue  # every value has another type than the column's: all null
        out[column] = pc.cast(values, _TYPE_NAMES[kind], safe=False)


#: Events with fewer rows than this in a chunk have their properties parsed together (one
#: group) rather than one group each: a parse has a fixed cost (~0.1 ms).
_MIN_GROUP_ROWS = 1_000


def _event_groups(
    events: pa.ChunkedArray | pa.Array,
) -> tuple[np.ndarray | None, list[tuple[str | None, int, int]]]:
    """Rows grouped by event name for :func:`_flatten_properties`: ``order`` (row indices,
    stable, group after group; ``None`` when each event's rows are already contiguous, as in
    :func:`envelope_batch_to_partitions`) and each group's ``(event name, start, stop)`` in
    that order. Events with fewer than :data:`_MIN_GROUP_ROWS` rows share a group named
    ``None`` (adjacent ones, when the rows are already grouped)."""
    encoded = pc.dictionary_encode(events)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    names: list[str | None] = [*encoded.dictionary.to_pylist(), None]
    codes = pc.fill_null(encoded.indices, len(names) - 1).to_numpy().astype(np.int64)
    counts = np.bincount(codes, minlength=len(names))
    small = counts < _MIN_GROUP_ROWS
    small[-1] = True  # null names (never in the lake's rows) with the small ones
    starts = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    if len(starts) + 1 == np.count_nonzero(counts):  # one run per event: grouped already
        groups: list[tuple[str | None, int, int]] = []
        for start, stop in itertools.pairwise([0, *starts.tolist(), len(codes)]):
            name = names[codes[start]]
            if small[codes[start]]:
                name = None
                if groups and groups[-1][0] is None and groups[-1][2] == start:
                    start = groups.pop()[1]  # adjacent small runs: one group
            groups.append((name, start, stop))
        return None, groups
    key = np.where(small[codes], len(names) - 1, codes)
    order = np.argsort(key, kind="stable")
    sizes = np.bincount(key, minlength=len(names))
    groups = []
    start = 0
    for code in np.flatnonzero(sizes):
        stop = start + int(sizes[code])
        groups.append((names[code], start, stop))
        start = stop
    return order, groups


def _flatten_properties(
    column: pa.ChunkedArray | pa.Array,
    events: pa.ChunkedArray | pa.Array,
    types: PropertyTypes,
    out: dict[str, pa.Array],
    row_numbers: np.ndarray | None = None,
) -> None:
    """Parse the ``properties`` JSON texts and add their flattenable scalar keys to ``out`` as
    ``prop_`` columns (first kind seen in row order wins, as :func:`_flatten`).

    The texts are parsed per event name: Arrow's JSON reader costs about one step per row and
    column of the result, and each event has a few keys of the chunk's many (demo world:
    ~40 keys, ≤ 10 per event; 200,000 events' properties parse in ~0.15-0.2 s, one parse
    per event, instead of ~0.65 s at once). Rows not grouped by event are gathered into groups and the groups' values put
    back in row order (a ``take`` of the texts, and one per column). Each group is parsed
    with its event's schema of the previous chunk first. ``row_numbers``: the rows' order
    of arrival when it is not the table's (for "first kind seen").
    """
    rows = len(column)
    order, groups = _event_groups(events)
    if len(groups) <= 1:
        name = groups[0][0] if groups else None
        parsed = _parse_distinct(column, rows, types.properties_schemas.get(name))
        types.properties_schemas[name] = parsed.schema
        _flatten(PROPERTY_PREFIX, _columns_of(parsed), types, out)
        return
    texts = column if order is None else column.take(pa.array(order))
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    # per key: (group index, kind, values) of the groups where it holds scalar values
    found: dict[str, list[tuple[int, str, pa.Array]]] = defaultdict(list)
    for index, (name, start, stop) in enumerate(groups):
        parsed = _parse_distinct(
            texts.slice(start, stop - start), stop - start, types.properties_schemas.get(name)
        )
        types.properties_schemas[name] = parsed.schema
        for key, column_values in _columns_of(parsed).items():
            values = _combined(column_values)
            kind = _kind(values.type)
            if kind is not None and values.null_count < len(values) and _FLATTENABLE_KEY.match(key):
                found[key].append((index, kind, values))
    arrival = np.arange(rows, dtype=np.int64) if order is None else order
    if row_numbers is not None:
        arrival = row_numbers[arrival]
    inverse = None
    if order is not None:
        inverse = np.empty(rows, dtype=np.int64)
        inverse[order] = np.arange(rows, dtype=np.int64)
    for key in sorted(found):
        column_name = PROPERTY_PREFIX + key
        seen = found[key]
        if column_name not in types.types:
            kinds = {kind for _, kind, _ in seen}
            first = seen[0][1]
            if len(kinds) > 1:  # the kind of the first value in row order wins
                first = min(seen, key=lambda item: _first_row(arrival, groups[item[0]], item[2]))[1]
            types.types[column_name] = first
        kind = types.types[column_name]
        lake_type = _TYPE_NAMES[kind]
        by_group = {index: values for index, group_kind, values in seen if group_kind == kind}
        if not by_group:
            continue  # every value has another type than the column's: all null
        pieces = [
            pc.cast(by_group[index], lake_type, safe=False)
            if index in by_group
            else pa.nulls(stop - start, lake_type)
            for index, (_, start, stop) in enumerate(groups)
        ]
        joined = pa.concat_arrays(pieces)
        out[column_name] = joined if inverse is None else joined.take(pa.array(inverse))


def _combined(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    if not isinstance(values, pa.ChunkedArray):
        return values
    try:
        return values.combine_chunks()
    except pa.ArrowException as error:
        raise _MixedChunk(str(error)) from None


def _first_row(arrival: np.ndarray, group: tuple[str | None, int, int], values: pa.Array) -> int:
    """The arrival row number of ``values``' first non-null value; ``values`` are a group's
    parsed values, ``arrival`` the row number of each position of the grouped rows."""
    _, start, stop = group
    valid = pc.is_valid(values).to_numpy(zero_copy_only=False)
    return int(arrival[start:stop][valid].min())


def _envelope_batch_rows(
    table: pa.Table, types: PropertyTypes, row_numbers: np.ndarray | None = None
) -> pa.Table:
    rows = table.num_rows
    flat: dict[str, pa.Array] = {}
    _flatten_properties(table["properties"], table["event"], types, flat, row_numbers)
    context, at = _parse_objects(table["context"], rows)
    call_traits, own_at = _parse_objects(table["traits"], rows)
    # context columns are derived on the distinct objects, then taken per row
    objects = context.num_rows
    context_columns = {name: context[name] for name in context.column_names}
    device = context_columns.get("device")
    model = _child(device, "model")
    device_type = _child(device, "type")
    if model is not None:
        model = _string_of(model, objects)
        has_model = pc.fill_null(pc.not_equal(model, ""), False)
        device_column = pc.if_else(has_model, model, _string_of(device_type, objects))
    else:
        device_column = _string_of(device_type, objects)
    # traits: the call's own over context.traits (a key the call sets to null is dropped)
    context_traits = _columns_of(_rows_of(context_columns.get("traits"), at))
    own_traits = _columns_of(_rows_of(call_traits, own_at))
    merged: dict[str, Any] = dict(context_traits)
    for key, values in own_traits.items():
        other = context_traits.get(key)
        if other is None or pa.types.is_null(other.type):
            merged[key] = values
        elif pa.types.is_null(values.type):
            merged[key] = other  # never set by the call... unless set to null: checked below
        elif values.type != other.type:
            raise _MixedChunk(f"trait {key!r} has two types")
        else:
            merged[key] = pc.coalesce(values, other)
    if context_traits and own_traits:
        nulls = pc.match_substring(table["traits"], ":null")
        if pc.any(nulls).as_py():
            raise _MixedChunk("a call sets a trait to null over context.traits")
    _flatten(TRAIT_PREFIX, merged, types, flat)
    envelope = {
        "message_id": table["message_id"],
        "type": pc.fill_null(table["type"], "track"),
        "event": table["event"],
        "name": table["name"],
        "user_id": table["user_id"],
        "anonymous_id": table["anonymous_id"],
        "timestamp": table["timestamp"],
        "original_timestamp": table["original_timestamp"],
        "sent_at": table["sent_at"],
        "received_at": table["received_at"],
        "source": table["source"],
        "locale": _rows_of(_string_of(context_columns.get("locale"), objects), at),
        "device": _rows_of(device_column, at),
        "app_version": _rows_of(
            _string_of(_child(context_columns.get("app"), "version"), objects), at
        ),
        "os": _rows_of(_string_of(_child(context_columns.get("os"), "name"), objects), at),
        "session_id": table["session_id"],
        "properties": table["properties"],
        "context": table["context"],
        "traits": table["traits"],
    }
    fields = list(ENVELOPE_FIELDS)
    arrays = [envelope[f.name] for f in ENVELOPE_FIELDS]
    for column in sorted(flat):
        values = flat[column]
        if values.null_count < rows:
            fields.append(pa.field(column, values.type))
            arrays.append(values)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def envelope_batch_to_table(batch: pa.Table | pa.RecordBatch, types: PropertyTypes) -> pa.Table:
    """Lake rows of envelope batches (the buffer's segments), the same table
    :func:`envelopes_to_table` makes of their envelopes.

    Nothing is parsed per event in Python: the three JSON objects of every row are parsed by
    Arrow's JSON reader (C++, multi-threaded) into typed columns, whose scalar keys become the
    ``prop_``/``trait_`` columns. A chunk in which one key holds two kinds of value (a number
    here, a string there) cannot be read that way; it is converted in halves, down to pieces
    of :data:`_SPLIT_ROWS` rows that go through :func:`envelopes_to_table`.
    """
    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    if table.num_rows == 0:
        return envelopes_to_table([], types)
    snapshot = dict(types.types)
    try:
        return _envelope_batch_rows(table, types)
    except _MixedChunk:
        types.types = snapshot
    if table.num_rows <= _SPLIT_ROWS:
        from tripwire.events.columns import batch_envelopes

        return envelopes_to_table(batch_envelopes(table), types)
    half = table.num_rows // 2
    parts = [
        envelope_batch_to_table(table.slice(0, half), types),
        envelope_batch_to_table(table.slice(half), types),
    ]
    merged = pa.concat_tables(parts, promote_options="default")
    flattened = sorted(c for c in merged.column_names if c not in ENVELOPE_COLUMNS)
    return merged.select([*ENVELOPE_COLUMNS, *flattened])


#: The columns of the buffer's rows that the columnar conversion reads (a chunk grouped by
#: partition is gathered on these only; the reference conversion reads the others too).
_COLUMNAR_INPUT = [
    c for c in ENVELOPE_COLUMNS if c not in {"locale", "device", "app_version", "os"}
]


@dataclass(frozen=True)
class PartitionedBatch:
    """Envelope batches (the buffer's rows) with the columnar conversion's input gathered into
    partition order (:func:`gather_partitions`)."""

    batch: pa.Table  #: as read, in offset order
    grouped: pa.Table  #: :data:`_COLUMNAR_INPUT` in the order of :func:`partition_rows`
    order: pa.Array  #: the row of ``batch`` at each row of ``grouped``


def gather_partitions(batch: pa.Table | pa.RecordBatch) -> PartitionedBatch:
    """The first step of :func:`envelope_batch_to_partitions`, on its own so that the archiver
    can run it in its reader thread (the gather is a third of the conversion's CPU, and the
    conversion is otherwise one thread's work)."""
    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    if table.num_rows == 0:
        return PartitionedBatch(table, table.select(_COLUMNAR_INPUT), pa.array([], pa.uint64()))
    order, _ = partition_rows(table)
    return PartitionedBatch(table, table.select(_COLUMNAR_INPUT).take(order), order)


def envelope_batch_to_partitions(
    batch: pa.Table | pa.RecordBatch | PartitionedBatch, types: PropertyTypes
) -> pa.Table:
    """The rows of :func:`envelope_batch_to_table` grouped by partition (the order of
    :func:`partition_rows`, stable): what :func:`write_table` writes without a ``take``.

    The buffer's rows are gathered into partition order *before* they are converted
    (:func:`gather_partitions`): each event's rows are then contiguous and
    :func:`_flatten_properties` parses their properties without gathering the texts and
    scattering the values back, and the converted table (with its flattened columns) is not
    gathered again by the writer.
    """
    gathered = batch if isinstance(batch, PartitionedBatch) else gather_partitions(batch)
    if gathered.batch.num_rows == 0:
        return envelopes_to_table([], types)
    snapshot = dict(types.types)
    try:
        return _envelope_batch_rows(gathered.grouped, types, gathered.order.to_numpy())
    except _MixedChunk:
        types.types = snapshot
    return envelope_batch_to_table(gathered.batch, types).take(gathered.order)


def write_envelope_batch(
    lake_dir: Path, batch: pa.Table | pa.RecordBatch, *, file_id: str, durable: bool = False
) -> list[Path]:
    """Write envelope batches (the buffer's rows) into the lake; see :func:`write_table`."""
    types = PropertyTypes(events_dir(lake_dir) / PROPERTY_TYPES_FILE)
    table = envelope_batch_to_table(batch, types)
    types.save()
    return write_table(lake_dir, table, file_id=file_id, durable=durable)


def events_dir(lake_dir: Path) -> Path:
    return Path(lake_dir) / "events"


def partition_dir(lake_dir: Path, day: date, event: str) -> Path:
    return events_dir(lake_dir) / f"date={day.isoformat()}" / f"event={quote(event, safe='')}"


def write_events(
    lake_dir: Path, envelopes: Iterable[Mapping[str, Any]], *, file_id: str | None = None
) -> list[Path]:
    """Write envelopes into date × event partitions; returns the files written.

    Files are written to a temporary name and renamed, so a reader never sees half a file.
    ``file_id`` makes the names deterministic (the archiver passes its offset range so that a
    re-run after a crash overwrites instead of duplicating).
    """
    types = PropertyTypes(events_dir(lake_dir) / PROPERTY_TYPES_FILE)
    table = envelopes_to_table(envelopes, types)
    types.save()
    return write_table(lake_dir, table, file_id=file_id or uuid.uuid4().hex)


def write_payloads(
    lake_dir: Path,
    payloads: Sequence[bytes] | pa.Array,
    *,
    file_id: str,
    durable: bool = False,
) -> list[Path]:
    """Like :func:`write_events` for envelopes serialized as JSON (the buffer's rows).

    Uses :func:`payloads_to_table` (JSON parsed inside DuckDB) and falls back to
    :func:`envelopes_to_table` for a chunk the fast path cannot express.
    """
    types = PropertyTypes(events_dir(lake_dir) / PROPERTY_TYPES_FILE)
    table = payloads_to_table(payloads, types)
    types.save()
    return write_table(lake_dir, table, file_id=file_id, durable=durable)


def write_table(
    lake_dir: Path,
    table: pa.Table,
    *,
    file_id: str,
    durable: bool = False,
    threads: int | Executor = 1,
) -> list[Path]:
    """Split a table of lake rows into its date × event partitions and write one file each.

    Row order within a partition is the table's order. Flattened columns that are null in a
    whole partition are left out of its file (the view's ``union_by_name`` restores them).
    ``durable=True`` fsyncs each file before renaming it into place and, once all are in
    place, each directory touched (once), so the files survive a power loss once this
    returns (the archiver needs this before it lets the buffer forget the rows).

    ``threads > 1`` (or an executor, for a caller writing many tables: long-lived threads keep
    the allocator's per-thread heaps warm) writes the partitions in parallel: Parquet
    encoding, compression and the fsyncs run without the GIL, so on 2 cores two threads
    write a chunk in about half the wall time.
    """
    if table.num_rows == 0:
        return []
    order, partitions = partition_rows(table)
    # One gather of the whole table, then zero-copy slices (a ``take`` per partition would
    # concatenate the table's chunks once per partition). Taken from the chunked columns
    # directly: with pyarrow 26 that costs ~20% less CPU than joining the chunks first and
    # taking from the joined table, and allocates (and page-faults) half the memory. None
    # for rows already in partition order (:func:`envelope_batch_to_partitions`).
    in_order = np.array_equal(order.to_numpy(), np.arange(table.num_rows))
    ordered = table if in_order else table.take(order)
    created: set[Path] = set()
    targets: list[Path] = []
    for day, event, _, _ in partitions:
        target_dir = partition_dir(lake_dir, day, event)
        if durable:
            created.update(_make_directories(target_dir))
        else:
            target_dir.mkdir(parents=True, exist_ok=True)
        targets.append(target_dir / f"part-{file_id}.parquet")

    def write(index: int) -> None:
        _, _, start, stop = partitions[index]
        part = ordered.slice(start, stop - start)
        part = part.select(
            [
                c
                for c in part.column_names
                if c in ENVELOPE_COLUMNS or part[c].null_count < part.num_rows
            ]
        )
        write_file_atomically(part, targets[index], durable=durable, sync_directory=False)

    if isinstance(threads, Executor):
        list(threads.map(write, range(len(partitions))))  # re-raises the first failure
    elif threads > 1 and len(partitions) > 1:
        with ThreadPoolExecutor(min(threads, len(partitions))) as pool:
            list(pool.map(write, range(len(partitions))))
    else:
        for index in range(len(partitions)):
            write(index)
    if durable:
        # Each directory once (not once per file): its renames, and the new directories'
        # entries in their parents. Only then may the caller count the rows as archived.
        for directory in sorted({path.parent for path in targets} | created):
            fsync_directory(directory)
    return targets


def partition_rows(table: pa.Table) -> tuple[pa.Array, list[tuple[date, str, int, int]]]:
    """The date × event partitions of lake rows: ``order``, row indices grouping the rows by
    partition (keeping the table's order within one), and each partition's ``(day, event,
    start, stop)`` range of ``order``.

    One integer key per row (event code × day, event-major: an event's rows are contiguous,
    which :func:`_flatten_properties` uses; codes in order of first appearance, so rows
    already in this order keep it) and one stable ``sort_indices`` of it (sorting by the
    strings costs more).
    """
    days = pc.cast(pc.cast(pc.cast(table["timestamp"], pa.date32()), pa.int32()), pa.int64())
    if isinstance(days, pa.ChunkedArray):
        days = days.combine_chunks()
    first_day = pc.min(days).as_py()
    span = pc.max(days).as_py() - first_day + 1
    events = pc.dictionary_encode(table["event"])
    if isinstance(events, pa.ChunkedArray):
        events = events.combine_chunks()
    names = events.dictionary.to_pylist()
    key = pc.add(
        pc.multiply(pc.cast(events.indices, pa.int64()), span), pc.subtract(days, first_day)
    )
    order = pc.sort_indices(key)
    sorted_key = pc.take(key, order)
    if isinstance(sorted_key, pa.ChunkedArray):
        sorted_key = sorted_key.combine_chunks()
    changed = pc.not_equal(sorted_key[1:], sorted_key[:-1])
    starts = [0, *(i + 1 for i in pc.indices_nonzero(changed).to_pylist()), table.num_rows]
    partitions = []
    for start, stop in itertools.pairwise(starts):
        code, day_number = divmod(sorted_key[start].as_py(), span)
        day = date.fromordinal(_EPOCH_ORDINAL + first_day + day_number)
        partitions.append((day, names[code], start, stop))
    return order, partitions


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _make_directories(directory: Path) -> list[Path]:
    """``mkdir -p``; returns the parents whose entries changed (to fsync for durability)."""
    missing = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    directory.mkdir(parents=True, exist_ok=True)
    return [path.parent for path in missing]


#: Columns with (nearly) one value per row, or many distinct ones per file (ids): a
#: dictionary would only cost time (hashing every value) and, for these, bytes: zstd finds
#: the repeats of plain-encoded ids as well (measured on world-shaped partitions: ~15%
#: smaller files without a dictionary on the ids).
_PLAIN_COLUMNS = frozenset(
    {
        "message_id",
        "user_id",
        "anonymous_id",
        "session_id",
        "properties",
        "timestamp",
        "original_timestamp",
        "sent_at",
        "received_at",
    }
)
#: Columns without min/max statistics: long texts (the raw JSON, the unique message ids) that
#: no query filters by range, whose statistics cost a comparison of every value when
#: writing and bytes in every footer. Every other column keeps them: DuckDB skips row groups
#: by them (``timestamp`` windows, ``event`` lists, dimension filters).
_NO_STATISTICS_COLUMNS = frozenset({"message_id", "properties", "context", "traits"})
#: Columns compressed with zstd: the ones that hold the bytes (written plain, and the raw
#: JSON). Every other column (dictionary-encoded: small dictionaries, bit-packed indices, and
#: the flattened properties) gets LZ4: zstd sets up a compression context per column chunk
#: (~0.1 ms), which in a partition file of a few thousand rows costs more than compressing;
#: measured on world-shaped 5,000-row files, 31 columns: 7.9 → 5.4 ms CPU per file, the files
#: 8% larger (3.06 → 3.30 MB per 200,000 events; zstd everywhere else would save 0.2 MB).
_ZSTD_COLUMNS = _PLAIN_COLUMNS | {"context", "traits"}


def _codec(column: str) -> str:
    """The Parquet compression of a lake column (see :data:`_ZSTD_COLUMNS`)."""
    return "zstd" if column in _ZSTD_COLUMNS else "lz4"


def write_file_atomically(
    table: pa.Table, target: Path, *, durable: bool = False, sync_directory: bool = True
) -> None:
    """Write ``table`` to ``target`` through a temporary file and a rename (readers never see
    half a file); with ``durable`` the data and (unless ``sync_directory=False``: the caller
    fsyncs the directory itself, once for many files) the rename are fsynced."""
    tmp = target.with_suffix(".parquet.tmp")
    # An open file, not a path: pyarrow resolves a path through its filesystem layer, which
    # costs ~1 ms per file (the archiver writes hundreds of small partition files).
    with pa.OSFile(str(tmp), "wb") as sink:
        pq.write_table(
            table,
            sink,
            compression={c: _codec(c) for c in table.column_names},
            use_dictionary=[c for c in table.column_names if c not in _PLAIN_COLUMNS],
            write_statistics=[c for c in table.column_names if c not in _NO_STATISTICS_COLUMNS],
        )
    if durable:
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
    os.replace(tmp, target)
    if durable and sync_directory:
        fsync_directory(target.parent)


def fsync_directory(directory: Path) -> None:
    """Make renames and deletions inside ``directory`` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# -- fast path: JSON payloads parsed inside DuckDB ---------------------------------------------

_ENVELOPE_STRUCTURE = orjson.dumps(
    {
        "messageId": "VARCHAR",
        "type": "VARCHAR",
        "event": "VARCHAR",
        "name": "VARCHAR",
        "userId": "VARCHAR",
        "anonymousId": "VARCHAR",
        "timestamp": "VARCHAR",
        "originalTimestamp": "VARCHAR",
        "sentAt": "VARCHAR",
        "receivedAt": "VARCHAR",
        "source": "VARCHAR",
        "properties": "JSON",
        "context": "JSON",
        "traits": "JSON",
    }
).decode()
_CONTEXT_STRUCTURE = orjson.dumps(
    {
        "locale": "VARCHAR",
        "device": {"model": "VARCHAR", "type": "VARCHAR"},
        "app": {"version": "VARCHAR"},
        "os": {"name": "VARCHAR"},
        "traits": "JSON",
    }
).decode()
_PROPS_STRUCTURE = orjson.dumps({"session_id": "VARCHAR", "$session_id": "VARCHAR"}).decode()
_DUCK_SCALAR = {
    "BIGINT": "double",
    "UBIGINT": "double",
    "HUGEINT": "double",  # the structure of a key holding both UBIGINT and negative BIGINTs
    "DOUBLE": "double",
    "BOOLEAN": "boolean",
    "VARCHAR": "string",
}
_EVENT_NAME_SQL = (
    "CASE coalesce(e.type, 'track') WHEN 'track' THEN coalesce(e.event, '') "
    + " ".join(f"WHEN '{kind}' THEN '{name}'" for kind, name in NON_TRACK_EVENT_NAMES.items())
    + " ELSE '$' || e.type END"
)


def _is_object(json_sql: str) -> str:
    """``json_type(x) = 'OBJECT'`` without parsing ``x`` again: the JSON values of a
    ``json_transform`` result are minified text, so an object is one that starts with ``{``."""
    return f"left({json_sql}, 1) = '{{'"


def _is_json_null(json_sql: str) -> str:
    """SQL NULL or JSON ``null`` (``json_type(x) = 'NULL'``) without parsing ``x`` again."""
    return f"({json_sql} IS NULL OR {json_sql} = 'null')"


_PARSE_SQL = f"""
CREATE OR REPLACE TEMP TABLE parsed AS
SELECT row, e, c,
       CASE WHEN {_is_object("e.traits")} AND e.traits <> '{{}}' THEN json_merge_patch(
           CASE WHEN {_is_object("c.traits")} THEN c.traits ELSE '{{}}' END, e.traits
       ) WHEN {_is_object("c.traits")} THEN c.traits ELSE '{{}}' END AS merged_traits
FROM (
    SELECT row, e, json_transform(e.context, '{_CONTEXT_STRUCTURE}') AS c
    FROM (SELECT row, json_transform(payload, '{_ENVELOPE_STRUCTURE}') AS e FROM chunk)
)
"""


def _ts_sql(expression: str) -> str:
    return f"CAST({expression} AS TIMESTAMPTZ)"


_DUCK_TYPE = {"double": "DOUBLE", "boolean": "BOOLEAN", "string": "VARCHAR"}


def _leaf(types: PropertyTypes, column: str, uniform: bool) -> str:
    """The ``json_transform`` leaf of a flattened key: its type when every value has it."""
    return _DUCK_TYPE[types.types[column]] if uniform else "JSON"


def _flat_sql(source: str, key: str, column: str, kind: str, uniform: bool) -> str:
    value = f'{source}."{key}"'
    if uniform:  # extracted typed by json_transform: every value has the column's type
        return f'{value} AS "{column}"'
    if kind == "double":
        test, cast = "IN ('BIGINT', 'UBIGINT', 'DOUBLE')", f"CAST({value} AS DOUBLE)"
    elif kind == "boolean":
        test, cast = "= 'BOOLEAN'", f"CAST({value} AS BOOLEAN)"
    else:
        test, cast = "= 'VARCHAR'", f"json_extract_string({value}, '$')"
    return f'CASE WHEN json_type({value}) {test} THEN {cast} END AS "{column}"'


def _structures(connection: Any, json_sqls: Sequence[str]) -> list[dict[str, Any]]:
    """The ``json_group_structure`` of each JSON expression over ``parsed``, in one scan."""
    row = connection.execute(
        "SELECT " + ", ".join(f"json_group_structure({sql})" for sql in json_sqls) + " FROM parsed"
    ).fetchall()[0]
    structures = []
    for structure in row:
        keys = orjson.loads(structure) if structure else {}
        structures.append(keys if isinstance(keys, dict) else {})
    return structures


def _flattened_keys(
    connection: Any, json_sql: str, keys: Mapping[str, Any], prefix: str, types: PropertyTypes
) -> list[tuple[str, str, bool]]:
    """``(key, lake column, uniform)`` to flatten from one JSON column of ``parsed`` whose
    chunk-wide structure is ``keys``; registers the first scalar type seen (in row order) of
    keys new to the lake.

    ``uniform`` means every non-null value of the key in this chunk has the column's type, so
    one typed ``json_transform`` extracts it exactly; otherwise (mixed types in the chunk)
    each value's ``json_type`` is tested. Keys whose values in this chunk all have another
    type than the column's are left out (their column would be all null).
    """
    chosen = []
    for key, shape in keys.items():
        if not _FLATTENABLE_KEY.match(key):
            continue
        column = prefix + key
        scalar = _DUCK_SCALAR.get(shape) if isinstance(shape, str) else None
        if column not in types.types:
            if scalar is not None:
                types.types[column] = scalar
            elif shape == "JSON":  # mixed types in this chunk: the first scalar in row order wins
                first = connection.execute(
                    f"SELECT t FROM (SELECT row, json_type({json_sql}, ?) AS t FROM parsed)"
                    " WHERE t IN ('BIGINT', 'UBIGINT', 'DOUBLE', 'BOOLEAN', 'VARCHAR')"
                    " ORDER BY row LIMIT 1",
                    [f'$."{key}"'],
                ).fetchall()
                if not first:
                    continue
                types.types[column] = _DUCK_SCALAR[first[0][0]]
            else:
                continue
        if scalar is not None:
            if scalar == types.types[column]:
                chosen.append((key, column, True))
        elif shape == "JSON":
            chosen.append((key, column, False))
    return chosen


def payloads_to_table(payloads: Sequence[bytes] | pa.Array, types: PropertyTypes) -> pa.Table:
    """The same table as ``envelopes_to_table([orjson.loads(p) for p in payloads], types)``,
    computed with the JSON parsed by DuckDB (vectorised, multi-threaded) instead of Python.

    Falls back to :func:`envelopes_to_table` for chunks DuckDB cannot express (e.g. property
    keys differing only by case, which DuckDB structs cannot hold).
    """
    if len(payloads) == 0:
        return envelopes_to_table([], types)
    snapshot = dict(types.types)
    try:
        return _payloads_to_table_duckdb(payloads, types)
    except (duckdb.InvalidInputException, duckdb.ConversionException):
        types.types = snapshot
        texts = payloads.to_pylist() if isinstance(payloads, pa.Array) else payloads
        return envelopes_to_table([orjson.loads(p) for p in texts], types)


_DUCKDB_LOCK = threading.Lock()
_DUCKDB: list[duckdb.DuckDBPyConnection] = []


def _duckdb_cursor() -> duckdb.DuckDBPyConnection:
    """A fresh cursor on a process-wide in-memory DuckDB (opening a database costs ~0.1 s;
    a cursor is a cheap connection of its own, safe to use from any thread)."""
    with _DUCKDB_LOCK:
        if not _DUCKDB:
            _DUCKDB.append(duckdb.connect())
        return _DUCKDB[0].cursor()


def _payloads_to_table_duckdb(
    payloads: Sequence[bytes] | pa.Array, types: PropertyTypes
) -> pa.Table:
    texts = (
        payloads
        if isinstance(payloads, pa.Array)
        else pa.array(payloads, pa.binary()).cast(pa.string())
    )
    chunk = pa.table({"row": pa.array(range(len(payloads)), pa.int64()), "payload": texts})
    connection = _duckdb_cursor()
    try:
        connection.execute("SET TimeZone = 'UTC'").fetchall()
        connection.register("chunk", chunk)
        connection.execute(_PARSE_SQL).fetchall()
        props = f"CASE WHEN {_is_object('e.properties')} THEN e.properties END"
        prop_shape, trait_shape = _structures(connection, [props, "merged_traits"])
        prop_keys = _flattened_keys(connection, props, prop_shape, PROPERTY_PREFIX, types)
        trait_keys = _flattened_keys(connection, "merged_traits", trait_shape, TRAIT_PREFIX, types)
        prop_struct = {key: _leaf(types, column, uniform) for key, column, uniform in prop_keys}
        trait_struct = {key: _leaf(types, column, uniform) for key, column, uniform in trait_keys}
        flat = [
            _flat_sql(alias, key, column, types.types[column], uniform)
            for alias, keys in (("p", prop_keys), ("t", trait_keys))
            for key, column, uniform in keys
        ]
        session = (
            "CASE WHEN json_exists(e.properties, '$.session_id')"
            " THEN json_extract_string(e.properties, '$.session_id')"
            " ELSE json_extract_string(e.properties, '$.\"$session_id\"') END"
        )
        select = [
            "e.messageId AS message_id",
            "coalesce(e.type, 'track') AS type",
            f"{_EVENT_NAME_SQL} AS event",
            "e.name AS name",
            "e.userId AS user_id",
            "e.anonymousId AS anonymous_id",
            _ts_sql("e.timestamp") + " AS timestamp",
            _ts_sql("nullif(e.originalTimestamp, '')") + " AS original_timestamp",
            _ts_sql("nullif(e.sentAt, '')") + " AS sent_at",
            _ts_sql("coalesce(nullif(e.receivedAt, ''), e.timestamp)") + " AS received_at",
            "e.source AS source",
            "c.locale AS locale",
            "CASE WHEN c.device.model IS NOT NULL AND c.device.model <> ''"
            " THEN c.device.model ELSE c.device.type END AS device",
            "c.app.version AS app_version",
            "c.os.name AS os",
            f"{session} AS session_id",
            f"coalesce({props}, '{{}}') AS properties",
            f"CASE WHEN {_is_json_null('e.context')} THEN '{{}}' ELSE e.context END AS context",
            f"CASE WHEN {_is_json_null('e.traits')} THEN '{{}}' ELSE e.traits END AS traits",
            *flat,
        ]
        extra = ""
        if prop_struct:
            extra += f", json_transform({props}, '{orjson.dumps(prop_struct).decode()}') AS p"
        if trait_struct:
            extra += (
                f", json_transform(merged_traits, '{orjson.dumps(trait_struct).decode()}') AS t"
            )
        sources = f"(SELECT *{extra} FROM parsed)"
        # A scan of ``parsed`` keeps its insertion order (DuckDB's preserve_insertion_order);
        # sorting 200,000 wide rows would cost more than checking that it did.
        sql = f"SELECT row, {', '.join(select)} FROM {sources}"
        result = connection.sql(sql).to_arrow_table()
    finally:
        connection.close()
    rows = result["row"]
    if len(rows) > 1 and not pc.all(pc.greater(rows[1:], rows[:-1])).as_py():
        result = result.take(pc.sort_indices(rows))
    fields = list(ENVELOPE_FIELDS)
    for _, column in sorted(
        [(key, column) for key, column, _ in prop_keys + trait_keys], key=lambda pair: pair[1]
    ):
        if result[column].null_count < result.num_rows:  # as the reference: only values seen
            fields.append(pa.field(column, types.arrow_type(column)))
    return result.select([f.name for f in fields]).cast(pa.schema(fields))


def events_relation_sql(lake_dir: Path) -> str:
    """A DuckDB relation over every lake file with the same columns whatever exists.

    Flattened columns that no file has yet are absent; the envelope columns are always there.
    """
    root = events_dir(lake_dir)
    files = list(root.glob("date=*/event=*/*.parquet")) if root.exists() else []
    if not files:
        cols = ", ".join(
            f'CAST(NULL AS {_duck_type(f.type)}) AS "{f.name}"' for f in ENVELOPE_FIELDS
        )
        return f"(SELECT {cols} WHERE false)"
    pattern = str(root / "date=*" / "event=*" / "*.parquet").replace("'", "''")
    return f"read_parquet('{pattern}', union_by_name=true, hive_partitioning=false)"


def _duck_type(kind: pa.DataType) -> str:
    if pa.types.is_timestamp(kind):
        return "TIMESTAMPTZ"
    if pa.types.is_boolean(kind):
        return "BOOLEAN"
    if pa.types.is_floating(kind):
        return "DOUBLE"
    return "VARCHAR"


def create_events_view(connection: Any, lake_dir: Path, name: str = "events") -> None:
    """Create (or replace) the ``events`` view on a DuckDB connection."""
    connection.execute(
        f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {events_relation_sql(lake_dir)}"
    )
