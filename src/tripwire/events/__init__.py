"""The event envelope (Segment-compatible): validation, normalization, tripwire's conventions.

Public API::

    normalize_event(raw, *, received_at, source) -> dict      # raises EventValidationError
    validate_batch(messages, *, received_at, source) -> (accepted, rejected)
    posthog_to_segment(message, ...) -> dict                   # PostHog capture → Segment

See :mod:`tripwire.events.envelope` for the rules and docs/ingest.md for the tables.
"""

from tripwire.events.conventions import CHANGE_KINDS, CONVENTIONS, LATENCY_OUTCOMES
from tripwire.events.envelope import (
    MAX_BATCH_BYTES,
    MAX_EVENT_BYTES,
    MESSAGE_TYPES,
    new_message_id,
    normalize_event,
    validate_batch,
)
from tripwire.events.errors import EventValidationError, Rejection
from tripwire.events.posthog import posthog_to_segment, posthog_write_key

__all__ = [
    "CHANGE_KINDS",
    "CONVENTIONS",
    "LATENCY_OUTCOMES",
    "MAX_BATCH_BYTES",
    "MAX_EVENT_BYTES",
    "MESSAGE_TYPES",
    "EventValidationError",
    "Rejection",
    "new_message_id",
    "normalize_event",
    "posthog_to_segment",
    "posthog_write_key",
    "validate_batch",
]
