"""Small hand-built lakes for metric tests, with the events kept as plain dicts.

The reference computations in the tests read :class:`Row` objects built here directly
from the envelopes (never from the lake), so they are independent of the lake writer,
the engine and the compiler.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tripwire.store.lake import write_events

T0 = datetime(2026, 11, 2, tzinfo=UTC)
LOCALES = ("en-US", "en-GB", "de-DE", "ja-JP")
DEVICES = ("Echo Dot", "Echo Show", "web")
INTENTS = ("product_search", "returns", "order_status", "smalltalk")


@dataclass
class Row:
    """One event as the reference computations see it."""

    event: str
    user: str | None
    session: str | None
    ts: datetime
    received: datetime
    locale: str | None
    device: str | None
    source: str
    props: dict[str, Any] = field(default_factory=dict)


def envelope(row: Row) -> dict[str, Any]:
    """The Segment-style envelope the lake writer takes."""
    props = dict(row.props)
    if row.session is not None:
        props["session_id"] = row.session
    context: dict[str, Any] = {}
    if row.locale:
        context["locale"] = row.locale
    if row.device:
        context["device"] = {"model": row.device}
    return {
        "messageId": uuid.uuid4().hex,
        "type": "track",
        "event": row.event,
        "userId": row.user,
        "timestamp": row.ts.isoformat(),
        "receivedAt": row.received.isoformat(),
        "properties": props,
        "context": context,
        "source": row.source,
    }


def write(lake: Path, rows: list[Row]) -> None:
    write_events(lake, [envelope(r) for r in rows])


def random_rows(seed: int, *, users: int = 40, days: int = 3) -> list[Row]:
    """Chat sessions with turns (some rated, resolved, escalated), latency and orders.

    Includes late events (received hours after they happened), events without a locale,
    and users with sessions on several days.
    """
    rng = random.Random(seed)
    rows: list[Row] = []
    for u in range(users):
        user = f"u{u:03d}"
        locale = rng.choice(LOCALES)
        device = rng.choice(DEVICES)
        for s in range(rng.randint(0, 4)):
            session = f"{user}-s{s}"
            start = T0 + timedelta(minutes=rng.randrange(days * 24 * 60))
            late = timedelta(hours=rng.choice([0, 0, 0, 0, 2, 30]))
            loc = locale if rng.random() > 0.05 else None
            rows.append(
                Row("Session Started", user, session, start, start + late, loc, device, "app")
            )
            moment = start
            for turn in range(rng.randint(0, 5)):
                moment += timedelta(seconds=rng.randint(5, 300))
                props: dict[str, Any] = {
                    "intent": rng.choice(INTENTS),
                    "latency_ms": float(rng.randint(50, 5000)),
                    "resolved": rng.random() < 0.7,
                    "escalated": rng.random() < 0.1,
                    "turn_index": turn,
                }
                if rng.random() < 0.4:
                    props["thumbs"] = rng.choice(["up", "up", "down"])
                rows.append(
                    Row(
                        "Turn Completed",
                        user,
                        session,
                        moment,
                        moment + late,
                        loc,
                        device,
                        "app",
                        props,
                    )
                )
            if rng.random() < 0.3:
                moment += timedelta(seconds=rng.randint(5, 600))
                revenue = round(rng.uniform(5, 200), 2)
                rows.append(
                    Row(
                        "Order Completed",
                        user,
                        session,
                        moment,
                        moment + late,
                        loc,
                        device,
                        "app",
                        {"revenue": revenue, "order_id": f"o-{session}"},
                    )
                )
                rows.append(
                    Row(
                        "Ledger Order Recorded",
                        None,
                        None,
                        moment,
                        moment,
                        None,
                        None,
                        "order-ledger",
                        {"revenue": revenue, "order_id": f"o-{session}"},
                    )
                )
    rows.sort(key=lambda r: r.ts)
    return rows
