"""Step 10 — learn from the history: incident-readiness figures.

From the incident records (and the alerts they started from, when the alert store is
there):

* **time to detect** — onset → alert opened (incidents started from an alert);
* **time to localize** — alert opened (or the investigation's reference time) → the
  investigation finished;
* **time to recover** — onset → recovered;

as medians per root-cause category; the **false-alarm rate** (alerts resolved as noise —
incidents marked ``false_alarm`` and alerts resolved with a note containing "noise" — over
all alerts/incidents); and **repeat incidents**: same category and overlapping scope
(:func:`tripwire.monitor.changes.touches`) within a quarter (91 days).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tripwire.monitor.changes import touches
from tripwire.rca.incidents import IncidentRecord

QUARTER = timedelta(days=91)


@dataclass(frozen=True)
class CategoryStats:
    category: str
    incidents: int
    median_minutes_to_detect: float | None
    median_minutes_to_localize: float | None
    median_minutes_to_recover: float | None


@dataclass(frozen=True)
class HistoryStats:
    categories: tuple[CategoryStats, ...]
    false_alarms: int
    alerts_considered: int
    false_alarm_rate: float | None
    repeats: tuple[tuple[str, str], ...]  # (earlier id, later id)


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _overlap(a: IncidentRecord, b: IncidentRecord) -> bool:
    if not a.segments or not b.segments:
        return not a.segments and not b.segments
    return any(touches(x, y) for x in a.segments for y in b.segments)


def incident_stats(records: Sequence[IncidentRecord], alerts: Sequence[Any] = ()) -> HistoryStats:
    """Readiness figures from incident records and (optionally) alert objects.

    ``alerts`` are :class:`tripwire.monitor.alerts.Alert`-like objects with ``id``,
    ``opened_at``, ``status`` and ``note``.
    """
    opened = {a.id: a.opened_at for a in alerts}
    by_category: dict[str, list[IncidentRecord]] = {}
    for record in records:
        if record.status != "false_alarm":
            by_category.setdefault(record.category, []).append(record)
    rows = []
    for category, items in sorted(by_category.items()):
        detect, localize, recover = [], [], []
        for r in items:
            alert_time = opened.get(r.alert_id) if r.alert_id is not None else None
            if alert_time is not None:
                detect.append((alert_time - r.onset).total_seconds() / 60)
            start = alert_time or r.at
            finished = r.created_at + timedelta(seconds=r.seconds)
            localize.append(max((finished - start).total_seconds() / 60, r.seconds / 60))
            if r.recovered_at is not None:
                recover.append((r.recovered_at - r.onset).total_seconds() / 60)
        rows.append(
            CategoryStats(
                category, len(items), _median(detect), _median(localize), _median(recover)
            )
        )
    noise_alerts = sum(
        1
        for a in alerts
        if getattr(a, "status", "") == "resolved"
        and "noise" in (getattr(a, "note", "") or "").lower()
    )
    noise_incidents = sum(
        1
        for r in records
        if r.status == "false_alarm"
        and r.alert_id
        not in {a.id for a in alerts if "noise" in (getattr(a, "note", "") or "").lower()}
    )
    considered = len(alerts) + sum(1 for r in records if r.alert_id is None)
    false_alarms = noise_alerts + noise_incidents
    repeats = []
    ordered = sorted((r for r in records if r.status != "false_alarm"), key=lambda r: r.onset)
    for i, later in enumerate(ordered):
        for earlier in ordered[:i]:
            if (
                earlier.category == later.category
                and later.onset - earlier.onset <= QUARTER
                and _overlap(earlier, later)
            ):
                repeats.append((earlier.id, later.id))
                break
    return HistoryStats(
        tuple(rows),
        false_alarms,
        considered,
        false_alarms / considered if considered else None,
        tuple(repeats),
    )
