"""When sessions start: diurnal and weekly seasonality in each user's local time.

The session rate of user ``u`` at UTC minute ``t`` is

    λ_u(t) = r · a_u · D(local hour of t) · W(local weekday of t) · G(day)

with ``r`` the configured sessions per user-day, ``a_u`` the user's activity, ``D`` a
diurnal curve (night trough, lunch bump, evening peak; mean 1), ``W`` a weekly curve (busier
Friday–Saturday; mean 1) and ``G`` a slow growth trend. Users are grouped by UTC offset so a
day is drawn with one Poisson draw per user and one inverse-CDF lookup per session.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tripwire.sim.population import Population

MINUTE_MS = 60_000
DAY_MS = 86_400_000
DAY_MINUTES = 1440

#: Relative traffic by local hour (0–23), normalised to mean 1 below.
DIURNAL = np.array(
    [
        0.25,
        0.15,
        0.10,
        0.08,
        0.08,
        0.12,
        0.30,
        0.55,
        0.75,
        0.85,
        0.90,
        0.95,
        1.05,
        1.00,
        0.95,
        0.92,
        0.95,
        1.05,
        1.25,
        1.40,
        1.35,
        1.10,
        0.75,
        0.45,
    ]
)
DIURNAL = DIURNAL / DIURNAL.mean()
#: Relative traffic by local weekday (Monday first), mean 1.
WEEKLY = np.array([0.95, 0.94, 0.96, 0.98, 1.05, 1.10, 1.02])
WEEKLY = WEEKLY / WEEKLY.mean()
#: Sessions start at least this many ms into their minute: the user's ``identify`` and
#: ``$exposure`` go 2 ms and 1 ms before ``Session Started`` and must stay in the same day.
IDENTIFY_LEAD_MS = 2
#: Relative daily growth of traffic.
GROWTH_PER_DAY = 0.002


def minute_profile(day_start_ms: int, offset_min: int) -> np.ndarray:
    """Relative intensity of each UTC minute of the day starting at ``day_start_ms``.

    The hourly curve is interpolated linearly between hour midpoints so that traffic has no
    steps at the top of the hour.
    """
    local_minutes = np.arange(DAY_MINUTES) + offset_min + day_start_ms // MINUTE_MS
    minute_of_day = local_minutes % DAY_MINUTES
    midpoints = np.arange(-1, 25) * 60.0 + 30.0
    values = np.concatenate([DIURNAL[-1:], DIURNAL, DIURNAL[:1]])
    diurnal = np.interp(minute_of_day, midpoints, values)
    # 1970-01-01 was a Thursday (weekday 3 with Monday = 0).
    weekday = (local_minutes // DAY_MINUTES + 3) % 7
    return diurnal * WEEKLY[weekday]


@dataclass(frozen=True)
class SessionStarts:
    """Sessions of one day: who and when (epoch milliseconds), sorted by time."""

    user: np.ndarray
    start_ms: np.ndarray


def draw_session_starts(
    rng: np.random.Generator,
    population: Population,
    rate: float,
    day_start_ms: int,
    window_ms: tuple[int, int],
    day_index: int,
) -> SessionStarts:
    """Draw the session starts of the UTC day beginning at ``day_start_ms``.

    Minutes outside ``window_ms`` (a partial first or last day) get no sessions.
    """
    minute_ms = day_start_ms + np.arange(DAY_MINUTES, dtype=np.int64) * MINUTE_MS
    inside = (minute_ms >= window_ms[0]) & (minute_ms < window_ms[1])
    growth = 1.0 + GROWTH_PER_DAY * day_index
    users_parts: list[np.ndarray] = []
    starts_parts: list[np.ndarray] = []
    for offset in np.unique(population.tz_offset_min).tolist():
        members = np.flatnonzero(population.tz_offset_min == offset)
        profile = minute_profile(day_start_ms, int(offset)) * inside
        total = profile.sum() / DAY_MINUTES
        if total <= 0:
            continue
        counts = rng.poisson(rate * growth * total * population.activity[members])
        n = int(counts.sum())
        if n == 0:
            continue
        cdf = np.cumsum(profile)
        cdf /= cdf[-1]
        minutes = np.searchsorted(cdf, rng.random(n), side="right")
        users_parts.append(np.repeat(members, counts))
        starts_parts.append(
            day_start_ms + minutes * MINUTE_MS + rng.integers(IDENTIFY_LEAD_MS, MINUTE_MS, n)
        )
    if not users_parts:
        empty = np.empty(0, dtype=np.int64)
        return SessionStarts(empty, empty)
    user = np.concatenate(users_parts)
    start = np.concatenate(starts_parts).astype(np.int64)
    order = np.lexsort((user, start))
    return SessionStarts(user=user[order], start_ms=start[order])
