"""The three planted incidents and the change log around them.

Each incident has a cause (a ``$change`` from ``deploy-bot`` one minute before onset) and a
rollback (at the end, after which the metric recovers). Incidents land on different days,
never in the first three days (monitors need a baseline) and leave incident-free days; the
hour of onset is in the affected segment's busy hours with a seeded jitter.

The change log also carries routine, harmless changes every day, including one decoy shortly
before each incident with a plausible but wrong scope: root-cause analysis must not blame them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from tripwire.sim.experiments import ExperimentDesign

PAYMENTS, TELEMETRY, RETRIEVAL = "payments-deploy", "telemetry-outage", "retrieval-shard"

#: Effect sizes (probabilities) used by the funnel and the turns.
#: The payments deploy breaks card tokenization: most tokenized-card authorisations fail.
PAYMENT_OK_DURING = 0.10
PAYMENT_SEGMENT = {"payment_method": "tokenized-card"}
TELEMETRY_DROP_RATE = 0.90
TELEMETRY_DROPPED_STEPS = ("shipping", "confirmation", "order")
SHARD_RESOLVED_DURING = 0.10
SHARD_ESCALATED_DURING = 0.30
SHARD_FALLBACK_DURING = 0.45
SHARD_LATENCY_FACTOR = 4.0
BROKEN_SHARD = "retrieval-shard-3"


@dataclass(frozen=True)
class Change:
    """One ``$change`` event from ``deploy-bot``."""

    at: datetime
    kind: str
    service: str
    version: str
    scope: dict[str, Any]
    author: str
    description: str
    rollback_of: str | None = None
    incident: str | None = None
    role: str = "routine"  # routine | cause | rollback | experiment | decoy

    def properties(self) -> dict[str, Any]:
        props: dict[str, Any] = {
            "kind": self.kind,
            "service": self.service,
            "version": self.version,
            "scope": self.scope,
            "author": self.author,
            "description": self.description,
        }
        if self.rollback_of is not None:
            props["rollback_of"] = self.rollback_of
        return props


@dataclass(frozen=True)
class Incident:
    """One planted incident: where, when, how much, and which change caused it."""

    id: str
    title: str
    start: datetime
    end: datetime
    metric: str
    affected_metrics: tuple[str, ...]
    segments: tuple[dict[str, str], ...]
    funnel_step: str | None
    category: str
    cause: Change
    rollback: Change
    effect: dict[str, float] = field(default_factory=dict)

    def active(self, ms: np.ndarray) -> np.ndarray:
        """Which epoch-millisecond times fall inside ``[start, end)``."""
        lo, hi = _ms(self.start), _ms(self.end)
        return (ms >= lo) & (ms < hi)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def incident_days(days: int) -> tuple[int, int, int]:
    """Day offsets of the three incidents: spread out, after day 3 when there is room."""
    if days >= 7:
        first = 3
        picks = [round(days * f) for f in (0.36, 0.57, 0.79)]
        return tuple(min(max(p, first), days - 1) for p in picks)  # type: ignore[return-value]
    last = days - 1
    return (max(0, last - 2) if days > 2 else last, max(0, last - 1), last)


def plan_incidents(
    rng: np.random.Generator, start: datetime, end: datetime, days: tuple[int, int, int]
) -> list[Incident]:
    """The incidents that fit inside ``[start, end)`` (all three in a normal range)."""
    day0 = start.replace(hour=0, minute=0, second=0, microsecond=0)
    jitter = rng.integers(0, 46, size=3).tolist()
    payments_at = day0 + timedelta(days=days[0], hours=18, minutes=jitter[0])
    telemetry_at = day0 + timedelta(days=days[1], hours=20, minutes=jitter[1])
    retrieval_at = day0 + timedelta(days=days[2], hours=18, minutes=jitter[2])
    minute = timedelta(minutes=1)
    planned = [
        Incident(
            id=PAYMENTS,
            title="payments-token 2.3.1 breaks card tokenization: tokenized-card payments fail",
            start=payments_at,
            end=payments_at + timedelta(minutes=150),
            metric="voice_checkout_conversion",
            affected_metrics=(
                "voice_checkout_conversion",
                "voice_checkout_funnel",
                "payment_success_rate",
                "orders",
                "checkout_error_rate",
            ),
            segments=(dict(PAYMENT_SEGMENT),),
            funnel_step="payment",
            category="code deploy",
            cause=Change(
                payments_at - minute,
                "deploy",
                "payments-token",
                "2.3.1",
                dict(PAYMENT_SEGMENT),
                "ci-payments",
                "payments-token 2.3.1: new tokenization client",
                incident=PAYMENTS,
                role="cause",
            ),
            rollback=Change(
                payments_at + timedelta(minutes=150) - minute,
                "deploy",
                "payments-token",
                "2.3.0",
                dict(PAYMENT_SEGMENT),
                "oncall-payments",
                "roll back payments-token to 2.3.0",
                rollback_of="2.3.1",
                incident=PAYMENTS,
                role="rollback",
            ),
            effect={
                "payment_step_conversion_before": 0.97,
                "payment_step_conversion_during": PAYMENT_OK_DURING,
            },
        ),
        Incident(
            id=TELEMETRY,
            title="telemetry-sdk batching-v2 flush policy drops checkout events from every client",
            start=telemetry_at,
            end=telemetry_at + timedelta(minutes=180),
            metric="orders",
            affected_metrics=(
                "orders",
                "telemetry_ledger_order_ratio",
                "voice_checkout_conversion",
                "revenue",
            ),
            segments=(),  # every client: a global loss, not a localized one
            funnel_step=None,
            category="measurement issue",
            cause=Change(
                telemetry_at - minute,
                "config",
                "telemetry-sdk",
                "batching-v2",
                {},
                "ci-mobile",
                "telemetry-sdk: switch every client to the batching-v2 flush policy",
                incident=TELEMETRY,
                role="cause",
            ),
            rollback=Change(
                telemetry_at + timedelta(minutes=180) - minute,
                "config",
                "telemetry-sdk",
                "batching-v1",
                {},
                "oncall-mobile",
                "revert telemetry-sdk flush policy to batching-v1",
                rollback_of="batching-v2",
                incident=TELEMETRY,
                role="rollback",
            ),
            effect={"telemetry_drop_rate": TELEMETRY_DROP_RATE, "ledger_orders_change": 0.0},
        ),
        Incident(
            id=RETRIEVAL,
            title="retrieval index on retrieval-shard-3 collapses for product search",
            start=retrieval_at,
            end=retrieval_at + timedelta(minutes=120),
            metric="resolution_rate",
            affected_metrics=(
                "resolution_rate",
                "escalation_rate",
                "fallback_rate",
                "turn_latency_p95",
                "stage_latency_p95",
                "thumbs_down_rate",
            ),
            segments=({"intent": "product_search", "service": BROKEN_SHARD},),
            funnel_step=None,
            category="model version",
            cause=Change(
                retrieval_at - minute,
                "model",
                "retrieval",
                "index-2026.11.b",
                {"service": BROKEN_SHARD, "intent": "product_search"},
                "ml-search",
                "retrieval: roll out embedding index 2026.11.b",
                incident=RETRIEVAL,
                role="cause",
            ),
            rollback=Change(
                retrieval_at + timedelta(minutes=120) - minute,
                "model",
                "retrieval",
                "index-2026.11.a",
                {"service": BROKEN_SHARD, "intent": "product_search"},
                "oncall-search",
                "roll back retrieval index to 2026.11.a",
                rollback_of="index-2026.11.b",
                incident=RETRIEVAL,
                role="rollback",
            ),
            effect={
                "resolved_during": SHARD_RESOLVED_DURING,
                "escalated_during": SHARD_ESCALATED_DURING,
                "retrieval_latency_factor": SHARD_LATENCY_FACTOR,
            },
        ),
    ]
    return [i for i in planned if start <= i.cause.at and i.end <= end]


#: (kind, service, scopes to pick from, description) of routine harmless changes.
_ROUTINE: tuple[tuple[str, str, tuple[dict[str, Any], ...], str], ...] = (
    ("deploy", "search-ui", ({}, {"device": "web"}), "search-ui release"),
    ("deploy", "recommendations-api", ({},), "recommendations-api release"),
    ("deploy", "catalog-service", ({}, {"locale": "de-DE"}), "catalog-service release"),
    ("deploy", "notifications", ({},), "notifications release"),
    ("flag", "dark_mode", ({"device": "mobile app"},), "dark mode flag ramp"),
    ("config", "cdn-cache-ttl", ({},), "CDN cache TTL tweak"),
    (
        "ui",
        "order-history-page",
        ({"device": "web"}, {"device": "mobile app"}),
        "order history layout",
    ),
    ("prompt", "smalltalk-prompt", ({"locale": "en-US"},), "smalltalk greeting wording"),
    ("deploy", "voice-ux", ({"device": "Echo Dot"}, {"device": "Fire TV"}), "voice-ux release"),
)


def _decoy(incident: Incident, rng: np.random.Generator) -> Change:
    before = timedelta(minutes=int(rng.integers(20, 46)))
    at = incident.start - before
    if incident.id == PAYMENTS:
        return Change(
            at,
            "deploy",
            "payments-gateway",
            "4.1.0",
            {"payment_method": "pay-later"},
            "ci-payments",
            "payments-gateway 4.1.0: pay-later instalment options",
            role="decoy",
        )
    if incident.id == TELEMETRY:
        return Change(
            at,
            "deploy",
            "mobile-app-backend",
            "3.8.4",
            {},
            "ci-mobile",
            "mobile-app-backend 3.8.4: connection pool tuning",
            role="decoy",
        )
    return Change(
        at,
        "flag",
        "search_autocomplete",
        "on",
        {"locale": "de-DE"},
        "pm-search",
        "enable search autocomplete in de-DE",
        role="decoy",
    )


def plan_changes(
    rng: np.random.Generator,
    start: datetime,
    end: datetime,
    incidents: list[Incident],
    experiments: tuple[ExperimentDesign, ...],
) -> list[Change]:
    """The whole change log of the range, sorted by time."""
    changes: list[Change] = []
    day0 = start.replace(hour=0, minute=0, second=0, microsecond=0)
    day = day0
    version = 100
    while day < end:
        for _ in range(int(rng.integers(4, 9))):
            kind, service, scopes, text = _ROUTINE[int(rng.integers(len(_ROUTINE)))]
            scope = scopes[int(rng.integers(len(scopes)))]
            at = day + timedelta(minutes=int(rng.integers(8 * 60, 22 * 60)))
            version += 1
            changes.append(
                Change(
                    at,
                    kind,
                    service,
                    f"1.{version // 10}.{version % 10}",
                    dict(scope),
                    "ci-bot",
                    text,
                )
            )
        day += timedelta(days=1)
    for incident in incidents:
        changes.extend([_decoy(incident, rng), incident.cause, incident.rollback])
    for design in experiments:
        changes.append(
            Change(
                design.start - timedelta(minutes=5),
                "flag",
                design.name,
                "50/50",
                {},
                "experiments-bot",
                f"start experiment {design.name} (control 50 / treatment 50)",
                role="experiment",
            )
        )
    return sorted((c for c in changes if start <= c.at < end), key=lambda c: (c.at, c.service))
