"""Alert lifecycle in the state database: firing → acknowledged → resolved.

Tables (``.tripwire/state.db``)::

    alerts(id, monitor, rule, metric, severity, segment, segment_key, status, opened_at,
           onset_at, last_seen_at, resolved_at, observed, expected, lower, upper, direction,
           condition, group_id, flaps, silenced, changes, acked_by, note, resolved_by)
    alert_events(id, alert_id, kind, at, severity)   -- the notification outbox
    silences(id, monitor, rule, segment, until, created_by, reason, created_at)

* **Dedupe**: at most one open (firing or acknowledged) alert per monitor × rule × segment
  (a partial unique index); a trigger for an open alert only refreshes ``last_seen_at``,
  and a trigger inside the span of an alert already recorded (a replay) changes nothing.
* **Grouping**: a segment alert joins the group of an open alert of the same monitor on a
  comparable segment (its parent, e.g. ``locale=en-GB`` for ``locale=en-GB, device=Echo
  Show``, or its child); only a group's first alert notifies (one page per incident).
* **Flap suppression**: a trigger within ``flap_window`` of the same alert's resolution
  re-opens it (``flaps`` + 1) instead of opening and notifying a new one.
* **Silences** (monitor and/or rule and/or a segment subset, until an expiry): alerts they
  match are recorded but not notified.
* Every alert carries metric, segment, observed vs expected with the interval, severity,
  onset, and the change-log entries in the window before onset that touch its segment.

Lifecycle times are event times (the tick that fired), so a backfill records the alerts
exactly as they would have fired. Lifecycle changes append to ``alert_events`` in the same
transaction: notifiers (:mod:`tripwire.monitor.notify`) deliver from there, so a restart
neither loses nor repeats a notification.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from tripwire.monitor.changes import Change, ChangeLog
from tripwire.store.state import connect_state
from tripwire.store.workspace import Workspace

Status = Literal["firing", "acknowledged", "resolved"]
STATUSES: tuple[str, ...] = ("firing", "acknowledged", "resolved")

#: How far before the onset the change log is searched for suspects.
CHANGE_LOOKBACK = timedelta(hours=2)
#: A trigger this soon after the same alert resolved re-opens it instead of paging again.
FLAP_WINDOW = timedelta(hours=1)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    monitor TEXT NOT NULL,
    rule TEXT NOT NULL,
    metric TEXT NOT NULL,
    severity TEXT NOT NULL,
    segment TEXT NOT NULL,
    segment_key TEXT NOT NULL,
    status TEXT NOT NULL,
    opened_at INTEGER NOT NULL,
    onset_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    resolved_at INTEGER,
    observed REAL,
    expected REAL,
    lower REAL,
    upper REAL,
    direction INTEGER NOT NULL DEFAULT 0,
    condition TEXT NOT NULL DEFAULT '',
    group_id INTEGER,
    flaps INTEGER NOT NULL DEFAULT 0,
    silenced INTEGER NOT NULL DEFAULT 0,
    changes TEXT NOT NULL DEFAULT '[]',
    acked_by TEXT,
    note TEXT,
    resolved_by TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_open
    ON alerts(monitor, rule, segment_key) WHERE status != 'resolved';
CREATE INDEX IF NOT EXISTS alerts_status ON alerts(status, opened_at);
CREATE TABLE IF NOT EXISTS alert_events (
    id INTEGER PRIMARY KEY,
    alert_id INTEGER NOT NULL REFERENCES alerts(id),
    kind TEXT NOT NULL,
    at INTEGER NOT NULL,
    severity TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS silences (
    id INTEGER PRIMARY KEY,
    monitor TEXT,
    rule TEXT,
    segment TEXT NOT NULL DEFAULT '{}',
    until INTEGER NOT NULL,
    created_by TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL
);
"""


class AlertError(ValueError):
    """A lifecycle action that is not allowed (e.g. acknowledging a resolved alert)."""


def _us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def _dt(micros: int | None) -> datetime | None:
    return None if micros is None else datetime.fromtimestamp(micros / 1_000_000, UTC)


def _req(micros: int) -> datetime:
    return datetime.fromtimestamp(micros / 1_000_000, UTC)


def segment_key(segment: Mapping[str, str]) -> str:
    """Canonical text of a segment (``""`` for the aggregate).

    >>> segment_key({"locale": "en-GB", "device": "Echo Show"})
    'device=Echo Show, locale=en-GB'
    """
    return ", ".join(f"{k}={v}" for k, v in sorted(segment.items()))


def _comparable(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """One segment contains the other (and they are not both the aggregate)."""
    if not a and not b:
        return False
    small, big = (a, b) if len(a) <= len(b) else (b, a)
    return all(big.get(k) == v for k, v in small.items())


@dataclass(frozen=True)
class AlertDraft:
    """What a rule trigger knows when it fires (times are UTC datetimes)."""

    monitor: str
    rule: str
    metric: str
    severity: str
    segment: dict[str, str]
    at: datetime
    onset: datetime
    observed: float
    expected: float
    lower: float
    upper: float
    direction: int
    condition: str


@dataclass(frozen=True)
class Alert:
    """One alert as stored."""

    id: int
    monitor: str
    rule: str
    metric: str
    severity: str
    segment: dict[str, str]
    status: str
    opened_at: datetime
    onset_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None
    observed: float | None
    expected: float | None
    lower: float | None
    upper: float | None
    direction: int
    condition: str
    group_id: int
    flaps: int
    silenced: bool
    changes: list[dict[str, Any]] = field(default_factory=list)
    acked_by: str | None = None
    note: str | None = None
    resolved_by: str | None = None

    @property
    def segment_text(self) -> str:
        return segment_key(self.segment) or "(all)"

    @property
    def is_group_head(self) -> bool:
        return self.group_id == self.id

    def to_json(self) -> dict[str, Any]:
        def iso(d: datetime | None) -> str | None:
            return None if d is None else d.isoformat().replace("+00:00", "Z")

        return {
            "id": self.id,
            "monitor": self.monitor,
            "rule": self.rule,
            "metric": self.metric,
            "severity": self.severity,
            "segment": self.segment,
            "status": self.status,
            "opened_at": iso(self.opened_at),
            "onset_at": iso(self.onset_at),
            "last_seen_at": iso(self.last_seen_at),
            "resolved_at": iso(self.resolved_at),
            "observed": self.observed,
            "expected": self.expected,
            "interval": [self.lower, self.upper],
            "direction": self.direction,
            "condition": self.condition,
            "group_id": self.group_id,
            "flaps": self.flaps,
            "silenced": self.silenced,
            "changes": self.changes,
            "acked_by": self.acked_by,
            "note": self.note,
            "resolved_by": self.resolved_by,
        }


Outcome = Literal["opened", "deduplicated", "reopened", "grouped"]


@dataclass(frozen=True)
class FireResult:
    alert_id: int
    outcome: Outcome
    notified: bool


@dataclass(frozen=True)
class Silence:
    id: int
    monitor: str | None
    rule: str | None
    segment: dict[str, str]
    until: datetime
    created_by: str
    reason: str

    def matches(self, monitor: str, rule: str, segment: Mapping[str, str], at: datetime) -> bool:
        if at >= self.until:
            return False
        if self.monitor is not None and self.monitor != monitor:
            return False
        if self.rule is not None and self.rule != rule:
            return False
        return all(segment.get(k) == v for k, v in self.segment.items())


_COLUMNS = (
    "id, monitor, rule, metric, severity, segment, status, opened_at, onset_at, last_seen_at,"
    " resolved_at, observed, expected, lower, upper, direction, condition, group_id, flaps,"
    " silenced, changes, acked_by, note, resolved_by"
)


def _alert(row: tuple[Any, ...]) -> Alert:
    (
        id_,
        monitor,
        rule,
        metric,
        severity,
        segment,
        status,
        opened,
        onset,
        seen,
        resolved,
        observed,
        expected,
        lower,
        upper,
        direction,
        condition,
        group_id,
        flaps,
        silenced,
        changes,
        acked_by,
        note,
        resolved_by,
    ) = row
    return Alert(
        id=id_,
        monitor=monitor,
        rule=rule,
        metric=metric,
        severity=severity,
        segment=json.loads(segment),
        status=status,
        opened_at=_req(opened),
        onset_at=_req(onset),
        last_seen_at=_req(seen),
        resolved_at=_dt(resolved),  # type: ignore[arg-type]
        observed=observed,
        expected=expected,
        lower=lower,
        upper=upper,
        direction=direction,
        condition=condition,
        group_id=group_id or id_,
        flaps=flaps,
        silenced=bool(silenced),
        changes=json.loads(changes),
        acked_by=acked_by,
        note=note,
        resolved_by=resolved_by,
    )


class AlertStore:
    """Alerts, their outbox of lifecycle events, and silences, in the state database."""

    def __init__(
        self, connection: sqlite3.Connection, *, flap_window: timedelta = FLAP_WINDOW
    ) -> None:
        self.connection = connection
        self.flap_window = flap_window
        connection.executescript(_SCHEMA)
        self.changes = ChangeLog(connection)

    @classmethod
    def for_workspace(cls, workspace: Workspace) -> AlertStore:
        return cls(connect_state(workspace, check_same_thread=False))

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> AlertStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions ---------------------------------------------------------------------
    def _tx(self) -> _Tx:
        return _Tx(self.connection)

    # -- firing ---------------------------------------------------------------------------
    def fire(self, draft: AlertDraft) -> FireResult:
        """Record a trigger: open, deduplicate, re-open a flapping alert, or join a group."""
        key = segment_key(draft.segment)
        at = _us(draft.at)
        with self._tx() as con:
            row = con.execute(
                "SELECT id FROM alerts WHERE monitor=? AND rule=? AND segment_key=?"
                " AND status != 'resolved'",
                (draft.monitor, draft.rule, key),
            ).fetchone()
            if row is not None:
                con.execute(
                    "UPDATE alerts SET last_seen_at = max(last_seen_at, ?) WHERE id = ?",
                    (at, row[0]),
                )
                return FireResult(int(row[0]), "deduplicated", False)
            replayed = con.execute(
                "SELECT id FROM alerts WHERE monitor=? AND rule=? AND segment_key=?"
                " AND opened_at <= ? AND resolved_at >= ? ORDER BY opened_at DESC LIMIT 1",
                (draft.monitor, draft.rule, key, at, at),
            ).fetchone()
            if replayed is not None:  # a replay of a range already evaluated
                return FireResult(int(replayed[0]), "deduplicated", False)
            recent = con.execute(
                "SELECT id, resolved_at FROM alerts WHERE monitor=? AND rule=? AND segment_key=?"
                " AND status = 'resolved' ORDER BY resolved_at DESC LIMIT 1",
                (draft.monitor, draft.rule, key),
            ).fetchone()
            if (
                recent is not None
                and at - recent[1] <= _us_delta(self.flap_window)
                and at >= recent[1]
            ):
                con.execute(
                    "UPDATE alerts SET status='firing', resolved_at=NULL, resolved_by=NULL,"
                    " last_seen_at=?, flaps=flaps+1 WHERE id=?",
                    (at, recent[0]),
                )
                return FireResult(int(recent[0]), "reopened", False)
            silenced = any(
                s.matches(draft.monitor, draft.rule, draft.segment, draft.at)
                for s in self._silences(con, draft.at)
            )
            changes = [
                c.to_json()
                for c in self.changes.touching(
                    draft.segment, draft.onset - CHANGE_LOOKBACK, draft.at
                )
            ]
            group = self._group_of(con, draft)
            cursor = con.execute(
                "INSERT INTO alerts(monitor, rule, metric, severity, segment, segment_key, status,"
                " opened_at, onset_at, last_seen_at, observed, expected, lower, upper, direction,"
                " condition, group_id, silenced, changes)"
                " VALUES (?,?,?,?,?,?,'firing',?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    draft.monitor,
                    draft.rule,
                    draft.metric,
                    draft.severity,
                    json.dumps(draft.segment, sort_keys=True),
                    key,
                    at,
                    _us(draft.onset),
                    at,
                    _finite(draft.observed),
                    _finite(draft.expected),
                    _finite(draft.lower),
                    _finite(draft.upper),
                    draft.direction,
                    draft.condition,
                    group,
                    int(silenced),
                    json.dumps(changes),
                ),
            )
            alert_id = int(cursor.lastrowid or 0)
            if group is None:
                con.execute("UPDATE alerts SET group_id = id WHERE id = ?", (alert_id,))
            notify = group is None and not silenced
            if notify:
                con.execute(
                    "INSERT INTO alert_events(alert_id, kind, at, severity) VALUES (?, 'firing', ?, ?)",
                    (alert_id, at, draft.severity),
                )
            return FireResult(alert_id, "opened" if group is None else "grouped", notify)

    def _group_of(self, con: sqlite3.Connection, draft: AlertDraft) -> int | None:
        rows = con.execute(
            "SELECT id, segment, group_id FROM alerts WHERE monitor = ? AND status != 'resolved'"
            " ORDER BY opened_at, id",
            (draft.monitor,),
        ).fetchall()
        for _id, segment, group_id in rows:
            if _comparable(json.loads(segment), draft.segment):
                return int(group_id)
        return None

    def clear(
        self, monitor: str, rule: str, segment: Mapping[str, str], at: datetime
    ) -> int | None:
        """The rule's condition stopped holding: resolve the open alert (automatically)."""
        with self._tx() as con:
            row = con.execute(
                "SELECT id, severity, group_id, silenced, last_seen_at FROM alerts WHERE monitor=?"
                " AND rule=? AND segment_key=? AND status != 'resolved'",
                (monitor, rule, segment_key(segment)),
            ).fetchone()
            if row is None or row[4] > _us(at):
                return None  # nothing open, or a replay of a clear the alert has outlived
            self._resolve(con, int(row[0]), _us(at), "auto", notify=row[2] == row[0] and not row[3])
            return int(row[0])

    def _resolve(
        self, con: sqlite3.Connection, alert_id: int, at: int, by: str, *, notify: bool
    ) -> None:
        con.execute(
            "UPDATE alerts SET status='resolved', resolved_at=?, resolved_by=? WHERE id=?",
            (at, by, alert_id),
        )
        if notify:
            severity = con.execute(
                "SELECT severity FROM alerts WHERE id=?", (alert_id,)
            ).fetchone()[0]
            con.execute(
                "INSERT INTO alert_events(alert_id, kind, at, severity) VALUES (?, 'resolved', ?, ?)",
                (alert_id, at, severity),
            )

    # -- human actions --------------------------------------------------------------------
    def acknowledge(self, alert_id: int, *, by: str, note: str = "") -> Alert:
        with self._tx() as con:
            alert = self._get(con, alert_id)
            if alert.status == "resolved":
                raise AlertError(f"alert {alert_id} is resolved; nothing to acknowledge")
            con.execute(
                "UPDATE alerts SET status='acknowledged', acked_by=?, note=? WHERE id=?",
                (by, note or alert.note, alert_id),
            )
        return self.get(alert_id)

    def resolve(
        self, alert_id: int, *, by: str, note: str = "", at: datetime | None = None
    ) -> Alert:
        with self._tx() as con:
            alert = self._get(con, alert_id)
            if alert.status == "resolved":
                raise AlertError(f"alert {alert_id} is already resolved")
            if note:
                con.execute("UPDATE alerts SET note=? WHERE id=?", (note, alert_id))
            self._resolve(
                con,
                alert_id,
                _us(at or datetime.now(UTC)),
                by,
                notify=alert.is_group_head and not alert.silenced,
            )
        return self.get(alert_id)

    def silence(
        self,
        *,
        until: datetime,
        monitor: str | None = None,
        rule: str | None = None,
        segment: Mapping[str, str] | None = None,
        by: str = "",
        reason: str = "",
    ) -> Silence:
        if until.tzinfo is None:
            raise AlertError("until: give a timezone (UTC)")
        if monitor is None and rule is None and not segment:
            raise AlertError(
                "a silence needs a monitor, a rule or a segment (refusing to silence everything)"
            )
        with self._tx() as con:
            cursor = con.execute(
                "INSERT INTO silences(monitor, rule, segment, until, created_by, reason, created_at)"
                " VALUES (?,?,?,?,?,?,?)",
                (
                    monitor,
                    rule,
                    json.dumps(dict(segment or {}), sort_keys=True),
                    _us(until),
                    by,
                    reason,
                    _us(datetime.now(UTC)),
                ),
            )
        return Silence(
            int(cursor.lastrowid or 0), monitor, rule, dict(segment or {}), until, by, reason
        )

    def silences(self, at: datetime | None = None) -> list[Silence]:
        """Silences still in force at ``at`` (default now)."""
        return self._silences(self.connection, at or datetime.now(UTC))

    def _silences(self, con: sqlite3.Connection, at: datetime) -> list[Silence]:
        return [
            Silence(id_, monitor, rule, json.loads(segment), _dt(until), by, reason)  # type: ignore[arg-type]
            for id_, monitor, rule, segment, until, by, reason in con.execute(
                "SELECT id, monitor, rule, segment, until, created_by, reason FROM silences"
                " WHERE until > ? ORDER BY id",
                (_us(at),),
            ).fetchall()
        ]

    # -- reading --------------------------------------------------------------------------
    def _get(self, con: sqlite3.Connection, alert_id: int) -> Alert:
        row = con.execute(f"SELECT {_COLUMNS} FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        if row is None:
            raise AlertError(f"no alert with id {alert_id}")
        return _alert(row)

    def get(self, alert_id: int) -> Alert:
        return self._get(self.connection, alert_id)

    def query(
        self,
        *,
        status: str | None = None,
        severity: str | None = None,
        monitor: str | None = None,
        since: datetime | None = None,
    ) -> list[Alert]:
        """Alerts, newest first; ``status='open'`` means firing or acknowledged."""
        sql = f"SELECT {_COLUMNS} FROM alerts WHERE 1=1"
        params: list[Any] = []
        if status == "open":
            sql += " AND status != 'resolved'"
        elif status is not None:
            if status not in STATUSES:
                raise AlertError(
                    f"status must be open or one of {', '.join(STATUSES)}, got {status!r}"
                )
            sql += " AND status = ?"
            params.append(status)
        if severity is not None:
            sql += " AND severity = ?"
            params.append(severity)
        if monitor is not None:
            sql += " AND monitor = ?"
            params.append(monitor)
        if since is not None:
            sql += " AND opened_at >= ?"
            params.append(_us(since))
        sql += " ORDER BY opened_at DESC, id DESC"
        return [_alert(r) for r in self.connection.execute(sql, params).fetchall()]

    def changes_for(self, alert: Alert) -> list[Change]:
        """The change-log entries overlaid on ``alert`` (re-queried: later records count)."""
        return self.changes.touching(
            alert.segment, alert.onset_at - CHANGE_LOOKBACK, alert.opened_at
        )


def _us_delta(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1_000_000)


def _finite(value: float) -> float | None:
    return value if value == value and abs(value) != float("inf") else None


class _Tx:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> sqlite3.Connection:
        self.connection.execute("BEGIN IMMEDIATE")
        return self.connection

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.connection.execute("ROLLBACK" if exc_type else "COMMIT")
