"""Incident-readiness figures from records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tripwire.rca.history import incident_stats
from tripwire.rca.incidents import IncidentRecord

T = datetime(2026, 11, 7, 18, tzinfo=UTC)


def _record(
    id_: str,
    onset: datetime,
    category: str,
    *,
    alert: int | None = None,
    status: str = "open",
    recovered: datetime | None = None,
    segments=None,
) -> IncidentRecord:
    return IncidentRecord(
        id_,
        "m",
        alert,
        onset + timedelta(minutes=30),
        onset,
        onset + timedelta(hours=2),
        onset + timedelta(minutes=31),
        20.0,
        category,
        "ok",
        segments if segments is not None else [{"locale": "en-GB"}],
        None,
        status,
        recovered,
        None,
        {},
        None,
        None,
        None,
    )


@dataclass
class _Alert:
    id: int
    opened_at: datetime
    status: str = "resolved"
    note: str | None = None


def test_times_by_category_false_alarms_and_repeats():
    records = [
        _record("a", T, "code deploy", alert=1, recovered=T + timedelta(hours=2)),
        _record(
            "b",
            T + timedelta(days=30),
            "code deploy",
            alert=2,
            recovered=T + timedelta(days=30, hours=1),
        ),
        _record("c", T + timedelta(days=200), "code deploy"),
        _record("d", T, "config", status="false_alarm"),
    ]
    alerts = [
        _Alert(1, T + timedelta(minutes=10)),
        _Alert(2, T + timedelta(days=30, minutes=20)),
        _Alert(3, T, note="noise: holiday"),
    ]
    stats = incident_stats(records, alerts)
    deploy = next(c for c in stats.categories if c.category == "code deploy")
    assert deploy.incidents == 3
    assert deploy.median_minutes_to_detect == 15.0
    assert deploy.median_minutes_to_recover == 90.0
    assert stats.repeats == (("a", "b"),)  # c is more than a quarter later
    assert (
        stats.false_alarms == 2 and stats.alerts_considered == 5
    )  # 3 alerts + 2 incidents without one
