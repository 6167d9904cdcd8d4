"""Chatbot turns: the retrieval incident and the two experiments' true effects."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from tripwire.sim import World, WorldConfig
from tripwire.sim import incidents as inc
from tripwire.sim.catalog import build_catalog
from tripwire.sim.experiments import PROMPT_THUMBS_DOWN_EFFECT, RANKER_EFFECT_BY_LOCALE
from tripwire.sim.messages import Block
from tripwire.sim.turns import simulate_turns

from .helpers import sessions_between, uniform_population

WORLD = World(WorldConfig(seed=2, users=100, days=14))
RETRIEVAL = next(i for i in WORLD.incidents if i.id == inc.RETRIEVAL)
HOUR = 3_600_000


def _rows(blocks: list[Block], event: str) -> dict[str, np.ndarray]:
    picked = [b for b in blocks if b.event == event and len(b)]
    keys = set.intersection(*(set(b.props) for b in picked))
    out = {
        k: np.concatenate(
            [np.broadcast_to(np.asarray(b.props[k], dtype=object), len(b)) for b in picked]
        )
        for k in keys
    }
    out["ts"] = np.concatenate([b.ts for b in picked])
    return out


def test_retrieval_shard_collapse_hits_product_search_on_the_broken_shard_only() -> None:
    rng = np.random.default_rng(4)
    pop = uniform_population(3000, locale="en-US", device="Echo Dot")
    lo, hi = int(RETRIEVAL.start.timestamp() * 1000), int(RETRIEVAL.end.timestamp() * 1000)
    sessions = sessions_between(rng, pop.size, 40_000, lo - 2 * HOUR, hi + 2 * HOUR)
    turns = _rows(
        simulate_turns(rng, sessions, pop, build_catalog(rng), WORLD.incidents).blocks,
        "Turn Completed",
    )
    search = turns["intent"] == "product_search"
    broken = turns["service"] == inc.BROKEN_SHARD
    inside = (turns["ts"] >= lo + 60_000) & (turns["ts"] < hi - 60_000)
    after = turns["ts"] >= hi + 10 * 60_000
    resolved = turns["resolved"].astype(bool)
    escalated = turns["escalated"].astype(bool)
    latency = turns["latency_ms"].astype(float)
    hit = search & broken & inside
    assert hit.sum() > 2000
    assert abs(resolved[hit].mean() - inc.SHARD_RESOLVED_DURING) < 0.04
    assert abs(escalated[hit].mean() - inc.SHARD_ESCALATED_DURING) < 0.04
    healthy = search & ~broken & inside
    assert resolved[healthy].mean() > 0.78
    assert np.median(latency[hit]) > 1.3 * np.median(latency[healthy])
    recovered = search & broken & after
    assert abs(resolved[recovered].mean() - resolved[healthy].mean()) < 0.03


def _adds_per_session(locale: str, treated: bool, n: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    pop = uniform_population(5000, locale=locale, device="Echo Show")
    sessions = sessions_between(
        rng, pop.size, n, 0, 86_400_000, shopping=True, turns=3, ranker_treated=np.full(n, treated)
    )
    blocks = simulate_turns(rng, sessions, pop, build_catalog(rng), []).blocks
    return sum(len(b) for b in blocks if b.event == "Product Added") / n


def test_ranker_v2_lifts_add_to_cart_in_english_and_hurts_it_in_japanese() -> None:
    n = 40_000
    for locale in ("en-US", "ja-JP"):
        control = _adds_per_session(locale, False, n, seed=10)
        treatment = _adds_per_session(locale, True, n, seed=11)
        effect = treatment / control - 1
        truth = RANKER_EFFECT_BY_LOCALE[locale]
        # ≈ 18k adds per arm: SE of the relative effect ≈ 1.1 %
        assert abs(effect - truth) < 0.035, (locale, effect)
        assert np.sign(effect) == np.sign(truth)


def test_prompt_v3_raises_turns_and_thumbs_down() -> None:
    from tripwire.sim.sessions import draw_sessions
    from tripwire.sim.traffic import SessionStarts

    rng = np.random.default_rng(5)
    pop = uniform_population(4000, locale="en-GB", device="mobile app")
    n = 60_000
    starts = SessionStarts(
        user=rng.integers(0, pop.size, n), start_ms=np.sort(rng.integers(0, 86_400_000, n))
    )
    treated_users = np.arange(pop.size) % 2 == 0
    sessions = draw_sessions(
        rng,
        starts,
        pop,
        ranker_treated_user=np.zeros(pop.size, dtype=bool),
        ranker_start_ms=None,
        prompt_treated_user=treated_users,
        prompt_start_ms=0,
        id_prefix="s",
    )
    arm = sessions.prompt_treated
    turns_effect = sessions.turns[arm].mean() / sessions.turns[~arm].mean() - 1
    assert abs(turns_effect - 0.06) < 0.02
    by_session = dict(zip(sessions.ids, arm.tolist(), strict=True))
    picked = [
        b
        for b in simulate_turns(rng, sessions, pop, build_catalog(rng), []).blocks
        if b.event == "Turn Completed" and "thumbs" in b.props
    ]
    assert picked
    sids = np.concatenate([np.asarray(b.props["session_id"]) for b in picked])
    down = np.concatenate([np.asarray(b.props["thumbs"]) == "down" for b in picked])
    treated_turn = np.array([by_session[s] for s in sids.tolist()])
    effect = down[treated_turn].mean() / down[~treated_turn].mean() - 1
    assert abs(effect - PROMPT_THUMBS_DOWN_EFFECT) < 0.1


def test_running_sums_restart_per_session_and_allow_empty_days() -> None:
    from tripwire.sim.turns import _cumsum_by_session

    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    turns = np.array([2, 0, 3, 0])  # sessions without turns in between and at the end
    assert _cumsum_by_session(values, turns).tolist() == [1.0, 3.0, 3.0, 7.0, 12.0]
    assert _cumsum_by_session(np.array([]), np.array([], dtype=np.int64)).size == 0


def test_a_range_whose_first_day_piece_has_no_sessions_simulates() -> None:
    # ends at 21:05 UTC: the one-day window's first piece is 21:05–24:00 of the day before,
    # where 50 users open no session (this failed with a broadcast error)
    end = datetime(2026, 11, 22, 21, 5, tzinfo=UTC)
    messages = list(World(WorldConfig(seed=7, users=50, days=1, end=end)).messages())
    assert messages and all(m["timestamp"] < "2026-11-22T21:05" for m in messages)
