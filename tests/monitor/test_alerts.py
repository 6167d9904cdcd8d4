"""Alert lifecycle: open, dedupe, group, flap, silence, ack, resolve, change overlay."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from tripwire.monitor.alerts import AlertDraft, AlertError, AlertStore
from tripwire.monitor.changes import Change

T0 = datetime(2026, 11, 7, 18, 20, tzinfo=UTC)


def store() -> AlertStore:
    return AlertStore(sqlite3.connect(":memory:", isolation_level=None))


def draft(
    segment: dict[str, str], at: datetime = T0, rule: str = "down", **kw: object
) -> AlertDraft:
    base = dict(
        monitor="conv",
        rule=rule,
        metric="voice_checkout_conversion",
        severity="P1",
        segment=segment,
        at=at,
        onset=at - timedelta(minutes=9),
        observed=0.4,
        expected=0.62,
        lower=0.5,
        upper=0.74,
        direction=-1,
        condition="detector down",
    )
    base.update(kw)
    return AlertDraft(**base)  # type: ignore[arg-type]


def events(s: AlertStore) -> list[tuple[int, str]]:
    return s.connection.execute("SELECT alert_id, kind FROM alert_events ORDER BY id").fetchall()


def test_dedupe_group_and_lifecycle() -> None:
    s = store()
    segment = {"locale": "en-GB", "device": "Echo Show"}
    first = s.fire(draft(segment))
    assert first.outcome == "opened" and first.notified
    again = s.fire(draft(segment, T0 + timedelta(minutes=1)))
    assert (again.alert_id, again.outcome) == (first.alert_id, "deduplicated")
    parent = s.fire(draft({"locale": "en-GB"}, T0 + timedelta(minutes=2)))
    assert parent.outcome == "grouped" and not parent.notified
    assert s.get(parent.alert_id).group_id == first.alert_id
    other = s.fire(draft({"locale": "de-DE"}, T0 + timedelta(minutes=3)))
    assert other.outcome == "opened"  # not comparable with en-GB: its own group
    assert events(s) == [(first.alert_id, "firing"), (other.alert_id, "firing")]

    acked = s.acknowledge(first.alert_id, by="oncall", note="looking")
    assert (acked.status, acked.acked_by) == ("acknowledged", "oncall")
    resolved = s.resolve(first.alert_id, by="oncall", at=T0 + timedelta(hours=1))
    assert resolved.status == "resolved" and resolved.resolved_by == "oncall"
    with pytest.raises(AlertError, match="already resolved"):
        s.resolve(first.alert_id, by="x")
    with pytest.raises(AlertError, match="nothing to acknowledge"):
        s.acknowledge(first.alert_id, by="x")
    with pytest.raises(AlertError, match="no alert with id 999"):
        s.get(999)
    assert (first.alert_id, "resolved") in events(s)
    assert {a.id for a in s.query(status="open")} == {parent.alert_id, other.alert_id}


def test_flap_suppression_and_auto_resolve() -> None:
    s = store()
    first = s.fire(draft({"locale": "fr-FR"}))
    assert (
        s.clear("conv", "down", {"locale": "fr-FR"}, T0 + timedelta(minutes=30)) == first.alert_id
    )
    flap = s.fire(draft({"locale": "fr-FR"}, T0 + timedelta(minutes=50)))
    assert (flap.alert_id, flap.outcome, flap.notified) == (first.alert_id, "reopened", False)
    assert s.get(first.alert_id).flaps == 1 and s.get(first.alert_id).status == "firing"
    s.clear("conv", "down", {"locale": "fr-FR"}, T0 + timedelta(minutes=60))
    later = s.fire(draft({"locale": "fr-FR"}, T0 + timedelta(hours=3)))
    assert later.outcome == "opened" and later.alert_id != first.alert_id
    assert [k for _, k in events(s)] == ["firing", "resolved", "resolved", "firing"]


def test_silences_record_but_do_not_notify() -> None:
    s = store()
    with pytest.raises(AlertError, match="refusing to silence everything"):
        s.silence(until=T0 + timedelta(hours=1))
    s.silence(until=T0 + timedelta(hours=1), monitor="conv", segment={"locale": "en-GB"}, by="me")
    hushed = s.fire(draft({"locale": "en-GB", "device": "Echo Dot"}))
    assert not hushed.notified and s.get(hushed.alert_id).silenced
    after = s.fire(draft({"locale": "en-GB"}, T0 + timedelta(hours=2), monitor="other"))
    assert after.notified  # the silence expired
    assert [a for a, _ in events(s)] == [after.alert_id]


def test_alert_carries_changes_touching_its_segment_before_onset() -> None:
    s = store()
    s.changes.record(
        [
            Change(
                T0 - timedelta(minutes=11),
                "deploy",
                "payments-token",
                "2.3.1",
                {"locale": "en-GB", "device": "Echo Show"},
            ),
            Change(
                T0 - timedelta(minutes=40),
                "deploy",
                "voice-ux",
                "7.2.0",
                {"locale": "en-GB", "device": "Echo Dot"},
            ),
            Change(T0 - timedelta(hours=5), "deploy", "payments-token", "2.3.0", {}),
        ]
    )
    alert = s.get(s.fire(draft({"locale": "en-GB", "device": "Echo Show"})).alert_id)
    assert [(c["service"], c["version"]) for c in alert.changes] == [("payments-token", "2.3.1")]
    assert alert.to_json()["interval"] == [0.5, 0.74]
