"""The Segment-compatible event envelope: validate one message and normalize it.

A normalized envelope is a JSON-ready dict with exactly these keys (the shape the buffer
stores and :func:`tripwire.store.lake.envelopes_to_table` consumes)::

    messageId, type, event, name, userId, anonymousId, timestamp, originalTimestamp,
    sentAt, receivedAt, properties, traits, context, source

Rules (Segment's tracking API, plus tripwire's conventions; docs/ingest.md has the table):

- ``type`` is one of track/identify/page/screen/group/alias; ``userId`` or ``anonymousId``
  (non-empty string; integers are accepted and stringified) is required; a track call needs
  ``event``; group needs ``groupId`` and alias ``previousId`` (kept in ``properties``).
- ``messageId`` is optional, as in Segment's API; when absent tripwire generates a unique
  one. Retries are deduplicated by messageId, so only senders that supply it (every Segment
  and PostHog SDK does) get exactly-once storage across retries.
- ``originalTimestamp`` is the client's ``timestamp``; ``timestamp`` is corrected for clock
  skew when ``sentAt`` is known (:mod:`tripwire.events.timestamps`) and defaults to
  ``receivedAt`` when the client sent none.
- ``event`` is the track name, or ``$identify``/``$page``/``$screen``/``$group``/``$alias``
  for the other calls (the lake's ``event`` column); those names are reserved for track.
- Unknown top-level fields are kept, never dropped: they move to ``context["$extra"]``
  (so does a non-empty ``integrations``; the empty ``{}`` every SDK sends carries nothing).
  ``writeKey`` is a credential and is removed.
- An event must serialize to JSON within ``max_event_bytes`` (Segment: 32 KB). Serializing
  it here also proves the buffer can store it (no sets, no 65-bit integers, no nesting
  deeper than orjson's limit of 254, no lone surrogates).

The hot path is plain dict work and orjson: a few microseconds per event.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeGuard
from urllib.parse import quote

import orjson

from tripwire.events.conventions import CONVENTIONS, RESERVED_TRACK_NAMES
from tripwire.events.errors import EventValidationError, Rejection
from tripwire.events.timestamps import (
    EARLIEST,
    LATEST,
    MAX_TIMESTAMP_CHARS,
    TimestampError,
    corrected_timestamp,
    format_timestamp,
    parse_timestamp,
)

_dumps = orjson.dumps
_fromisoformat = datetime.fromisoformat
_TS_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC

#: Segment's limits: 32 KB per message, 500 KB per batch request.
MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024

#: Longest event name and messageId accepted. The event name becomes a directory name in
#: the lake (url-quoted, so a non-ASCII character can take 9 bytes; file systems allow 255).
MAX_EVENT_NAME_CHARS = 200
MAX_EVENT_DIR_BYTES = 240
MAX_MESSAGE_ID_CHARS = 255

MESSAGE_TYPES = ("track", "identify", "page", "screen", "group", "alias")
_TYPE_EVENT_NAMES = {
    "identify": "$identify",
    "page": "$page",
    "screen": "$screen",
    "group": "$group",
    "alias": "$alias",
}

#: Top-level fields the envelope understands; anything else goes to ``context["$extra"]``.
_KNOWN_FIELDS = frozenset(
    {
        "messageId",
        "type",
        "event",
        "name",
        "userId",
        "anonymousId",
        "timestamp",
        "sentAt",
        "properties",
        "traits",
        "context",
        "groupId",
        "previousId",
        "writeKey",
        "integrations",
    }
)
EXTRA_KEY = "$extra"

# --- generated message ids: a random per-process prefix and a counter (unique, cheap) ---

_id_prefix = os.urandom(8).hex()
_id_counter = itertools.count(1)


def _reseed_ids() -> None:
    global _id_prefix, _id_counter
    _id_prefix = os.urandom(8).hex()
    _id_counter = itertools.count(1)


os.register_at_fork(after_in_child=_reseed_ids)


def new_message_id() -> str:
    """A fresh, unique messageId (used when the sender supplied none)."""
    return f"tw-{_id_prefix}-{next(_id_counter):x}"


# --- receivedAt is the same for a whole request: format it once ---

_received_cache: tuple[datetime, datetime, str] | None = None


def _received(received_at: datetime) -> tuple[datetime, str]:
    """``received_at`` as an aware UTC time and as envelope text (cached per request)."""
    global _received_cache
    cached = _received_cache
    if cached is not None and cached[0] == received_at:
        return cached[1], cached[2]
    try:
        moment = parse_timestamp(received_at)
    except TimestampError as error:
        raise ValueError(f"received_at: {error}") from None
    text = format_timestamp(moment)
    _received_cache = (received_at, moment, text)
    return moment, text


_sent_cache: tuple[Any, datetime, str] | None = None


def _sent(value: Any) -> tuple[datetime, str]:
    """A ``sentAt`` as a time and as envelope text; a batch's value is parsed once."""
    global _sent_cache
    cached = _sent_cache
    if cached is not None and cached[0] is value:
        return cached[1], cached[2]
    moment = _timestamp(value, "sentAt")
    assert moment is not None
    text = _dumps(moment, option=_TS_OPTIONS)[1:-1].decode()
    _sent_cache = (value, moment, text)
    return moment, text


def _is_canonical(value: Any) -> TypeGuard[str]:
    """Already RFC 3339 UTC (``YYYY-MM-DDTHH:MM:SS[.fff|.ffffff]Z``)? Then keep it as sent."""
    return (
        type(value) is str
        and len(value) in _CANONICAL_LENGTHS
        and value[-1] == "Z"
        and value[10] == "T"
        and value[4] == "-"
        and value[13] == ":"
        and (len(value) == 20 or value[19] == ".")
    )


_CANONICAL_LENGTHS = frozenset({20, 24, 27})


def _identifier(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            raise EventValidationError(key, "must not be empty")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise EventValidationError(key, f"must be a string, got {type(value).__name__}")


def _object(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    raise EventValidationError(key, f"must be an object, got {type(value).__name__}")


def _event_name(value: Any) -> str:
    if value is None:
        raise EventValidationError("event", "required for a track call")
    if not isinstance(value, str):
        raise EventValidationError("event", f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise EventValidationError("event", "must not be empty")
    if len(value) > MAX_EVENT_NAME_CHARS:
        raise EventValidationError(
            "event", f"is {len(value)} characters, over the {MAX_EVENT_NAME_CHARS}-character limit"
        )
    worst_case = len(value) * (3 if value.isascii() else 9)  # bytes once url-quoted
    if worst_case > MAX_EVENT_DIR_BYTES and len(quote(value, safe="")) > MAX_EVENT_DIR_BYTES:
        raise EventValidationError(
            "event", f"url-quoted it exceeds {MAX_EVENT_DIR_BYTES} bytes (it names a lake folder)"
        )
    if value in RESERVED_TRACK_NAMES:
        raise EventValidationError("event", f"{value!r} is reserved for {value[1:]} calls")
    return value


def _unserializable_field(raw: Mapping[str, Any]) -> str:
    """The first top-level field that orjson cannot serialize (for the error message)."""
    for key, value in raw.items():
        try:
            orjson.dumps(value)
        except (orjson.JSONEncodeError, TypeError):
            return str(key)
    return ""


def _check_size(raw: Mapping[str, Any], max_event_bytes: int) -> None:
    try:
        size = len(orjson.dumps(raw))
    except (orjson.JSONEncodeError, TypeError) as error:
        raise EventValidationError(
            _unserializable_field(raw), f"not JSON-serializable: {error}"
        ) from None
    if size > max_event_bytes:
        raise EventValidationError(
            "", f"event is {size} bytes, over the {max_event_bytes}-byte limit"
        )


def _timestamp(value: Any, field: str) -> datetime | None:
    """Parse a client time; the fast path covers ISO strings ending in ``Z``."""
    if value is None:
        return None
    if type(value) is str and len(value) <= MAX_TIMESTAMP_CHARS:
        try:
            parsed = _fromisoformat(value)
        except ValueError:
            raise EventValidationError(field, f"not an ISO 8601 time: {value!r}") from None
        if parsed.tzinfo is UTC and EARLIEST <= parsed < LATEST:
            return parsed
    try:
        return parse_timestamp(value)
    except TimestampError as error:
        raise EventValidationError(field, str(error)) from None


def normalize_event(
    raw: Any,
    *,
    received_at: datetime,
    source: str | None,
    sent_at: Any = None,
    base_context: Mapping[str, Any] | None = None,
    max_event_bytes: int | None = MAX_EVENT_BYTES,
) -> dict[str, Any]:
    """Validate one Segment message and return its normalized envelope.

    ``sent_at`` and ``base_context`` are the batch-level ``sentAt`` and ``context`` (a
    message's own values win). ``max_event_bytes=None`` skips the size/serializability
    check (only for callers that have already done it). Raises
    :class:`EventValidationError` naming the field.

    >>> from datetime import UTC, datetime
    >>> envelope = normalize_event(
    ...     {"type": "track", "event": "Order Completed", "userId": "u1",
    ...      "messageId": "m1", "timestamp": "2026-01-01T12:00:00Z",
    ...      "sentAt": "2026-01-01T12:00:05Z", "properties": {"revenue": 9.5}},
    ...     received_at=datetime(2026, 1, 1, 12, 0, 6, tzinfo=UTC), source="app")
    >>> envelope["timestamp"], envelope["originalTimestamp"]
    ('2026-01-01T12:00:01Z', '2026-01-01T12:00:00Z')
    >>> normalize_event({"type": "track", "userId": "u1"}, received_at=datetime.now(UTC),
    ...                 source=None)
    Traceback (most recent call last):
    ...
    tripwire.events.errors.EventValidationError: event: required for a track call
    """
    if not isinstance(raw, dict):
        raise EventValidationError("", f"an event must be a JSON object, got {type(raw).__name__}")
    if max_event_bytes is not None:
        _check_size(raw, max_event_bytes)

    kind = raw.get("type")
    if kind not in MESSAGE_TYPES:
        if kind is None:
            raise EventValidationError("type", "required")
        raise EventValidationError(
            "type", f"must be one of {', '.join(MESSAGE_TYPES)}, got {str(kind)[:40]!r}"
        )

    # Fast paths inline (a non-blank string, a dict); the helpers handle everything else.
    user_id = raw.get("userId")
    if user_id is not None and (type(user_id) is not str or not user_id or user_id.isspace()):
        user_id = _identifier(raw, "userId")
    anonymous_id = raw.get("anonymousId")
    if anonymous_id is not None and (
        type(anonymous_id) is not str or not anonymous_id or anonymous_id.isspace()
    ):
        anonymous_id = _identifier(raw, "anonymousId")
    if user_id is None and anonymous_id is None:
        raise EventValidationError("userId", "one of userId or anonymousId is required")

    message_id = raw.get("messageId")
    if message_id is None:
        message_id = new_message_id()
    elif isinstance(message_id, str):
        if not message_id.strip():
            raise EventValidationError("messageId", "must not be empty")
        if len(message_id) > MAX_MESSAGE_ID_CHARS:
            raise EventValidationError(
                "messageId", f"is longer than {MAX_MESSAGE_ID_CHARS} characters"
            )
    elif isinstance(message_id, int) and not isinstance(message_id, bool):
        message_id = str(message_id)
    else:
        raise EventValidationError(
            "messageId", f"must be a string, got {type(message_id).__name__}"
        )

    properties = raw.get("properties")
    if type(properties) is not dict:
        properties = _object(raw, "properties")
    traits = raw.get("traits")
    if type(traits) is not dict:
        traits = _object(raw, "traits")
    context = raw.get("context")
    if type(context) is not dict:
        context = _object(raw, "context")
    if base_context:
        context = {**base_context, **context}

    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        raise EventValidationError("name", f"must be a string, got {type(name).__name__}")

    if kind == "track":
        event = _event_name(raw.get("event"))
        check = CONVENTIONS.get(event)
        if check is not None:
            properties = check(properties, user_id, anonymous_id)
    else:
        event = _TYPE_EVENT_NAMES[kind]
        if kind == "group":
            group_id = _identifier(raw, "groupId")
            if group_id is None:
                raise EventValidationError("groupId", "required for a group call")
            properties = {**properties, "groupId": group_id}
        elif kind == "alias":
            previous_id = _identifier(raw, "previousId")
            if previous_id is None:
                raise EventValidationError("previousId", "required for an alias call")
            if user_id is None:
                raise EventValidationError("userId", "required for an alias call")
            properties = {**properties, "previousId": previous_id}

    received_moment, received_text = _received(received_at)
    client_timestamp = raw.get("timestamp")
    original = _timestamp(client_timestamp, "timestamp")
    sent = raw.get("sentAt", sent_at)
    sent_text = None
    if sent is not None:
        sent, sent_text = _sent(sent)
    timestamp_text: str
    original_text: str | None
    if original is None:
        timestamp_text = received_text
        original_text = None
    else:
        text: str = (
            client_timestamp
            if _is_canonical(client_timestamp)
            else _dumps(original, option=_TS_OPTIONS)[1:-1].decode()
        )
        original_text = text
        if sent is None:
            timestamp_text = text
        else:
            try:
                moment = corrected_timestamp(original, sent, received_moment)
            except TimestampError as error:
                raise EventValidationError("timestamp", str(error)) from None
            timestamp_text = _dumps(moment, option=_TS_OPTIONS)[1:-1].decode()

    integrations = raw.get("integrations")
    if not _KNOWN_FIELDS.issuperset(raw) or integrations:
        extra = {k: v for k, v in raw.items() if k not in _KNOWN_FIELDS}
        if integrations:
            extra["integrations"] = integrations
        previous = context.get(EXTRA_KEY)
        if isinstance(previous, dict):
            extra = {**previous, **extra}
        context = {**context, EXTRA_KEY: extra}

    return {
        "messageId": message_id,
        "type": kind,
        "event": event,
        "name": name,
        "userId": user_id,
        "anonymousId": anonymous_id,
        "timestamp": timestamp_text,
        "originalTimestamp": original_text,
        "sentAt": sent_text,
        "receivedAt": received_text,
        "properties": properties,
        "traits": traits,
        "context": context,
        "source": source,
    }


def validate_batch(
    messages: Sequence[Any],
    *,
    received_at: datetime,
    source: str | None,
    sent_at: Any = None,
    context: Mapping[str, Any] | None = None,
    max_event_bytes: int | None = MAX_EVENT_BYTES,
) -> tuple[list[dict[str, Any]], list[Rejection]]:
    """Normalize every message of a batch; invalid ones are listed, never fatal.

    Returns ``(accepted envelopes, rejections)``; each rejection names the message's index
    in the batch, the field and the reason. ``sent_at`` and ``context`` are the batch's own
    fields; an unusable batch ``sent_at`` raises :class:`EventValidationError` (the whole
    request is bad, not one event).

    >>> from datetime import UTC, datetime
    >>> ok, bad = validate_batch(
    ...     [{"type": "track", "event": "A", "userId": "u"}, {"type": "track", "event": "B"}],
    ...     received_at=datetime.now(UTC), source="app")
    >>> len(ok), bad
    (1, [Rejection(index=1, field='userId', reason='one of userId or anonymousId is required')])
    """
    batch_sent_at = _timestamp(sent_at, "sentAt")
    accepted: list[dict[str, Any]] = []
    rejected: list[Rejection] = []
    for index, raw in enumerate(messages):
        try:
            accepted.append(
                normalize_event(
                    raw,
                    received_at=received_at,
                    source=source,
                    sent_at=batch_sent_at,
                    base_context=context,
                    max_event_bytes=max_event_bytes,
                )
            )
        except EventValidationError as error:
            rejected.append(Rejection(index, error.field, error.reason))
    return accepted, rejected
