"""Webhook notifications of alert lifecycle events, with retries and a delivery log.

Notifiers are configured in ``tripwire.yaml``::

    notifiers:
      - name: oncall-slack
        type: webhook
        url: https://hooks.slack.com/services/...
        format: slack          # or json (generic)
        min_severity: P2       # P1 and P2 only
        events: [firing, resolved]

Delivery reads the alert store's outbox (``alert_events``, written in the same transaction
as the alert) and keeps, per notifier and event, one row in ``deliveries`` (status
``pending`` → ``delivered`` or ``failed``, attempts, next attempt time) plus one row per
attempt in ``delivery_attempts`` (the delivery log: HTTP status or error, duration).

Restarts neither lose nor repeat: an event is in the outbox before anyone could notify it,
and a delivery marked ``delivered`` is never sent again. (A crash in the instant between the
receiver's 2xx and our commit re-sends once; every request carries the same
``X-Tripwire-Delivery`` id so receivers can drop the duplicate.) Failed attempts back off
exponentially (``base · 2^(attempt−1)``, capped) up to ``max_attempts``.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from tripwire.monitor.alerts import Alert, AlertStore
from tripwire.monitor.definitions import SEVERITIES
from tripwire.store.workspace import Workspace

PayloadFormat = Literal["slack", "json"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    notifier TEXT NOT NULL,
    event_id INTEGER NOT NULL REFERENCES alert_events(id),
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    delivered_at INTEGER,
    UNIQUE (notifier, event_id)
);
CREATE TABLE IF NOT EXISTS delivery_attempts (
    id INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL REFERENCES deliveries(id),
    at INTEGER NOT NULL,
    http_status INTEGER,
    error TEXT,
    seconds REAL NOT NULL
);
"""

_SLACK_EMOJI = {"P1": ":rotating_light:", "P2": ":warning:", "P3": ":mag:", "P4": ":memo:"}


class NotifierConfigError(ValueError):
    """A notifier entry of tripwire.yaml that cannot be used (index and field named)."""


@dataclass(frozen=True)
class WebhookNotifier:
    """One webhook target."""

    name: str
    url: str
    format: PayloadFormat = "json"
    min_severity: str = "P4"
    events: tuple[str, ...] = ("firing", "resolved")
    timeout_seconds: float = 5.0
    max_attempts: int = 6
    backoff_seconds: float = 2.0
    max_backoff_seconds: float = 300.0
    headers: dict[str, str] = field(default_factory=dict)

    def wants(self, kind: str, severity: str) -> bool:
        return kind in self.events and SEVERITIES.index(severity) <= SEVERITIES.index(
            self.min_severity
        )  # type: ignore[arg-type]

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1)))


def notifiers_from_config(entries: Sequence[Any]) -> list[WebhookNotifier]:
    """Parse ``notifiers:`` of tripwire.yaml."""
    out = []
    for index, entry in enumerate(entries or []):
        where = f"tripwire.yaml: notifiers[{index}]"
        if not isinstance(entry, dict):
            raise NotifierConfigError(f"{where}: expected a mapping, got {entry!r}")
        kind = entry.get("type", "webhook")
        if kind != "webhook":
            raise NotifierConfigError(f"{where}.type: only 'webhook' is supported, got {kind!r}")
        url = entry.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise NotifierConfigError(f"{where}.url: an http(s) URL is required, got {url!r}")
        fmt = entry.get("format", "json")
        if fmt not in ("slack", "json"):
            raise NotifierConfigError(f"{where}.format: slack or json, got {fmt!r}")
        severity = entry.get("min_severity", "P4")
        if severity not in SEVERITIES:
            raise NotifierConfigError(
                f"{where}.min_severity: one of {', '.join(SEVERITIES)}, got {severity!r}"
            )
        events = tuple(entry.get("events", ("firing", "resolved")))
        unknown = [e for e in events if e not in ("firing", "resolved")]
        if unknown:
            raise NotifierConfigError(f"{where}.events: firing and/or resolved, got {unknown[0]!r}")
        out.append(
            WebhookNotifier(
                name=str(entry.get("name") or f"webhook-{index + 1}"),
                url=url,
                format=fmt,
                min_severity=severity,
                events=events,
                timeout_seconds=float(entry.get("timeout_seconds", 5.0)),
                max_attempts=int(entry.get("max_attempts", 6)),
                backoff_seconds=float(entry.get("backoff_seconds", 2.0)),
                headers={str(k): str(v) for k, v in (entry.get("headers") or {}).items()},
            )
        )
    names = [n.name for n in out]
    for name in names:
        if names.count(name) > 1:
            raise NotifierConfigError(f"tripwire.yaml: notifiers: duplicate name {name!r}")
    return out


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"


def alert_text(alert: Alert, kind: str) -> str:
    """One line for humans: ``[P1 firing] voice_checkout_conversion (locale=en-GB, …)``."""
    state = "RESOLVED" if kind == "resolved" else "firing"
    interval = f"[{_fmt(alert.lower)}, {_fmt(alert.upper)}]" if alert.lower is not None else ""
    onset = alert.onset_at.strftime("%H:%M UTC")
    return (
        f"[{alert.severity} {state}] {alert.metric} ({alert.segment_text}): observed"
        f" {_fmt(alert.observed)} vs expected {_fmt(alert.expected)} {interval}; began ~{onset}"
        f"; rule {alert.rule}: {alert.condition}"
    )


def json_payload(alert: Alert, kind: str) -> dict[str, Any]:
    """The generic JSON payload: the event kind and the whole alert."""
    return {"event": kind, "alert": alert.to_json(), "text": alert_text(alert, kind)}


def slack_payload(alert: Alert, kind: str) -> dict[str, Any]:
    """A Slack incoming-webhook payload (``text`` plus Block Kit sections)."""
    text = alert_text(alert, kind)
    changes = alert.changes[:5]
    lines = [
        f"*{c['kind']}* `{c['service']}` {c['version']} at {c['at'][11:16]} UTC"
        f" (scope: {', '.join(f'{k}={v}' for k, v in sorted(c['scope'].items())) or 'global'})"
        for c in changes
    ]
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"{_SLACK_EMOJI.get(alert.severity, '')} {text}"},
        },
    ]
    if lines:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "*Changes before onset*\n" + "\n".join(lines)},
            }
        )
    return {"text": text, "blocks": blocks}


def payload(notifier: WebhookNotifier, alert: Alert, kind: str) -> dict[str, Any]:
    return slack_payload(alert, kind) if notifier.format == "slack" else json_payload(alert, kind)


Poster = Callable[[WebhookNotifier, bytes, dict[str, str]], int]


def http_post(notifier: WebhookNotifier, body: bytes, headers: dict[str, str]) -> int:
    """POST ``body``; returns the HTTP status (raises ``OSError`` on network errors)."""
    request = urllib.request.Request(notifier.url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=notifier.timeout_seconds) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@dataclass(frozen=True)
class DeliveryReport:
    delivered: int
    failed: int
    retrying: int


class Dispatcher:
    """Delivers the outbox of an :class:`AlertStore` to its notifiers."""

    def __init__(
        self,
        store: AlertStore,
        notifiers: Sequence[WebhookNotifier],
        *,
        post: Poster = http_post,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.notifiers = {n.name: n for n in notifiers}
        self.post = post
        self.clock = clock
        store.connection.executescript(_SCHEMA)

    @classmethod
    def for_workspace(cls, workspace: Workspace, store: AlertStore, **kwargs: Any) -> Dispatcher:
        return cls(
            store, notifiers_from_config(workspace.setting("notifiers", default=[])), **kwargs
        )

    def enqueue(self) -> int:
        """Create the pending deliveries of outbox events not yet planned; returns how many."""
        con = self.store.connection
        now = int(self.clock() * 1_000_000)
        created = 0
        con.execute("BEGIN IMMEDIATE")
        try:
            for notifier in self.notifiers.values():
                rows = con.execute(
                    "SELECT e.id, e.kind, e.severity FROM alert_events e WHERE NOT EXISTS"
                    " (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.notifier = ?)"
                    " ORDER BY e.id",
                    (notifier.name,),
                ).fetchall()
                for event_id, kind, severity in rows:
                    status = "pending" if notifier.wants(kind, severity) else "skipped"
                    con.execute(
                        "INSERT INTO deliveries(notifier, event_id, status, next_attempt_at)"
                        " VALUES (?, ?, ?, ?)",
                        (notifier.name, event_id, status, now),
                    )
                    created += status == "pending"
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return created

    def deliver_due(self) -> DeliveryReport:
        """Attempt every pending delivery whose next attempt is due (oldest event first)."""
        self.enqueue()
        con = self.store.connection
        now = self.clock()
        due = con.execute(
            "SELECT d.id, d.notifier, d.attempts, e.alert_id, e.kind FROM deliveries d"
            " JOIN alert_events e ON e.id = d.event_id"
            " WHERE d.status = 'pending' AND d.next_attempt_at <= ? ORDER BY e.id, d.id",
            (int(now * 1_000_000),),
        ).fetchall()
        delivered = failed = retrying = 0
        for delivery_id, name, attempts, alert_id, kind in due:
            notifier = self.notifiers.get(name)
            if notifier is None:
                continue  # notifier removed from the config: keep the row pending
            alert = self.store.get(alert_id)
            body = orjson.dumps(payload(notifier, alert, kind))
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "tripwire-notifier",
                "X-Tripwire-Delivery": f"{name}:{delivery_id}",
                **notifier.headers,
            }
            started = time.perf_counter()
            status: int | None = None
            error: str | None = None
            try:
                status = self.post(notifier, body, headers)
            except OSError as exc:
                error = f"{type(exc).__name__}: {exc}"
            seconds = time.perf_counter() - started
            ok = status is not None and 200 <= status < 300
            attempt = attempts + 1
            at = int(self.clock() * 1_000_000)
            con.execute("BEGIN IMMEDIATE")
            try:
                con.execute(
                    "INSERT INTO delivery_attempts(delivery_id, at, http_status, error, seconds)"
                    " VALUES (?,?,?,?,?)",
                    (delivery_id, at, status, error, seconds),
                )
                if ok:
                    con.execute(
                        "UPDATE deliveries SET status='delivered', attempts=?, delivered_at=? WHERE id=?",
                        (attempt, at, delivery_id),
                    )
                    delivered += 1
                elif attempt >= notifier.max_attempts or (
                    status is not None and 400 <= status < 500 and status != 429
                ):
                    con.execute(
                        "UPDATE deliveries SET status='failed', attempts=? WHERE id=?",
                        (attempt, delivery_id),
                    )
                    failed += 1
                else:
                    wait = int(notifier.backoff(attempt) * 1_000_000)
                    con.execute(
                        "UPDATE deliveries SET attempts=?, next_attempt_at=? WHERE id=?",
                        (attempt, at + wait, delivery_id),
                    )
                    retrying += 1
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return DeliveryReport(delivered, failed, retrying)

    def log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest delivery attempts (newest first)."""
        rows = self.store.connection.execute(
            "SELECT a.at, d.notifier, e.alert_id, e.kind, a.http_status, a.error, d.status, d.attempts"
            " FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id"
            " JOIN alert_events e ON e.id = d.event_id ORDER BY a.id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            {
                "at": datetime.fromtimestamp(at / 1e6, UTC).isoformat(),
                "notifier": notifier,
                "alert_id": alert_id,
                "event": kind,
                "http_status": status,
                "error": error,
                "delivery_status": dstatus,
                "attempts": attempts,
            }
            for at, notifier, alert_id, kind, status, error, dstatus, attempts in rows
        ]
