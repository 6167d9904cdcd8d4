"""Errors and rejection records of event validation."""

from __future__ import annotations

from dataclasses import dataclass


class EventValidationError(ValueError):
    """One event is invalid: ``field`` names where (dotted path), ``reason`` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Rejection:
    """One event of a batch that was not accepted: its position, the field and why."""

    index: int
    field: str
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"index": self.index, "field": self.field, "reason": self.reason}
