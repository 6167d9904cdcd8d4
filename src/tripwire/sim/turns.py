"""Chatbot turns: intents, latency per stage, resolution, escalation, fallback, cache hits,
thumbs, recommendations shown and clicked, and add-to-cart.

Per turn: ``Turn Completed`` plus one ``$latency`` (pipeline ``turn``) per stage; voice turns
run asr → nlu → retrieval → generation → tts, chat turns skip asr and tts. Product-search and
recommendation turns show three recommendation slots; a user may click one and add a product
to the cart. ``ranker_v2`` multiplies the click and add probabilities, ``prompt_v3`` the
thumbs-down probability (see :mod:`tripwire.sim.experiments`); the retrieval-shard incident
degrades product-search turns served by the broken shard.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tripwire.sim import incidents as inc
from tripwire.sim.catalog import Catalog
from tripwire.sim.experiments import PROMPT_THUMBS_DOWN_EFFECT, RANKER_EFFECT_BY_LOCALE
from tripwire.sim.messages import Block
from tripwire.sim.population import LOCALES, Population
from tripwire.sim.sessions import Sessions

INTENTS = (
    "product_search",
    "order_status",
    "returns",
    "recommendations",
    "payments_help",
    "smalltalk",
    "other",
)
INTENT_MIX = np.array([0.30, 0.15, 0.07, 0.18, 0.06, 0.14, 0.10])
INTENT_MIX_SHOPPING = np.array([0.50, 0.05, 0.03, 0.25, 0.05, 0.07, 0.05])
RESOLVED_RATE = np.array([0.82, 0.90, 0.75, 0.85, 0.70, 0.95, 0.60])
SHARDS = tuple(f"retrieval-shard-{i}" for i in range(1, 5))
CACHE_HIT_RATE = 0.62
FALLBACK_RATE = 0.05
ESCALATE_IF_UNRESOLVED = 0.15
ESCALATE_IF_RESOLVED = 0.01
RATED_RATE = 0.25
THUMBS_DOWN_IF_RESOLVED = 0.07
THUMBS_DOWN_IF_UNRESOLVED = 0.35
TURN_STAGES = ("asr", "nlu", "retrieval", "generation", "tts")
#: Lognormal stage latency: median ms and log-sd.
STAGE_MEDIAN_MS = np.array([180.0, 60.0, 220.0, 650.0, 140.0])
STAGE_SIGMA = np.array([0.35, 0.4, 0.5, 0.45, 0.3])
CACHE_SPEEDUP = np.array([1.0, 1.0, 0.5, 0.25, 1.0])
SLOTS = 3
ADD_RATE = 0.10
ADD_FROM_RECOMMENDATION = 0.6
EXTRA_CLICK_RATE = 0.08
#: Seconds of user think time before a turn (lognormal median, log-sd).
THINK_MEDIAN_S, THINK_SIGMA = 5.0, 0.6


@dataclass(frozen=True)
class TurnsResult:
    blocks: list[Block]
    end_ms: np.ndarray  # per session: time of its last chat event


def simulate_turns(
    rng: np.random.Generator,
    sessions: Sessions,
    population: Population,
    catalog: Catalog,
    incidents: list[inc.Incident],
    latency_sampling: float = 1.0,
) -> TurnsResult:
    """Draw every turn of the day's sessions and the recommendation events around them.

    ``latency_sampling`` is the share of turns whose per-stage ``$latency`` events are sent
    (tracing-style sampling; ``Turn Completed.latency_ms`` is always there). The sampling
    draw is made whatever the share, so every other event is the same at any share.
    """
    s = sessions
    total = int(s.turns.sum())
    sess = np.repeat(np.arange(s.size), s.turns)
    first = np.cumsum(s.turns) - s.turns  # index of each session's first turn (empty-safe)
    turn_index = np.arange(total) - np.repeat(first, s.turns)
    user = s.user[sess]
    voice = s.voice[sess]

    mix = np.where(s.shopping[sess][:, None], INTENT_MIX_SHOPPING, INTENT_MIX)
    intent = (
        (rng.random(total)[:, None] > np.cumsum(mix, axis=1)).sum(axis=1).clip(0, len(INTENTS) - 1)
    )
    shard = rng.integers(0, len(SHARDS), total)
    cache_hit = rng.random(total) < CACHE_HIT_RATE

    stage_ms = np.exp(
        rng.normal(np.log(STAGE_MEDIAN_MS), STAGE_SIGMA, size=(total, len(TURN_STAGES)))
    )
    stage_ms = np.where(cache_hit[:, None], stage_ms * CACHE_SPEEDUP, stage_ms)
    stage_ms[~voice, 0] = 0.0
    stage_ms[~voice, 4] = 0.0

    think = np.exp(rng.normal(np.log(THINK_MEDIAN_S * 1000), THINK_SIGMA, total))
    think[turn_index == 0] *= 0.3

    resolved_p = RESOLVED_RATE[intent] - 0.05 * (population.locale[user] == LOCALES.index("ja-JP"))
    escalated_unresolved = np.full(total, ESCALATE_IF_UNRESOLVED)
    fallback_p = np.full(total, FALLBACK_RATE)

    # Tentative times (stage latencies change only on the broken shard, by a bounded factor).
    tentative_end = s.start_ms[sess] + _cumsum_by_session(think + stage_ms.sum(axis=1), s.turns)
    for incident in incidents:
        if incident.id != inc.RETRIEVAL:
            continue
        hit = (
            incident.active(tentative_end)
            & (intent == INTENTS.index("product_search"))
            & (shard == SHARDS.index(inc.BROKEN_SHARD))
        )
        stage_ms[hit, 2] *= inc.SHARD_LATENCY_FACTOR
        resolved_p = np.where(hit, inc.SHARD_RESOLVED_DURING, resolved_p)
        escalated_unresolved = np.where(
            hit, inc.SHARD_ESCALATED_DURING / (1 - inc.SHARD_RESOLVED_DURING), escalated_unresolved
        )
        fallback_p = np.where(hit, inc.SHARD_FALLBACK_DURING, fallback_p)

    stage_ms = np.maximum(np.rint(stage_ms), 0).astype(np.int64)
    stage_ms[voice, 0] = np.maximum(stage_ms[voice, 0], 1)
    stage_ms[voice, 4] = np.maximum(stage_ms[voice, 4], 1)
    stage_ms[:, 1:4] = np.maximum(stage_ms[:, 1:4], 1)
    latency = stage_ms.sum(axis=1)
    turn_start = s.start_ms[sess] + np.rint(
        _cumsum_by_session(think + latency, s.turns) - latency
    ).astype(np.int64)
    turn_end = turn_start + latency

    resolved = rng.random(total) < resolved_p
    escalated = rng.random(total) < np.where(resolved, ESCALATE_IF_RESOLVED, escalated_unresolved)
    fallback = rng.random(total) < fallback_p
    rated = rng.random(total) < RATED_RATE
    down_p = np.where(resolved, THUMBS_DOWN_IF_RESOLVED, THUMBS_DOWN_IF_UNRESOLVED)
    down_p = np.where(s.prompt_treated[sess], down_p * (1 + PROMPT_THUMBS_DOWN_EFFECT), down_p)
    thumbs_down = rng.random(total) < down_p
    traced = rng.random(total) < latency_sampling

    session_ids = np.array(s.ids, dtype=object)
    sid = session_ids[sess]
    intent_name = np.array(INTENTS, dtype=object)[intent]
    shard_name = np.array(SHARDS, dtype=object)[shard]
    turn_props = {
        "session_id": sid,
        "turn_index": turn_index,
        "intent": intent_name,
        "resolved": resolved,
        "escalated": escalated,
        "fallback": fallback,
        "cache_hit": cache_hit,
        "latency_ms": latency,
        "service": shard_name,
    }
    blocks = [
        Block(
            "Turn Completed",
            turn_end[~rated],
            user[~rated],
            {k: v[~rated] for k, v in turn_props.items()},
            rank=3,
        ),
        Block(
            "Turn Completed",
            turn_end[rated],
            user[rated],
            {
                **{k: v[rated] for k, v in turn_props.items()},
                "thumbs": np.where(thumbs_down[rated], "down", "up"),
            },
            rank=3,
        ),
    ]
    stage_end = turn_start[:, None] + np.cumsum(stage_ms, axis=1)
    for j, stage in enumerate(TURN_STAGES):
        rows = traced & voice if stage in ("asr", "tts") else traced
        blocks.append(
            Block(
                "$latency",
                stage_end[rows, j],
                user[rows],
                {
                    "pipeline": "turn",
                    "stage": stage,
                    "ms": stage_ms[rows, j],
                    "outcome": "ok",
                    "session_id": sid[rows],
                    "service": shard_name[rows] if stage == "retrieval" else "assistant-" + stage,
                },
                rank=2,
            )
        )

    rec_blocks, rec_end = _recommendations(
        rng, s, sess, intent, turn_end, user, sid, population, catalog
    )
    blocks.extend(rec_blocks)
    end_ms = np.full(s.size, 0, dtype=np.int64)
    np.maximum.at(end_ms, sess, np.maximum(turn_end, rec_end))
    return TurnsResult(blocks=blocks, end_ms=end_ms)


def _cumsum_by_session(values: np.ndarray, turns: np.ndarray) -> np.ndarray:
    """Running sum of ``values`` restarting at each session's first turn."""
    total = np.cumsum(values)
    first = np.cumsum(turns) - turns  # each session's first turn
    busy = turns > 0  # a session without turns has no first turn (and a day may have none)
    before = np.concatenate([[0.0], total])[first[busy]]  # Σ of the turns before it
    return total - np.repeat(before, turns[busy])


def _recommendations(
    rng: np.random.Generator,
    s: Sessions,
    sess: np.ndarray,
    intent: np.ndarray,
    turn_end: np.ndarray,
    user: np.ndarray,
    sid: np.ndarray,
    population: Population,
    catalog: Catalog,
) -> tuple[list[Block], np.ndarray]:
    eligible = np.flatnonzero(
        (intent == INTENTS.index("product_search")) | (intent == INTENTS.index("recommendations"))
    )
    rec_end = turn_end.copy()
    if eligible.size == 0:
        return [], rec_end
    m = eligible.size
    e_user = user[eligible]
    e_sess = sess[eligible]
    treated = s.ranker_treated[e_sess]
    ranker = np.where(treated, "ranker_v2", "ranker_v1").astype(object)
    products = catalog.draw(rng, m * SLOTS).reshape(m, SLOTS)
    shown_ts = turn_end[eligible]
    blocks = []
    for slot in range(SLOTS):
        blocks.append(
            Block(
                "Recommendation Shown",
                shown_ts + 1,
                e_user,
                {
                    "session_id": sid[eligible],
                    "slot": slot + 1,
                    "product_id": catalog.product_ids[products[:, slot]],
                    "ranker": ranker,
                },
                rank=4 + slot,
            )
        )
    effect = np.array([RANKER_EFFECT_BY_LOCALE[name] for name in LOCALES])[
        population.locale[e_user]
    ]
    lift = np.where(treated, 1 + effect, 1.0)
    add = rng.random(m) < ADD_RATE * lift
    from_rec = add & (rng.random(m) < ADD_FROM_RECOMMENDATION)
    extra_click = ~add & (rng.random(m) < EXTRA_CLICK_RATE * lift)
    clicked = from_rec | extra_click
    slot_pick = rng.integers(0, SLOTS, m)
    click_ts = shown_ts + np.rint(np.exp(rng.normal(np.log(3000), 0.4, m))).astype(np.int64)
    add_ts = np.where(from_rec, click_ts, shown_ts) + np.rint(
        np.exp(rng.normal(np.log(2500), 0.4, m))
    ).astype(np.int64)
    clicked_product = products[np.arange(m), slot_pick]
    organic_product = catalog.draw(rng, m)
    added_product = np.where(from_rec, clicked_product, organic_product)
    blocks.append(
        Block(
            "Recommendation Clicked",
            click_ts[clicked],
            e_user[clicked],
            {
                "session_id": sid[eligible][clicked],
                "slot": slot_pick[clicked] + 1,
                "product_id": catalog.product_ids[clicked_product[clicked]],
                "ranker": ranker[clicked],
            },
            rank=7,
        )
    )
    blocks.append(
        Block(
            "Product Added",
            add_ts[add],
            e_user[add],
            {
                "session_id": sid[eligible][add],
                "product_id": catalog.product_ids[added_product[add]],
                "price": catalog.price[added_product[add]],
                "from_recommendation": from_rec[add],
            },
            rank=8,
        )
    )
    rec_end[eligible] = np.maximum(
        shown_ts + 1, np.where(add, add_ts, np.where(clicked, click_ts, 0))
    )
    return blocks, rec_end
