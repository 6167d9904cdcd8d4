"""A small, edge-case-rich experiment world for per-unit statistics tests (not a test module).

Users are exposed to ``exp`` (via ``$exposure`` or a mapped ``Experiment Viewed`` event),
some to both arms, some twice to the same arm, some never; they send sessions, clicks,
orders (revenue with cents) and turns (latency) before exposure (pre-period), inside the
analysis window and after it. Some users have no session in the window (zero denominators).

Test files import it relatively (``from . import unit_world as uw``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

START = datetime(2026, 3, 1, tzinfo=UTC)
LOCALES = ["en-US", "en-GB", "de-DE", "ja-JP"]
DEVICES = ["Echo Dot", "Echo Show", "web"]
MAPPING = [{"event": "Experiment Viewed", "experiment": "experiment_id", "variant": "variation_id"}]


@dataclass
class World:
    envelopes: list[dict[str, Any]]
    days: int


def _envelope(
    i: int, user: str, event: str, ts: datetime, props: dict[str, Any], user_ctx: dict[str, Any]
) -> dict[str, Any]:
    return {
        "messageId": f"m{i}",
        "type": "track",
        "event": event,
        "userId": user,
        "timestamp": ts.isoformat(),
        "receivedAt": (ts + timedelta(seconds=2)).isoformat(),
        "properties": props,
        "context": {
            "locale": user_ctx["locale"],
            "device": {"model": user_ctx["device"]},
            "traits": {"tenure": user_ctx["tenure"]},
        },
    }


def build(seed: int = 3, users: int = 160, days: int = 12) -> World:
    """Envelopes of the world (deterministic from ``seed``)."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    counter = 0

    def emit(
        user: str, event: str, ts: datetime, props: dict[str, Any], ctx: dict[str, Any]
    ) -> None:
        nonlocal counter
        out.append(_envelope(counter, user, event, ts, props, ctx))
        counter += 1

    for u in range(users):
        user = f"u{u:03d}"
        ctx = {
            "locale": rng.choice(LOCALES),
            "device": rng.choice(DEVICES),
            "tenure": rng.choice(["new", "loyal"]),
        }
        roll = rng.random()
        if roll < 0.85:  # exposed (else never exposed)
            arm = rng.choice(["control", "treatment"])
            t0 = START + timedelta(days=3 + rng.random() * 3, seconds=rng.randrange(60))
            mapped = rng.random() < 0.25
            if mapped:
                emit(user, "Experiment Viewed", t0,
                     {"experiment_id": "exp", "variation_id": arm}, ctx)  # fmt: skip
            else:
                emit(user, "$exposure", t0, {"experiment": "exp", "variant": arm}, ctx)
            extra = rng.random()
            if extra < 0.08:  # later exposure to the other arm: excluded
                other = "treatment" if arm == "control" else "control"
                later = t0 + timedelta(hours=rng.randrange(1, 30))
                emit(user, "$exposure", later, {"experiment": "exp", "variant": other}, ctx)
            elif extra < 0.2:  # repeated exposure, same arm, different context later
                later = t0 + timedelta(hours=rng.randrange(1, 30))
                moved = {**ctx, "locale": "fr-FR"}
                emit(user, "$exposure", later, {"experiment": "exp", "variant": arm}, moved)
            if rng.random() < 0.05:  # exposure to another experiment: irrelevant
                emit(user, "$exposure", t0, {"experiment": "other", "variant": "control"}, ctx)
        lift = 1.3 if roll < 0.85 and arm == "treatment" else 1.0
        for _ in range(rng.randrange(0, 9)):
            ts = START + timedelta(days=rng.random() * days)
            session = f"s{counter}"
            emit(user, "Session Started", ts, {"session_id": session}, ctx)
            for k in range(rng.randrange(0, 4)):
                emit(user, "Recommendation Clicked", ts + timedelta(minutes=k + 1),
                     {"session_id": session, "slot": k}, ctx)  # fmt: skip
            if rng.random() < 0.3 * lift:
                revenue = round(rng.uniform(5, 120), 2)
                emit(user, "Order Completed", ts + timedelta(minutes=9),
                     {"session_id": session, "revenue": revenue}, ctx)  # fmt: skip
            for t in range(rng.randrange(0, 3)):
                props: dict[str, Any] = {"session_id": session, "turn_index": t}
                if rng.random() < 0.8:
                    props["latency_ms"] = round(rng.lognormvariate(6, 0.5), 3)
                emit(user, "Turn Completed", ts + timedelta(minutes=2 * t + 1), props, ctx)
    return World(out, days)
