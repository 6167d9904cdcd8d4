"""Incidents in the state database: each investigation, with its alert, report and recovery.

Table ``incidents`` (``.tripwire/state.db``)::

    incidents(id, metric, alert_id, at, onset, window_end, created_at, seconds, category,
              integrity, segments, change, status, recovered_at, recovery, result,
              report_md, report_html, note)

``status`` is ``open``, ``recovered`` (with the evidence in ``recovery``) or
``false_alarm`` (resolved as noise). ``result`` is the whole investigation as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from tripwire.rca.investigation import Investigation
from tripwire.store.state import connect_state
from tripwire.store.workspace import Workspace

STATUSES = ("open", "recovered", "false_alarm")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    metric TEXT NOT NULL,
    alert_id INTEGER,
    at INTEGER NOT NULL,
    onset INTEGER NOT NULL,
    window_end INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    seconds REAL NOT NULL,
    category TEXT NOT NULL,
    integrity TEXT NOT NULL,
    segments TEXT NOT NULL DEFAULT '[]',
    change TEXT,
    status TEXT NOT NULL DEFAULT 'open',
    recovered_at INTEGER,
    recovery TEXT,
    result TEXT NOT NULL,
    report_md TEXT,
    report_html TEXT,
    note TEXT
);
CREATE INDEX IF NOT EXISTS incidents_onset ON incidents(onset);
"""


def _us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def _dt(micros: int | None) -> datetime | None:
    return None if micros is None else datetime.fromtimestamp(micros / 1_000_000, UTC)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def to_json(value: Any) -> str:
    """JSON of a dataclass tree (datetimes ISO, numpy scalars as numbers, NaN as null)."""

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            return {str(k): clean(v) for k, v in node.items()}
        if isinstance(node, list | tuple):
            return [clean(v) for v in node]
        if isinstance(node, float) and not math.isfinite(node):
            return None
        if isinstance(node, str | int | float | bool) or node is None:
            return node
        return _plain(node)

    data = (
        dataclasses.asdict(value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type)
        else value
    )
    return json.dumps(clean(data), default=_plain)


@dataclass(frozen=True)
class IncidentRecord:
    id: str
    metric: str
    alert_id: int | None
    at: datetime
    onset: datetime
    window_end: datetime
    created_at: datetime
    seconds: float
    category: str
    integrity: str
    segments: list[dict[str, str]]
    change: dict[str, Any] | None
    status: str
    recovered_at: datetime | None
    recovery: dict[str, Any] | None
    result: dict[str, Any]
    report_md: str | None
    report_html: str | None
    note: str | None


_COLUMNS = (
    "id, metric, alert_id, at, onset, window_end, created_at, seconds, category, integrity, segments, change,"
    " status, recovered_at, recovery, result, report_md, report_html, note"
)


def _req(micros: int) -> datetime:
    return datetime.fromtimestamp(micros / 1_000_000, UTC)


def _record(row: tuple[Any, ...]) -> IncidentRecord:
    (
        id_,
        metric,
        alert_id,
        at,
        onset,
        end,
        created,
        seconds,
        category,
        integrity,
        segments,
        change,
        status,
        recovered_at,
        recovery,
        result,
        md,
        html,
        note,
    ) = row
    return IncidentRecord(
        id_,
        metric,
        alert_id,
        _req(at),
        _req(onset),
        _req(end),
        _req(created),
        seconds,
        category,
        integrity,  # type: ignore[arg-type]
        json.loads(segments),
        json.loads(change) if change else None,
        status,
        _dt(recovered_at),
        json.loads(recovery) if recovery else None,
        json.loads(result),
        md,
        html,
        note,
    )


class IncidentStore:
    """The incidents table."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        connection.executescript(_SCHEMA)

    @classmethod
    def for_workspace(cls, workspace: Workspace) -> IncidentStore:
        return cls(connect_state(workspace))

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> IncidentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def save(
        self, inv: Investigation, *, report_md: str | None = None, report_html: str | None = None
    ) -> IncidentRecord:
        """Insert or replace the incident of ``inv`` (status kept when it already exists)."""
        existing = self.get_or_none(inv.id)
        change = inv.changes.implicated.change if inv.changes.implicated else None
        values = (
            inv.id,
            inv.metric,
            inv.alert_id,
            _us(inv.at),
            _us(inv.problem.regime.onset),
            _us(inv.problem.current.end),
            _us(inv.started_at),
            inv.seconds,
            inv.category,
            inv.integrity.verdict,
            json.dumps(list(inv.root_segments)),
            json.dumps(change) if change else None,
            existing.status if existing else "open",
            _us(existing.recovered_at) if existing and existing.recovered_at else None,
            json.dumps(existing.recovery) if existing and existing.recovery else None,
            to_json(inv),
            report_md,
            report_html,
            existing.note if existing else None,
        )
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            self.connection.execute(
                f"INSERT OR REPLACE INTO incidents({_COLUMNS}) VALUES ({', '.join('?' * 19)})",
                values,
            )
            self.connection.execute("COMMIT")
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        return self.get(inv.id)

    def get_or_none(self, incident_id: str) -> IncidentRecord | None:
        row = self.connection.execute(
            f"SELECT {_COLUMNS} FROM incidents WHERE id = ?", (incident_id,)
        ).fetchone()
        return _record(row) if row else None

    def get(self, incident_id: str) -> IncidentRecord:
        record = self.get_or_none(incident_id)
        if record is None:
            raise KeyError(f"no incident {incident_id!r} (see `tripwire incidents list`)")
        return record

    def list(self, *, status: str | None = None) -> list[IncidentRecord]:
        sql = f"SELECT {_COLUMNS} FROM incidents"
        params: tuple[Any, ...] = ()
        if status is not None:
            if status not in STATUSES:
                raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
            sql += " WHERE status = ?"
            params = (status,)
        return [
            _record(r)
            for r in self.connection.execute(sql + " ORDER BY onset DESC", params).fetchall()
        ]

    def set_status(
        self,
        incident_id: str,
        status: str,
        *,
        at: datetime | None = None,
        evidence: dict[str, Any] | None = None,
        note: str | None = None,
    ) -> IncidentRecord:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        self.get(incident_id)
        self.connection.execute(
            "UPDATE incidents SET status = ?, recovered_at = ?, recovery = ?, note = COALESCE(?, note) WHERE id = ?",
            (
                status,
                _us(at) if at else None,
                json.dumps(evidence) if evidence else None,
                note,
                incident_id,
            ),
        )
        return self.get(incident_id)


def record_investigation(workspace: Workspace, inv: Investigation) -> tuple[IncidentRecord, Any]:
    """Render the report, write it under ``reports/incidents/`` and store the incident."""
    from tripwire.report.incident_report import render_report, write_report

    report = render_report(inv)
    files = write_report(report, workspace.reports_dir / "incidents")
    with IncidentStore.for_workspace(workspace) as store:
        record = store.save(inv, report_md=str(files.markdown), report_html=str(files.html))
    return record, files
