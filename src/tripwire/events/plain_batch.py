"""The whole-batch path of ``track_many``: a batch of plain, valid messages straight to Arrow.

:func:`tripwire.events.columns.normalize_batch` validates column-wise but must also settle
every doubtful message, so it keeps each column as a Python list until the end and checks
ids and objects with Python passes. In-process ``track_many`` batches are almost always
*plain* (only the fields an SDK sends, no batch ``sentAt``, no batch context) and *all
valid*. :func:`normalize_plain_batch` bets on that: it converts each column to Arrow once
(the conversion the record batch needs anyway, which also proves its type) and checks the
Arrow arrays with NumPy and Arrow compute on their buffers, which release the GIL the
buffer's writer thread shares. It builds the record batch directly.

It only ever *accepts*: a batch with anything it does not settle with certainty (a
message that is not plain, an id it cannot prove valid, a non-canonical time, a failing
convention, a size near the limit, ...) makes it return None, and the caller runs
``normalize_batch``, which decides every message exactly as :func:`normalize_event` does
(and rejects with index, field and reason). So the accepted envelopes are the ones
``normalize_batch`` gives, column for column (tests/events/test_plain_batch.py checks it
with hypothesis over well-formed and malformed batches).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from itertools import repeat
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from tripwire.events.columns import (
    _EARLIEST_US,
    _EPOCH,
    _FAST_KINDS,
    _FAST_STRING_CHARS,
    _LATEST_US,
    _ONE_US,
    _PLAIN_FIELDS,
    _SIZE_SLACK,
    ENVELOPE_BATCH_SCHEMA,
    TS,
    EnvelopeBatch,
    _array,
    _canonical_micros,
    _field,
    _json_array,
    _mostly_shared,
    _oversized,
)
from tripwire.events.conventions import CONVENTIONS
from tripwire.events.envelope import (
    _TYPE_EVENT_NAMES,
    MAX_MESSAGE_ID_CHARS,
    _event_name,
    _received,
    new_message_id,
)
from tripwire.events.errors import EventValidationError

#: Batches smaller than this go to ``normalize_batch`` (Arrow's fixed cost per column would
#: dominate; the client times are parsed by Arrow only from 256 rows on, see
#: :func:`tripwire.events.columns._canonical_micros`).
MIN_ROWS = 256

_NONE = type(None)
_FIELD = {field.name: field for field in ENVELOPE_BATCH_SCHEMA}
_JSON_FIELD = _FIELD["properties"]  # (the three JSON columns have one type)
#: The fields a plain message may have, those SDKs send with every message first: the
#: fields of :data:`tripwire.events.columns._PLAIN_FIELDS` and a null ``sentAt`` (what
#: historical imports, such as the simulator's feed, send; with no batch ``sentAt`` it is
#: the same as none).
_PLAIN_ORDER = (
    "type", "messageId", "timestamp", "event", "userId", "properties", "context",
    "anonymousId", "sentAt", "traits", "name",
)  # fmt: skip
_PLAIN_KEYS = frozenset(_PLAIN_ORDER)
assert _PLAIN_FIELDS | {"sentAt"} == _PLAIN_KEYS


def normalize_plain_batch(
    messages: Sequence[Any],
    *,
    received_at: datetime,
    source: str | None,
    max_event_bytes: int | None,
) -> EnvelopeBatch | None:
    """Every message of a plain, valid batch normalized into one built Arrow batch, or None
    when the batch is not one this path settles (then ``normalize_batch`` decides).

    The arguments are ``normalize_batch``'s for a batch without ``sentAt`` or ``context``
    of its own (what ``track_many`` sends); the result equals its envelope batch. A text
    Arrow cannot hold (a lone surrogate) also makes it decline.
    """
    if len(messages) < MIN_ROWS or set(map(type, messages)) != {dict}:
        return None
    try:
        return _normalized(messages, received_at=received_at, source=source, limit=max_event_bytes)
    except (pa.ArrowException, UnicodeError):
        return None


def _normalized(
    messages: Sequence[dict[str, Any]],
    *,
    received_at: datetime,
    source: str | None,
    limit: int | None,
) -> EnvelopeBatch | None:
    """:func:`normalize_plain_batch` of a batch of dicts of at least :data:`MIN_ROWS`."""
    n = len(messages)
    plain = _read_plain(messages)
    if plain is None or plain[1]["sentAt"] != {_NONE}:
        return None
    read, types = plain
    kinds, raw_events = read["type"], read["event"]
    if types["type"] != {str} or not _FAST_KINDS.issuperset(kinds):
        return None
    if kinds.count("track") == n:
        events: list[Any] = raw_events
        track_events = raw_events
        track_types = types["event"]
    else:
        events = [
            e if k == "track" else _TYPE_EVENT_NAMES[k]
            for e, k in zip(raw_events, kinds, strict=True)
        ]
        track_events = [e for e, k in zip(raw_events, kinds, strict=True) if k == "track"]
        track_types = set(map(type, track_events))
    if not track_types <= {str}:
        return None
    names = set(track_events)
    for name in names:
        try:
            _event_name(name)
        except EventValidationError:
            return None

    user_ids, anonymous_ids = read["userId"], read["anonymousId"]
    if (
        _NONE in types["userId"]
        and _NONE in types["anonymousId"]
        and any(u is None and a is None for u, a in zip(user_ids, anonymous_ids, strict=True))
    ):
        return None
    message_ids = read["messageId"]
    if _NONE in types["messageId"]:
        message_ids = [new_message_id() if m is None else m for m in message_ids]
        types["messageId"] = set(map(type, message_ids))
    arrays = {
        "user_id": _checked_ids(user_ids, types["userId"], _FAST_STRING_CHARS),
        "anonymous_id": _checked_ids(anonymous_ids, types["anonymousId"], _FAST_STRING_CHARS),
        "name": _checked_ids(read["name"], types["name"], _FAST_STRING_CHARS),
        "message_id": _checked_ids(message_ids, types["messageId"], MAX_MESSAGE_ID_CHARS),
    }
    if any(array is None for array in arrays.values()):
        return None

    properties, contexts, traits = read["properties"], read["context"], read["traits"]
    if not all(types[key] <= {dict, _NONE} for key in ("properties", "context", "traits")):
        return None
    if _NONE in types["properties"]:  # read below (sessions, conventions): {} where absent
        properties = [{} if p is None else p for p in properties]
    conventions = names & CONVENTIONS.keys()
    if conventions:
        for i, (event, kind) in enumerate(zip(events, kinds, strict=True)):
            if kind == "track" and event in conventions:
                try:
                    properties[i] = CONVENTIONS[event](properties[i], user_ids[i], anonymous_ids[i])
                except EventValidationError:
                    return None
    json_columns = _json_columns([properties, contexts, traits])
    if json_columns is None:
        return None
    if limit is not None and _oversized(json_columns, limit - _SIZE_SLACK):
        return None

    parsed = _canonical_micros(read["timestamp"])
    if parsed is None:
        return None
    client_texts, moments = parsed
    if n and (int(moments.min()) < _EARLIEST_US or int(moments.max()) >= _LATEST_US):
        return None
    times = pa.array(moments, pa.int64()).cast(TS)

    sessions = _field(properties, "session_id")
    if None in sessions:  # missing (not null): the $session_id PostHog's SDKs send
        sessions = [p.get("session_id", p.get("$session_id")) for p in properties]
    if not set(map(type, sessions)) <= {str, _NONE}:
        sessions = [s if s is None or type(s) is str else str(s) for s in sessions]

    received_moment, received_text = _received(received_at)
    received_us = (received_moment - _EPOCH) // _ONE_US
    columns: dict[str, pa.Array] = {
        **arrays,  # type: ignore[dict-item]
        "type": _array(_FIELD["type"], kinds),
        "event": _array(_FIELD["event"], events),
        "timestamp": times,
        "original_timestamp": times,
        "sent_at": pa.nulls(n, TS),
        "received_at": pa.repeat(pa.scalar(received_us, pa.int64()), n).cast(TS),
        "source": pa.repeat(pa.scalar(source, pa.string()), n),
        "session_id": _array(_FIELD["session_id"], sessions),
        "properties": json_columns[0],
        "context": json_columns[1],
        "traits": json_columns[2],
        "timestamp_text": client_texts,
        "original_timestamp_text": client_texts,
        "sent_at_text": pa.nulls(n, pa.string()),
        "received_at_text": pa.repeat(pa.scalar(received_text, pa.string()), n),
        "raw": pa.nulls(n, pa.binary()),
    }
    batch = pa.RecordBatch.from_arrays(
        [columns[name] for name in ENVELOPE_BATCH_SCHEMA.names], schema=ENVELOPE_BATCH_SCHEMA
    )
    return EnvelopeBatch(batch=batch, message_ids=message_ids)


#: First bytes of a UTF-8 text that prove it is not all whitespace (printable ASCII other
#: than the space); any other first byte has the text checked by ``str.isspace``.
_NOT_SPACE = np.zeros(256, bool)
_NOT_SPACE[0x21:0x7F] = True


def _checked_ids(values: list[Any], types: set[type], max_chars: int) -> pa.Array | None:
    """``values`` (strings or None) as an Arrow string array when each string is non-empty,
    not all whitespace and at most ``max_chars`` characters: the rules ``normalize_batch``
    applies to ids and names before trusting them. None when any value breaks them or is
    not a ``str`` (an int id, which ``normalize_event`` turns into text, included).
    ``types``: the types of the values."""
    if not types <= {str, _NONE}:
        return None
    if types == {_NONE}:
        return pa.nulls(len(values), pa.string())
    try:
        array = pa.array(values, pa.string())
    except (pa.ArrowException, UnicodeError):  # e.g. a lone surrogate
        return None
    texts = array.drop_null() if array.null_count else array
    if not len(texts):
        return array
    _validity, offsets_buffer, data_buffer = texts.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int32, count=len(texts) + 1, offset=4 * texts.offset)
    lengths = np.diff(offsets)
    if int(lengths.min()) == 0:
        return None
    if int(lengths.max()) > max_chars and pc.max(pc.utf8_length(texts)).as_py() > max_chars:
        return None  # (a byte length bounds the character length)
    first = np.frombuffer(data_buffer, np.uint8)[offsets[:-1]]
    doubtful = np.flatnonzero(~_NOT_SPACE[first])
    if len(doubtful) and any(map(str.isspace, texts.take(doubtful).to_pylist())):
        return None
    return array


def _read_plain(
    messages: Sequence[dict[str, Any]],
) -> tuple[dict[str, list[Any]], dict[str, set[type]]] | None:
    """The columns of :data:`_PLAIN_ORDER` (``dict.get`` of each message: None where
    absent) and the types of their values, when every message's keys are among them
    (else None: the batch is not plain).

    Counting instead of a set comparison per message: each field's column says in how many
    messages it is a key (all of them if the column holds no None, else counted); once the
    fields read so far account for every key of every message, no message has any other
    key, and the fields not yet read are absent from all (a track call's traits and name:
    not read). A batch whose keys are not all accounted for after the last field is not
    plain.
    """
    n = len(messages)
    keys = sum(map(len, messages))
    read: dict[str, list[Any]] = {}
    types: dict[str, set[type]] = {}
    accounted = 0
    for key in _PLAIN_ORDER:
        if accounted == keys:
            read[key], types[key] = [None] * n, {_NONE}
            continue
        column = read[key] = _field(messages, key)  # type: ignore[arg-type]
        types[key] = set(map(type, column))
        if _NONE not in types[key]:
            accounted += n
        else:
            accounted += sum(map(dict.__contains__, messages, repeat(key)))  # type: ignore[arg-type]
    return (read, types) if accounted == keys else None


#: Marks the end of each object in :func:`_dumped_together`'s single dump. The DEL
#: character (which JSON text carries unescaped) is the only one in the dump unless a value
#: holds one.
_MARK = "\x7f" + os.urandom(6).hex()
_MARK_BYTE = 0x7F
_MARK_GAP = len(_MARK) + 2  # from the DEL to the next value: the mark's rest, '"' and ','


#: Objects dumped together by :func:`_json_columns` (per column): a few MB of text, so that
#: a huge batch does not hold its whole dump, and the mark search's array, twice.
_JSON_CHUNK = 4096


def _json_columns(columns: list[list[dict[str, Any] | None]]) -> list[pa.Array] | None:
    """The JSON text of each object of each column (None: ``{}``), as Arrow string arrays
    equal to what :func:`tripwire.events.columns._json_array` gives; None when a value
    does not serialize.

    One ``orjson.dumps`` of the objects of all the columns (per :data:`_JSON_CHUNK` rows),
    each followed by a mark string, instead of a call per object (~0.4 µs per call): the
    text of an object inside a list is the text it has alone (:func:`_split_marked`). A
    column absent from every message (a track call's traits) is ``{}`` without a dump; a
    column of a few objects repeated (one context object per user, :func:`_few_objects`)
    has each distinct object dumped once and its texts taken per row.
    """
    n = len(columns[0])
    result: list[pa.Array | None] = [None] * len(columns)
    together = []
    for index, column in enumerate(columns):
        if column[0] is None and column.count(None) == n:
            result[index] = _array(_JSON_FIELD, _json_array(column))
            continue
        if None in column:
            column = columns[index] = [_EMPTY if v is None else v for v in column]
        objects = _few_objects(column)
        if objects is not None:
            result[index] = _shared_texts(column, objects)
            if result[index] is None:
                return None
        else:
            together.append(index)
    if together:
        texts = _dumped_in_chunks([columns[i] for i in together])
        if texts is None:
            return None
        for index, array in zip(together, texts, strict=True):
            result[index] = array
    return result  # type: ignore[return-value]


#: What an absent object is dumped as (one shared ``{}``: never modified, only dumped).
_EMPTY: dict[str, Any] = {}


#: Rows whose objects :func:`_few_objects` looks at first.
_SHARED_WINDOW = 512


def _few_objects(column: list[Any]) -> dict[int, Any] | None:
    """The distinct objects of ``column`` by identity, when they are at most half as many as
    its rows (a user's context object on each of its events), else None.

    Counted only if a first look says so (cheap when every row has its own object): the
    first :data:`_SHARED_WINDOW` rows (a user's events close together), or 64 rows spread
    over the column (:func:`tripwire.events.columns._mostly_shared`). Only chooses how
    the texts are made, never what they are.
    """
    window = column[:_SHARED_WINDOW]
    if len(set(map(id, window))) * 2 >= len(window) and not _mostly_shared(column):
        return None
    objects = dict(zip(map(id, column), column, strict=True))
    return objects if len(objects) * 2 < len(column) else None


def _shared_texts(column: list[Any], objects: dict[int, Any]) -> pa.Array | None:
    """The texts of a column of a few ``objects`` (by identity) repeated: each dumped once,
    then taken for every row. None when one does not serialize."""
    position = {key: i for i, key in enumerate(objects)}
    codes = pa.array(list(map(position.__getitem__, map(id, column))), pa.int32())
    texts = _dumped_in_chunks([list(objects.values())])
    return None if texts is None else texts[0].take(codes)


def _dumped_in_chunks(columns: list[list[Any]]) -> list[pa.Array] | None:
    """:func:`_dumped_together` per :data:`_JSON_CHUNK` rows, joined."""
    parts: list[list[pa.Array]] = [[] for _ in columns]
    for start in range(0, len(columns[0]), _JSON_CHUNK):
        texts = _dumped_together([column[start : start + _JSON_CHUNK] for column in columns])
        if texts is None:
            return None
        for part, array in zip(parts, texts, strict=True):
            part.append(array)
    return [part[0] if len(part) == 1 else pa.concat_arrays(part) for part in parts]


def _dumped_together(columns: list[list[Any]]) -> list[pa.Array] | None:
    """Each column's objects as JSON texts, from one dump of them all (see
    :func:`_json_columns`); one by one when a value holds a DEL byte. None when a value
    does not serialize."""
    k, m = len(columns), len(columns[0])
    try:
        data = orjson.dumps(_interleaved(columns))
        texts = _split_marked(data, k * m) if len(data) < 2**31 else None
        if texts is None:
            return [_array(_JSON_FIELD, _json_array(column)) for column in columns]
    except (TypeError, ValueError):  # orjson.JSONEncodeError is a TypeError
        return None
    return [texts.take(pa.array(np.arange(2 * j, 2 * k * m, 2 * k))) for j in range(k)]


def _interleaved(columns: list[list[Any]]) -> list[Any]:
    """Row by row, each column's value followed by the mark: ``[a0, M, b0, M, a1, M, ...]``."""
    step = 2 * len(columns)
    result = [_MARK] * (step * len(columns[0]))
    for j, column in enumerate(columns):
        result[2 * j :: step] = column
    return result


def _split_marked(data: bytes, m: int) -> pa.StringArray | None:
    """The texts of a dump of ``m`` objects each followed by the mark (a JSON list), as
    an array of ``2m - 1`` texts: the objects at even positions, the separators between
    them at odd ones (so that Arrow takes the objects without a Python object each).
    None when the dump holds a DEL byte that is not a mark's.

    Exact: each mark has one DEL byte; with as many DEL bytes as marks, every DEL is a
    mark's, so the objects are the text between them. An object's text starts with
    ``{`` and ends with ``}`` (the values are dicts), so it is never confused with a
    separator ``,"<mark>",``.
    """
    dels = np.flatnonzero(np.frombuffer(data, np.uint8) == _MARK_BYTE)
    if len(dels) != m:
        return None
    bounds = np.empty(2 * m, np.int32)
    bounds[0] = 1  # after the list's "["
    bounds[1::2] = dels - 2  # before ',"' and the mark
    bounds[2::2] = dels[:-1] + _MARK_GAP
    return pa.StringArray.from_buffers(2 * m - 1, pa.py_buffer(bounds), pa.py_buffer(data))
