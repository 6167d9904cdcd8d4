"""The checkout funnel: conditional step success, and the payments incident as planted."""

from __future__ import annotations

import numpy as np

from tripwire.sim import World, WorldConfig
from tripwire.sim import incidents as inc
from tripwire.sim.catalog import build_catalog
from tripwire.sim.funnel import P_OK, STAGES, simulate_funnel
from tripwire.sim.messages import Block

from .helpers import sessions_between, uniform_population

WORLD = World(WorldConfig(seed=2, users=100, days=14))
PAYMENTS = next(i for i in WORLD.incidents if i.id == inc.PAYMENTS)
HOUR = 3_600_000


def _ms(moment) -> int:
    return int(moment.timestamp() * 1000)


def _sessions_with(blocks: list[Block], event: str) -> dict[str, int]:
    """session id → time of its ``event`` (first block of that name with rows)."""
    out: dict[str, int] = {}
    for block in blocks:
        if block.event == event:
            out.update(
                zip(np.asarray(block.props["session_id"]).tolist(), block.ts.tolist(), strict=True)
            )
    return out


def _payment_rate(blocks: list[Block], lo: int, hi: int) -> tuple[float, int]:
    auth = _sessions_with(blocks, "Auth Completed")
    paid = _sessions_with(blocks, "Payment Authorized")
    # attempts whose payment stage ran in [lo, hi): auth ok, payment a few hundred ms later
    attempts = [s for s, t in auth.items() if lo <= t < hi]
    return sum(s in paid for s in attempts) / len(attempts), len(attempts)


def test_payment_step_drops_in_the_incident_segment_and_recovers_after_rollback() -> None:
    rng = np.random.default_rng(1)
    pop = uniform_population(
        2000, locale="en-GB", device="Echo Show", payment_method="tokenized-card"
    )
    lo, hi = _ms(PAYMENTS.start), _ms(PAYMENTS.end)
    sessions = sessions_between(rng, pop.size, 30_000, lo - 3 * HOUR, hi + 3 * HOUR)
    result = simulate_funnel(
        rng, sessions, sessions.start_ms, pop, build_catalog(rng), WORLD.incidents, "o-"
    )
    before, n_before = _payment_rate(result.blocks, lo - 3 * HOUR, lo - 5 * 60_000)
    during, n_during = _payment_rate(result.blocks, lo + 5 * 60_000, hi - 5 * 60_000)
    after, n_after = _payment_rate(result.blocks, hi + 5 * 60_000, hi + 3 * HOUR)
    assert min(n_before, n_during, n_after) > 3000
    # planted: 97% → 10%, back to 97% after the rollback (3 binomial SEs ≈ 0.01–0.03)
    assert abs(before - P_OK[STAGES.index("payment")]) < 0.015
    assert abs(during - inc.PAYMENT_OK_DURING) < 0.03
    assert abs(after - P_OK[STAGES.index("payment")]) < 0.015


def test_payment_step_is_untouched_outside_the_segment() -> None:
    rng = np.random.default_rng(2)
    pop = uniform_population(2000, locale="en-GB", device="Echo Show", payment_method="credit-card")
    lo, hi = _ms(PAYMENTS.start), _ms(PAYMENTS.end)
    sessions = sessions_between(rng, pop.size, 20_000, lo, hi)
    result = simulate_funnel(
        rng, sessions, sessions.start_ms, pop, build_catalog(rng), WORLD.incidents, "o-"
    )
    rate, n = _payment_rate(result.blocks, lo + 5 * 60_000, hi - 5 * 60_000)
    assert n > 5000 and abs(rate - 0.97) < 0.012
    errors = [b for b in result.blocks if b.event == "Checkout Error"]
    codes = set(np.concatenate([np.asarray(b.props["error_code"]) for b in errors]).tolist())
    assert "TOKENIZATION_FAILED" not in codes


def test_conditional_step_success_matches_the_design_without_incidents() -> None:
    rng = np.random.default_rng(3)
    pop = uniform_population(3000, locale="en-US", device="web")
    sessions = sessions_between(rng, pop.size, 40_000, 0, 86_400_000)
    result = simulate_funnel(rng, sessions, sessions.start_ms, pop, build_catalog(rng), [], "o-")
    from tripwire.sim.funnel import STEP_EVENTS

    reached = [len(_sessions_with(result.blocks, e)) for e in STEP_EVENTS]
    # stages without segment adjustments for en-US web users (prime shifts the cart stage)
    for stage in ("nlu", "auth", "payment", "shipping", "confirmation"):
        k = STAGES.index(stage)
        assert abs(reached[k] / reached[k - 1] - P_OK[k]) < 0.012, stage
    assert all(a >= b for a, b in zip(reached, reached[1:], strict=False))
    ledger = [b for b in result.blocks if b.event == "Ledger Order Recorded"]
    assert sum(len(b) for b in ledger) == reached[-1]
