"""The change log: deploys, flags, models, configs, prompts and UI changes, with their scope.

Every investigation starts from "what changed just before?". Changes arrive three ways and
land in one table of the state database (``changes``), deduplicated by id:

* ``$change`` events (``properties``: ``kind``, ``service``, ``version``, ``scope``,
  ``author``, ``description``, ``rollback_of``; docs/world.md) read from the lake or the
  buffer (:func:`changes_from_envelopes`, :meth:`ChangeLog.sync_lake`);
* ``POST /v1/changes`` (:mod:`tripwire.monitor.http`);
* ``tripwire change add --kind deploy --service payments-token --version 2.3.1 --scope locale=en-GB``.

A change's ``scope`` maps dimensions to a value or a list of values; an empty scope is
global. :func:`touches` decides whether a change can have affected a segment: they conflict
only when both name a dimension and their values do not intersect. Dimension names are
compared by their last path component, so ``properties.intent`` matches ``intent``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from tripwire.store.state import connect_state
from tripwire.store.workspace import Workspace

ChangeKind = Literal["deploy", "flag", "model", "config", "prompt", "ui", "data"]
CHANGE_KINDS: tuple[str, ...] = ("deploy", "flag", "model", "config", "prompt", "ui", "data")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS changes (
    id TEXT PRIMARY KEY,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    service TEXT NOT NULL,
    version TEXT NOT NULL DEFAULT '',
    scope TEXT NOT NULL DEFAULT '{}',
    author TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    rollback_of TEXT,
    origin TEXT NOT NULL,
    recorded_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_at ON changes(at);
CREATE INDEX IF NOT EXISTS changes_service ON changes(service, at);
"""


class ChangeError(ValueError):
    """A change that cannot be recorded (field named in the message)."""


def _us(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ChangeError(f"naive datetime {moment!r}: give a timezone (UTC)")
    return int(moment.timestamp() * 1_000_000)


def _dt(micros: int) -> datetime:
    return datetime.fromtimestamp(micros / 1_000_000, UTC)


def dimension_key(ref: str) -> str:
    """The comparable name of a dimension reference: its last path component.

    >>> dimension_key("properties.intent"), dimension_key("context.traits.payment_method")
    ('intent', 'payment_method')
    """
    return ref.rsplit(".", 1)[-1]


def _values(value: Any) -> set[str]:
    items = value if isinstance(value, list | tuple | set) else [value]
    return {str(v) for v in items}


def touches(scope: Mapping[str, Any], segment: Mapping[str, Any]) -> bool:
    """Could a change with ``scope`` have affected ``segment``?

    >>> touches({"locale": "en-GB", "device": "Echo Show"}, {"locale": "en-GB"})
    True
    >>> touches({"locale": "en-GB"}, {"locale": "de-DE", "device": "web"})
    False
    >>> touches({}, {"properties.intent": "returns"}), touches({"intent": ["a", "b"]}, {"properties.intent": "b"})
    (True, True)
    """
    mine = {dimension_key(k): _values(v) for k, v in scope.items()}
    for ref, value in segment.items():
        wanted = mine.get(dimension_key(ref))
        if wanted is not None and not (wanted & _values(value)):
            return False
    return True


@dataclass(frozen=True)
class Change:
    """One entry of the change log."""

    at: datetime
    kind: str
    service: str
    version: str = ""
    scope: dict[str, Any] = field(default_factory=dict)
    author: str = ""
    description: str = ""
    rollback_of: str | None = None
    origin: str = "api"
    id: str = ""

    def __post_init__(self) -> None:
        if self.kind not in CHANGE_KINDS:
            raise ChangeError(f"kind: must be one of {', '.join(CHANGE_KINDS)}, got {self.kind!r}")
        if not self.service:
            raise ChangeError("service: required")
        if not isinstance(self.scope, dict):
            raise ChangeError(
                f"scope: must be a mapping of dimension to value(s), got {self.scope!r}"
            )
        if self.at.tzinfo is None:
            raise ChangeError(f"at: naive datetime {self.at!r}: give a timezone (UTC)")
        if not self.id:
            object.__setattr__(self, "id", self.fingerprint())

    def fingerprint(self) -> str:
        """Deterministic id from the content (so the same change recorded twice is one)."""
        text = json.dumps(
            [_us(self.at), self.kind, self.service, self.version, self.scope], sort_keys=True
        )
        return "chg_" + hashlib.blake2b(text.encode(), digest_size=8).hexdigest()

    def touches(self, segment: Mapping[str, Any]) -> bool:
        return touches(self.scope, segment)

    def scope_text(self) -> str:
        if not self.scope:
            return "global"
        return ", ".join(
            f"{k}={'|'.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in sorted(self.scope.items())
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat().replace("+00:00", "Z"),
            "kind": self.kind,
            "service": self.service,
            "version": self.version,
            "scope": self.scope,
            "author": self.author,
            "description": self.description,
            "rollback_of": self.rollback_of,
            "origin": self.origin,
        }


def parse_scope(items: Iterable[str]) -> dict[str, Any]:
    """``["locale=en-GB", "device=Echo Show|Echo Dot"]`` → a scope mapping.

    >>> parse_scope(["locale=en-GB", "device=Echo Show|Echo Dot"])
    {'locale': 'en-GB', 'device': ['Echo Show', 'Echo Dot']}
    """
    scope: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ChangeError(f"scope: expected DIMENSION=VALUE, got {item!r}")
        values = [v.strip() for v in value.split("|") if v.strip()]
        scope[key.strip()] = values[0] if len(values) == 1 else values
    return scope


def _parse_time(value: Any, what: str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        raise ChangeError(f"{what}: expected an ISO timestamp, got {value!r}")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:
        raise ChangeError(f"{what}: not an ISO timestamp: {value!r}") from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def change_from_properties(
    props: Mapping[str, Any], at: datetime, *, origin: str, id: str = ""
) -> Change:
    """A :class:`Change` from ``$change`` properties (or a ``POST /v1/changes`` body)."""
    scope = props.get("scope") or {}
    if not isinstance(scope, dict):
        raise ChangeError(f"scope: must be an object of dimension → value(s), got {scope!r}")
    for name in ("kind", "service"):
        if not isinstance(props.get(name), str) or not props.get(name):
            raise ChangeError(f"{name}: required string, got {props.get(name)!r}")
    return Change(
        at=at,
        kind=str(props["kind"]),
        service=str(props["service"]),
        version=str(props.get("version") or ""),
        scope=dict(scope),
        author=str(props.get("author") or ""),
        description=str(props.get("description") or ""),
        rollback_of=None if props.get("rollback_of") is None else str(props["rollback_of"]),
        origin=origin,
        id=id,
    )


def changes_from_envelopes(envelopes: Iterable[Mapping[str, Any]]) -> list[Change]:
    """The ``$change`` track events among ``envelopes`` as changes (others ignored)."""
    out = []
    for envelope in envelopes:
        if envelope.get("event") != "$change":
            continue
        at = _parse_time(envelope.get("timestamp"), "timestamp")
        message_id = envelope.get("messageId")
        out.append(
            change_from_properties(
                envelope.get("properties") or {},
                at,
                origin="event",
                id=f"evt_{message_id}" if message_id else "",
            )
        )
    return out


class ChangeLog:
    """The change log table in the workspace's state database."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        connection.executescript(_SCHEMA)

    @classmethod
    def for_workspace(cls, workspace: Workspace) -> ChangeLog:
        return cls(connect_state(workspace, check_same_thread=False))

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> ChangeLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record(self, changes: Sequence[Change] | Change) -> int:
        """Insert changes (ignoring ids already recorded); returns how many were new."""
        items = [changes] if isinstance(changes, Change) else list(changes)
        now = _us(datetime.now(UTC))
        before = self.connection.total_changes
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            self.connection.executemany(
                "INSERT OR IGNORE INTO changes(id, at, kind, service, version, scope, author,"
                " description, rollback_of, origin, recorded_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        c.id,
                        _us(c.at),
                        c.kind,
                        c.service,
                        c.version,
                        json.dumps(c.scope, sort_keys=True),
                        c.author,
                        c.description,
                        c.rollback_of,
                        c.origin,
                        now,
                    )
                    for c in items
                ],
            )
            self.connection.execute("COMMIT")
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        return self.connection.total_changes - before

    def query(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        service: str | None = None,
        kind: str | None = None,
        limit: int | None = None,
    ) -> list[Change]:
        """Changes in ``[since, until)`` (optionally one service/kind), oldest first."""
        sql = "SELECT id, at, kind, service, version, scope, author, description, rollback_of, origin FROM changes WHERE 1=1"
        params: list[Any] = []
        if since is not None:
            sql += " AND at >= ?"
            params.append(_us(since))
        if until is not None:
            sql += " AND at < ?"
            params.append(_us(until))
        if service is not None:
            sql += " AND service = ?"
            params.append(service)
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        sql += " ORDER BY at, id"
        if limit is not None:
            sql = f"SELECT * FROM ({sql.replace(' ORDER BY at, id', ' ORDER BY at DESC, id DESC')} LIMIT {int(limit)}) ORDER BY at, id"
        return [
            Change(
                at=_dt(at),
                kind=kind_,
                service=svc,
                version=version,
                scope=json.loads(scope),
                author=author,
                description=description,
                rollback_of=rollback_of,
                origin=origin,
                id=id_,
            )
            for id_, at, kind_, svc, version, scope, author, description, rollback_of, origin in self.connection.execute(
                sql, params
            ).fetchall()
        ]

    def touching(self, segment: Mapping[str, Any], start: datetime, end: datetime) -> list[Change]:
        """Changes in ``[start, end]`` whose scope touches ``segment`` (the RCA query).

        Nearest to ``end`` first (the usual suspect is the last change before onset).
        """
        window = self.query(since=start)
        hits = [c for c in window if c.at <= end and c.touches(segment)]
        return sorted(hits, key=lambda c: (end - c.at, c.id))

    def sync_lake(
        self, backend: Any, *, start: datetime | None = None, end: datetime | None = None
    ) -> int:
        """Record the ``$change`` events of the lake (in ``[start, end)``); returns new ones."""
        from tripwire.store.engine import events_table

        table = events_table(backend)
        expr = table.filter(table.event == "$change")
        if start is not None:
            expr = expr.filter(table.timestamp >= start)
        if end is not None:
            expr = expr.filter(table.timestamp < end)
        rows = backend.to_pyarrow(expr.select("message_id", "timestamp", "properties")).to_pylist()
        changes = []
        for row in rows:
            props = json.loads(row["properties"] or "{}")
            try:
                changes.append(
                    change_from_properties(
                        props, row["timestamp"], origin="event", id=f"evt_{row['message_id']}"
                    )
                )
            except ChangeError:
                continue  # a malformed $change in the lake is not a change we can overlay
        return self.record(changes) if changes else 0
