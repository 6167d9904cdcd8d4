"""The voice/chat checkout funnel: ten stages with conditional success and lognormal latency.

A shopping session runs the stages in order. At each stage the outcome is ``ok`` (the step
event and a ``$latency`` with outcome ok), ``error`` or ``timeout`` (``Checkout Error`` and a
``$latency`` with that outcome; the session stops) or ``abandon`` (the user walks away; no
event, the session stops). Success probabilities are conditional on reaching the stage, so
``P(step k ok | step k−1 ok)`` is exactly what a funnel metric measures.

Incidents act here: the payments deploy lowers P(payment ok) in its segment, and the
telemetry outage drops the tail events of the funnel from the app (not from the ledger).
Every real order is also recorded by the order ledger (source ``order-ledger``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tripwire.sim import incidents as inc
from tripwire.sim.catalog import Catalog
from tripwire.sim.messages import LEDGER, Block
from tripwire.sim.population import DEVICES, LOCALES, PAYMENT_METHODS, Population
from tripwire.sim.sessions import Sessions

STAGES = (
    "utterance",
    "asr",
    "nlu",
    "catalog",
    "cart",
    "auth",
    "payment",
    "shipping",
    "confirmation",
    "order",
)
STEP_EVENTS = (
    "Voice Utterance",
    "ASR Completed",
    "NLU Completed",
    "Catalog Matched",
    "Cart Updated",
    "Auth Completed",
    "Payment Authorized",
    "Shipping Selected",
    "Order Confirmed",
    "Order Completed",
)
P_OK = np.array([0.995, 0.965, 0.95, 0.90, 0.82, 0.96, 0.97, 0.975, 0.985, 0.995])
P_ERROR = np.array([0.005, 0.03, 0.03, 0.05, 0.02, 0.03, 0.02, 0.005, 0.005, 0.005])
ERROR_CODES = (
    "NO_SPEECH",
    "ASR_NO_MATCH",
    "NLU_LOW_CONFIDENCE",
    "CATALOG_NO_MATCH",
    "ITEM_UNAVAILABLE",
    "AUTH_FAILED",
    "PAYMENT_DECLINED",
    "NO_SHIPPING_OPTION",
    "CONFIRMATION_FAILED",
    "ORDER_WRITE_FAILED",
)
TOKENIZATION_ERROR = "TOKENIZATION_FAILED"
MEDIAN_MS = np.array([1200.0, 250.0, 70.0, 180.0, 120.0, 300.0, 650.0, 140.0, 90.0, 220.0])
SIGMA = np.array([0.3, 0.4, 0.4, 0.45, 0.35, 0.4, 0.45, 0.35, 0.35, 0.4])
TIMEOUT_MS = np.array([8000, 3000, 2000, 3000, 3000, 4000, 5000, 3000, 3000, 5000])
#: Median user/system gap before each stage, ms (user decisions before cart, shipping, confirm).
GAP_MS = np.array([1500.0, 20.0, 10.0, 10.0, 4000.0, 50.0, 20.0, 3000.0, 2500.0, 20.0])
NLU_INTENTS = ("purchase", "reorder")
SHIPPING_SPEEDS = ("standard", "two_day", "same_day")
PAYMENT_VERSION, PAYMENT_VERSION_BAD = "2.3.0", "2.3.1"
LEDGER_LAG_MEDIAN_MS = 1500.0


@dataclass(frozen=True)
class FunnelResult:
    blocks: list[Block]
    end_ms: np.ndarray  # per session: time of its last funnel event (or its begin time)


def simulate_funnel(
    rng: np.random.Generator,
    sessions: Sessions,
    begin_ms: np.ndarray,
    population: Population,
    catalog: Catalog,
    incidents: list[inc.Incident],
    order_prefix: str,
) -> FunnelResult:
    """Run the shopping sessions through the funnel, starting each at ``begin_ms``."""
    rows = np.flatnonzero(sessions.shopping)
    n = rows.size
    end_ms = begin_ms.copy()
    if n == 0:
        return FunnelResult([], end_ms)
    k = len(STAGES)
    user = sessions.user[rows]
    locale = population.locale[user]
    device = population.device[user]

    latency = np.maximum(
        np.rint(np.exp(rng.normal(np.log(MEDIAN_MS), SIGMA, size=(n, k)))), 1
    ).astype(np.int64)
    gap = np.maximum(np.rint(np.exp(rng.normal(np.log(GAP_MS), 0.5, size=(n, k)))), 1).astype(
        np.int64
    )
    done = begin_ms[rows][:, None] + np.cumsum(gap + latency, axis=1)

    p_ok = np.broadcast_to(P_OK, (n, k)).copy()
    p_err = np.broadcast_to(P_ERROR, (n, k)).copy()
    jp = locale == LOCALES.index("ja-JP")
    p_ok[jp, 1] -= 0.03
    p_err[jp, 1] += 0.03
    show = device == DEVICES.index("Echo Show")
    p_ok[show, 3] += 0.03
    prime = population.prime[user]
    p_ok[prime, 4] += 0.04
    error_code = np.broadcast_to(np.array(ERROR_CODES, dtype=object), (n, k)).copy()
    payment_version = np.full(n, PAYMENT_VERSION, dtype=object)
    hidden_tail = np.zeros(n, dtype=bool)
    pay = STAGES.index("payment")
    for incident in incidents:
        if incident.id == inc.PAYMENTS:
            segment = population.payment[user] == PAYMENT_METHODS.index(
                inc.PAYMENT_SEGMENT["payment_method"]
            )
            hit = segment & incident.active(done[:, pay])
            p_ok[hit, pay] = inc.PAYMENT_OK_DURING
            p_err[hit, pay] = 1.0 - inc.PAYMENT_OK_DURING - 0.01
            error_code[hit, pay] = TOKENIZATION_ERROR
            payment_version[hit] = PAYMENT_VERSION_BAD
        elif incident.id == inc.TELEMETRY:  # every client's telemetry loses the tail
            tail = STAGES.index(inc.TELEMETRY_DROPPED_STEPS[0])
            hidden_tail |= incident.active(done[:, tail]) & (
                rng.random(n) < inc.TELEMETRY_DROP_RATE
            )

    u = rng.random((n, k))
    timed_out = latency > TIMEOUT_MS
    ok = (u < p_ok) & ~timed_out
    error = ~ok & ((u < p_ok + p_err) | timed_out)
    failed = ~ok
    stop = np.where(failed.any(axis=1), failed.argmax(axis=1), k)  # first non-ok stage
    reached = np.arange(k)[None, :] < stop[:, None]
    at_stop = np.arange(k)[None, :] == stop[:, None]
    errored = at_stop & error
    hidden = hidden_tail[:, None] & (
        np.arange(k)[None, :] >= STAGES.index(inc.TELEMETRY_DROPPED_STEPS[0])
    )

    sid = np.array(sessions.ids, dtype=object)[rows]
    channel = np.where(sessions.voice[rows], "voice", "chat").astype(object)
    product = catalog.draw(rng, n)
    quantity = 1 + (rng.random(n) < 0.15) + (rng.random(n) < 0.05)
    price = catalog.price[product]
    revenue = np.round(price * quantity, 2)
    payment_method = np.array(PAYMENT_METHODS, dtype=object)[population.payment[user]]
    fast = np.where(prime, 0.6, 0.2)
    speed = np.where(rng.random(n) < fast, np.where(rng.random(n) < 0.3, 2, 1), 0)
    order_ids = np.array([f"{order_prefix}{i:06x}" for i in range(n)], dtype=object)
    extra = {
        0: {"channel": channel},
        2: {"intent": np.array(NLU_INTENTS, dtype=object)[(rng.random(n) < 0.3).astype(int)]},
        3: {"product_id": catalog.product_ids[product], "category": catalog.category[product]},
        4: {"product_id": catalog.product_ids[product], "price": price},
        6: {"payment_method": payment_method, "payment_service_version": payment_version},
        7: {"shipping_speed": np.array(SHIPPING_SPEEDS, dtype=object)[speed]},
        9: {
            "order_id": order_ids,
            "revenue": revenue,
            "currency": "USD",
            "payment_method": payment_method,
        },
    }

    blocks: list[Block] = []
    for j, (stage, event) in enumerate(zip(STAGES, STEP_EVENTS, strict=True)):
        show_ok = reached[:, j] & ~hidden[:, j]
        props = {"session_id": sid[show_ok], "latency_ms": latency[show_ok, j]}
        props.update(
            {
                key: (v[show_ok] if isinstance(v, np.ndarray) else v)
                for key, v in extra.get(j, {}).items()
            }
        )
        blocks.append(Block(event, done[show_ok, j], user[show_ok], props, rank=1))
        blocks.append(
            Block(
                "$latency",
                done[show_ok, j],
                user[show_ok],
                {
                    "pipeline": "voice_checkout",
                    "stage": stage,
                    "ms": latency[show_ok, j],
                    "outcome": "ok",
                    "session_id": sid[show_ok],
                },
                rank=2,
            )
        )
        show_err = errored[:, j] & ~hidden[:, j]
        outcome = np.where(timed_out[show_err, j], "timeout", "error")
        code = np.where(timed_out[show_err, j], "TIMEOUT", error_code[show_err, j])
        blocks.append(
            Block(
                "Checkout Error",
                done[show_err, j],
                user[show_err],
                {
                    "session_id": sid[show_err],
                    "stage": stage,
                    "error_code": code,
                    "latency_ms": latency[show_err, j],
                },
                rank=1,
            )
        )
        blocks.append(
            Block(
                "$latency",
                done[show_err, j],
                user[show_err],
                {
                    "pipeline": "voice_checkout",
                    "stage": stage,
                    "ms": latency[show_err, j],
                    "outcome": outcome,
                    "session_id": sid[show_err],
                },
                rank=2,
            )
        )

    ordered = stop == k
    lag = np.maximum(np.rint(np.exp(rng.normal(np.log(LEDGER_LAG_MEDIAN_MS), 0.6, n))), 1).astype(
        np.int64
    )
    blocks.append(
        Block(
            "Ledger Order Recorded",
            done[ordered, k - 1] + lag[ordered],
            user[ordered],
            {
                "order_id": order_ids[ordered],
                "revenue": revenue[ordered],
                "currency": "USD",
                "session_id": sid[ordered],
                "payment_method": payment_method[ordered],
            },
            rank=3,
            source=LEDGER,
        )
    )
    last_index = np.where(ordered, k - 1, np.where(errored.any(axis=1), stop, stop - 1))
    last = np.where(
        last_index >= 0, done[np.arange(n), np.clip(last_index, 0, k - 1)], begin_ms[rows]
    )
    end_ms[rows] = np.maximum(begin_ms[rows], last)
    return FunnelResult(blocks, end_ms)
