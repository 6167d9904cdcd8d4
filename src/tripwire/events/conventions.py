"""tripwire's event conventions on top of Segment's (see docs/world.md and docs/ingest.md).

| event       | required properties                                  | optional                         |
|-------------|------------------------------------------------------|----------------------------------|
| `$exposure` | `experiment`, `variant` (strings)                    | `unit_id` (defaults to userId,   |
|             |                                                      | else anonymousId)                |
| `$change`   | `kind` ∈ deploy/flag/model/config/prompt/ui,         | `version`, `author`,             |
|             | `service`                                            | `description`, `rollback_of`     |
|             |                                                      | (strings), `scope` (object:      |
|             |                                                      | dimension → value or list)       |
| `$latency`  | `pipeline`, `stage` (strings), `ms` (number ≥ 0),    |                                  |
|             | `outcome` ∈ ok/error/timeout                         |                                  |

Each checker takes the event's properties and returns them (a copy when it fills a
default) or raises :class:`~tripwire.events.errors.EventValidationError` naming the
property.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tripwire.events.errors import EventValidationError

CHANGE_KINDS = frozenset({"deploy", "flag", "model", "config", "prompt", "ui"})
LATENCY_OUTCOMES = frozenset({"ok", "error", "timeout"})

#: Track names tripwire reserves for the other Segment call types (the lake's `event`
#: column uses them), so a track call may not use them.
RESERVED_TRACK_NAMES = frozenset({"$identify", "$page", "$screen", "$group", "$alias"})


def _text(properties: dict[str, Any], key: str, *, required: bool) -> None:
    value = properties.get(key)
    if value is None:
        if required:
            raise EventValidationError(f"properties.{key}", "required")
        return
    if not isinstance(value, str) or not value.strip():
        raise EventValidationError(
            f"properties.{key}", f"must be a non-empty string, got {_describe(value)}"
        )


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return "an empty string" if not value.strip() else repr(value[:40])
    return type(value).__name__


def check_exposure(
    properties: dict[str, Any], user_id: str | None, anonymous_id: str | None
) -> dict[str, Any]:
    """`$exposure`: experiment, variant; `unit_id` defaults to userId, else anonymousId."""
    _text(properties, "experiment", required=True)
    _text(properties, "variant", required=True)
    unit = properties.get("unit_id")
    if unit is None:
        return {**properties, "unit_id": user_id if user_id is not None else anonymous_id}
    if isinstance(unit, int) and not isinstance(unit, bool):
        return {**properties, "unit_id": str(unit)}
    _text(properties, "unit_id", required=False)
    return properties


def _scope_value_ok(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def check_change(
    properties: dict[str, Any], user_id: str | None, anonymous_id: str | None
) -> dict[str, Any]:
    """`$change`: kind ∈ CHANGE_KINDS, service; typed optional fields; scope dimension → value(s)."""
    kind = properties.get("kind")
    if kind is None:
        raise EventValidationError("properties.kind", "required")
    if kind not in CHANGE_KINDS:
        raise EventValidationError(
            "properties.kind",
            f"must be one of {', '.join(sorted(CHANGE_KINDS))}, got {_describe(kind)}",
        )
    _text(properties, "service", required=True)
    for key in ("version", "author", "description", "rollback_of"):
        _text(properties, key, required=False)
    scope = properties.get("scope")
    if scope is not None:
        if not isinstance(scope, dict):
            raise EventValidationError(
                "properties.scope",
                f"must be an object of dimension → value, got {_describe(scope)}",
            )
        for dimension, value in scope.items():
            values = value if isinstance(value, list) else [value]
            if not values or not all(_scope_value_ok(v) for v in values):
                raise EventValidationError(
                    f"properties.scope.{dimension}",
                    "must be a scalar or a non-empty list of scalars",
                )
    return properties


def check_latency(
    properties: dict[str, Any], user_id: str | None, anonymous_id: str | None
) -> dict[str, Any]:
    """`$latency`: pipeline, stage, ms (finite number ≥ 0), outcome ∈ ok/error/timeout."""
    _text(properties, "pipeline", required=True)
    _text(properties, "stage", required=True)
    ms = properties.get("ms")
    if ms is None:
        raise EventValidationError("properties.ms", "required")
    if isinstance(ms, bool) or not isinstance(ms, int | float) or not math.isfinite(ms) or ms < 0:
        shown = (
            ms if isinstance(ms, int | float) and not isinstance(ms, bool) else type(ms).__name__
        )
        raise EventValidationError("properties.ms", f"must be a finite number ≥ 0, got {shown}")
    outcome = properties.get("outcome")
    if outcome is None:
        raise EventValidationError("properties.outcome", "required")
    if outcome not in LATENCY_OUTCOMES:
        raise EventValidationError(
            "properties.outcome", f"must be one of ok, error, timeout, got {_describe(outcome)}"
        )
    return properties


ConventionCheck = Callable[[dict[str, Any], str | None, str | None], dict[str, Any]]

#: Track event name → its convention check.
CONVENTIONS: dict[str, ConventionCheck] = {
    "$exposure": check_exposure,
    "$change": check_change,
    "$latency": check_latency,
}
