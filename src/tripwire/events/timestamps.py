"""Timestamps of the envelope: parse ISO 8601, format RFC 3339 UTC, correct clock skew.

Every timestamp in a normalized envelope is a string in UTC with a ``Z`` suffix
(``2026-11-22T12:57:38.123000Z``; whole seconds drop the fraction), so what a caller gets
back is exactly what the buffer stores and what a consumer reads after a replay.

Clock skew is corrected the way Segment does it: a device whose clock is off stamps both
``timestamp`` (when the event happened) and ``sentAt`` (when the request left) with the same
error, so ``receivedAt − (sentAt − timestamp)`` is the event time on the server's clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

#: Accepted range of client-supplied times. Outside it a timestamp is certainly a bug
#: (an epoch of zero, a year typed with five digits) and the lake's partitioning would
#: scatter it across absurd dates.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)

#: Longest ISO 8601 string worth parsing (bounds the work spent on junk input).
MAX_TIMESTAMP_CHARS = 64

_FORMAT_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


class TimestampError(ValueError):
    """A client-supplied time that cannot be used; the message says why."""


def parse_timestamp(value: Any) -> datetime:
    """Parse an ISO 8601 string (or take an aware/naive ``datetime``) as a UTC-aware time.

    Times without an offset are taken as UTC, like Segment does.

    >>> parse_timestamp("2026-11-22T12:57:38.123+01:00").isoformat()
    '2026-11-22T11:57:38.123000+00:00'
    >>> parse_timestamp("yesterday")
    Traceback (most recent call last):
    ...
    tripwire.events.timestamps.TimestampError: not an ISO 8601 time: 'yesterday'
    """
    if isinstance(value, str):
        if len(value) > MAX_TIMESTAMP_CHARS:
            raise TimestampError(f"longer than {MAX_TIMESTAMP_CHARS} characters")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise TimestampError(f"not an ISO 8601 time: {value!r}") from None
    elif isinstance(value, datetime):
        parsed = value
    else:
        raise TimestampError(f"expected an ISO 8601 string, got {type(value).__name__}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    elif parsed.utcoffset() != timedelta(0):
        parsed = parsed.astimezone(UTC)
    if not EARLIEST <= parsed < LATEST:
        raise TimestampError(
            f"{format_timestamp(parsed)} is outside {EARLIEST.year}–{LATEST.year - 1}"
        )
    return parsed


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix (orjson's C formatter: fast).

    >>> format_timestamp(datetime(2026, 11, 22, 12, 57, 38, 123000, tzinfo=UTC))
    '2026-11-22T12:57:38.123000Z'
    """
    return orjson.dumps(moment, option=_FORMAT_OPTIONS)[1:-1].decode()


def corrected_timestamp(original: datetime, sent_at: datetime, received_at: datetime) -> datetime:
    """Segment's clock-skew correction: ``receivedAt − (sentAt − originalTimestamp)``.

    >>> sent = datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)   # device clock 1 h fast
    >>> happened = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    >>> received = datetime(2026, 1, 1, 11, 0, 11, tzinfo=UTC)
    >>> corrected_timestamp(happened, sent, received).time()
    datetime.time(11, 0, 1)
    """
    corrected = received_at - (sent_at - original)
    if not EARLIEST <= corrected < LATEST:
        raise TimestampError(
            f"corrected for clock skew it falls outside {EARLIEST.year}–{LATEST.year - 1}"
        )
    return corrected
