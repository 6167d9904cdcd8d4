"""What a simulated world is made of: the seed, its size and its time window.

Everything the world generates is a pure function of a :class:`WorldConfig`: the same
config gives byte-identical events. The window is ``[start, end)`` in UTC; by default it
starts at a fixed date so that runs on different days agree, and ``end="now"`` (for live
demos) is the one explicit exception that reads the wall clock.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

#: Default first instant of the simulated range (a Monday, so weeks line up).
DEFAULT_START = datetime(2026, 11, 2, tzinfo=UTC)


@dataclass(frozen=True)
class WorldConfig:
    """Parameters of one synthetic world.

    ``sessions_per_user_day`` is the mean session rate of a user (before seasonality); the
    event volume scales with ``users × days × sessions_per_user_day``: ≈ 33 events per
    session, 40% of them per-stage turn ``$latency`` events, which
    ``turn_latency_sampling`` < 1 thins out like a tracing sampler (for bigger traffic at
    the same cost). ``incident_days`` overrides the day offsets of the three incidents
    (default: spread over the range, never in the first 3 days when the range allows it).
    """

    seed: int = 7
    users: int = 50_000
    days: int = 14
    start: datetime | None = None
    end: datetime | None = None
    sessions_per_user_day: float = 0.25
    incident_days: tuple[int, int, int] | None = None
    turn_latency_sampling: float = 1.0
    incidents: bool = True
    experiments: bool = True

    def __post_init__(self) -> None:
        if self.users < 1:
            raise ValueError(f"users must be ≥ 1, got {self.users}")
        if self.days < 1:
            raise ValueError(f"days must be ≥ 1, got {self.days}")
        if not 0 < self.sessions_per_user_day <= 50:
            raise ValueError(
                f"sessions_per_user_day must be in (0, 50], got {self.sessions_per_user_day}"
            )
        if not 0 <= self.turn_latency_sampling <= 1:
            raise ValueError(
                f"turn_latency_sampling must be in [0, 1], got {self.turn_latency_sampling}"
            )
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware (UTC), got {value!r}")
        if self.incident_days is not None:
            if len(self.incident_days) != 3:
                raise ValueError(f"incident_days needs 3 day offsets, got {self.incident_days}")
            for day in self.incident_days:
                if not 0 <= day < self.days:
                    raise ValueError(f"incident day {day} is outside the {self.days}-day range")

    @classmethod
    def ending_now(cls, **kwargs: Any) -> WorldConfig:
        """A world whose range ends at the current minute (live demos; not reproducible)."""
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        return cls(end=now, **kwargs)

    @property
    def window(self) -> tuple[datetime, datetime]:
        """The simulated range ``[start, end)`` in UTC."""
        length = timedelta(days=self.days)
        if self.end is not None:
            end = self.end.astimezone(UTC)
            return end - length, end
        start = (self.start or DEFAULT_START).astimezone(UTC)
        return start, start + length

    @property
    def tag(self) -> str:
        """Short stable hash of the config: prefix of every messageId and session id."""
        text = repr(sorted(self.to_json().items()))
        return hashlib.blake2b(text.encode(), digest_size=5).hexdigest()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        start, end = self.window
        data["start"], data["end"] = start.isoformat(), end.isoformat()
        data["incident_days"] = list(self.incident_days) if self.incident_days else None
        return data
