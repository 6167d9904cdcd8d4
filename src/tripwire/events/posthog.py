"""PostHog's capture format mapped onto the Segment message, so both SDK families land alike.

PostHog sends ``{"api_key", "batch": [{"event", "distinct_id", "uuid", "timestamp",
"properties", ...}], "sent_at"}`` (or one event, or a bare list). Each event becomes a
Segment message that :func:`tripwire.events.normalize_event` then validates:

| PostHog                                  | Segment                                      |
|------------------------------------------|----------------------------------------------|
| `uuid`                                   | `messageId`                                  |
| `distinct_id` (or `properties.distinct_id`) | `userId`                                  |
| `properties.$device_id`                  | `anonymousId`                                |
| `timestamp`; else `offset` ms before now | `timestamp`                                  |
| batch `sent_at`                          | `sentAt` (so clock skew is corrected alike)  |
| `$identify` (+ `$set` → traits, `$anon_distinct_id` → anonymousId) | `identify`         |
| `$pageview` (`$pathname` → name)         | `page`                                       |
| `$screen` (`$screen_name` → name)        | `screen`                                     |
| `$groupidentify` (`$group_key`, `$group_set` → traits) | `group`                        |
| `$create_alias` (`alias` → previousId)   | `alias`                                      |
| any other event                          | `track` with the same name                   |
| `$lib`/`$lib_version`, `$os`, `$device_type`, `$app_version` | `context.library`, `context.os.name`, `context.device.type`, `context.app.version` |

Properties are kept whole (including PostHog's ``$`` keys); other top-level fields go to
``context["$extra"]`` like any unknown Segment field.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

_HANDLED = frozenset(
    {
        "event",
        "distinct_id",
        "$distinct_id",
        "uuid",
        "timestamp",
        "offset",
        "properties",
        "api_key",
        "token",
    }
)


#: PostHog's ``offset`` (ms before sending) beyond which it is treated as absent (10 years).
_MAX_OFFSET_MS = 10 * 365 * 86_400_000


def _context(properties: dict[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = {}
    lib = properties.get("$lib")
    if isinstance(lib, str):
        library = {"name": lib}
        version = properties.get("$lib_version")
        if isinstance(version, str):
            library["version"] = version
        context["library"] = library
    for prop, section, key in (
        ("$os", "os", "name"),
        ("$device_type", "device", "type"),
        ("$app_version", "app", "version"),
    ):
        value = properties.get(prop)
        if isinstance(value, str):
            context[section] = {key: value}
    return context


def _text_or_none(value: Any) -> Any:
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None


def posthog_to_segment(message: Any, *, received_at: datetime, sent_at: Any = None) -> Any:
    """One PostHog event as a Segment message (non-objects pass through to be rejected).

    >>> from datetime import UTC, datetime
    >>> m = posthog_to_segment(
    ...     {"event": "$pageview", "distinct_id": "u1", "uuid": "0190-aa",
    ...      "properties": {"$pathname": "/cart", "$os": "iOS"}},
    ...     received_at=datetime(2026, 1, 1, tzinfo=UTC))
    >>> m["type"], m["name"], m["userId"], m["messageId"], m["context"]["os"]
    ('page', '/cart', 'u1', '0190-aa', {'name': 'iOS'})
    """
    if not isinstance(message, dict):
        return message
    raw_properties = message.get("properties")
    properties: dict[str, Any] = raw_properties if isinstance(raw_properties, dict) else {}
    distinct_id = message.get("distinct_id")
    if distinct_id is None:
        distinct_id = message.get("$distinct_id", properties.get("distinct_id"))
    event = message.get("event")
    segment: dict[str, Any] = {
        "type": "track",
        "event": event,
        "userId": distinct_id,
        "messageId": message.get("uuid"),
        "properties": raw_properties,
        "context": _context(properties),
    }
    device_id = _text_or_none(properties.get("$device_id"))
    if device_id is not None and device_id != distinct_id:
        segment["anonymousId"] = device_id

    timestamp = message.get("timestamp")
    offset = message.get("offset")
    if (
        timestamp is None
        and isinstance(offset, int | float)
        and not isinstance(offset, bool)
        and 0 <= offset < _MAX_OFFSET_MS
    ):
        timestamp = received_at - timedelta(milliseconds=offset)
    if timestamp is not None:
        segment["timestamp"] = timestamp
    if sent_at is not None:
        segment["sentAt"] = sent_at

    if event == "$identify":
        segment["type"] = "identify"
        segment["traits"] = properties.get("$set")
        anonymous = _text_or_none(properties.get("$anon_distinct_id"))
        if anonymous is not None:
            segment["anonymousId"] = anonymous
    elif event == "$pageview":
        segment["type"] = "page"
        segment["name"] = _text_or_none(properties.get("$pathname"))
    elif event == "$screen":
        segment["type"] = "screen"
        segment["name"] = _text_or_none(properties.get("$screen_name"))
    elif event == "$groupidentify":
        segment["type"] = "group"
        segment["groupId"] = properties.get("$group_key")
        segment["traits"] = properties.get("$group_set")
    elif event == "$create_alias":
        segment["type"] = "alias"
        segment["previousId"] = properties.get("alias")

    extra = {k: v for k, v in message.items() if k not in _HANDLED}
    if extra:
        segment["context"]["$extra"] = extra
    return segment


def posthog_write_key(body: Any) -> str | None:
    """The project key of a PostHog request: ``api_key``/``token`` at the top, or on the
    first event (``api_key``, or ``properties.token`` as posthog-js sends it)."""
    candidates: list[Any] = []
    if isinstance(body, dict):
        candidates += [body.get("api_key"), body.get("token")]
        events = body.get("batch")
        first = events[0] if isinstance(events, list) and events else body
    elif isinstance(body, list) and body:
        first = body[0]
    else:
        first = None
    if isinstance(first, dict):
        candidates.append(first.get("api_key"))
        properties = first.get("properties")
        if isinstance(properties, dict):
            candidates.append(properties.get("token"))
    for candidate in candidates:
        if isinstance(candidate, str) and candidate:
            return candidate
    return None
