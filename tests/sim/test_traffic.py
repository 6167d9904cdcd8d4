"""Seasonality and the population mix."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from tripwire.sim.population import DEVICES, LOCALES, build_population
from tripwire.sim.traffic import DAY_MS, draw_session_starts, minute_profile

MONDAY = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp() * 1000)


def test_weekly_curve_makes_weekends_busier_than_midweek() -> None:
    tuesday = minute_profile(MONDAY + DAY_MS, 0).sum()
    saturday = minute_profile(MONDAY + 5 * DAY_MS, 0).sum()
    assert saturday > 1.1 * tuesday


def test_diurnal_curve_follows_local_time() -> None:
    london = minute_profile(MONDAY, 0)
    tokyo = minute_profile(MONDAY, 540)
    # 19:00 local is the evening peak: 19:00 UTC in London, 10:00 UTC in Tokyo
    assert london[19 * 60] > 4 * london[3 * 60]
    assert tokyo[10 * 60] > 4 * tokyo[18 * 60]


def test_population_mix_is_realistic() -> None:
    pop = build_population(np.random.default_rng(1), 40_000, datetime(2026, 11, 2, tzinfo=UTC))
    share = np.bincount(pop.locale, minlength=len(LOCALES)) / pop.size
    assert share[LOCALES.index("en-US")] == share.max()
    assert abs(share[LOCALES.index("ja-JP")] - 0.08) < 0.01
    assert abs(share[LOCALES.index("en-GB")] - 0.12) < 0.01
    show = pop.device == DEVICES.index("Echo Show")
    assert 0.15 < show.mean() < 0.35
    assert abs(pop.activity.mean() - 1) < 1e-9


def test_session_starts_scale_with_the_rate_and_respect_the_window() -> None:
    pop = build_population(np.random.default_rng(2), 20_000, datetime(2026, 11, 2, tzinfo=UTC))
    rng = np.random.default_rng(3)
    full = draw_session_starts(rng, pop, 0.5, MONDAY, (MONDAY, MONDAY + DAY_MS), 0)
    assert abs(full.start_ms.size / (0.5 * 20_000 * 0.95) - 1) < 0.1  # Monday's weekly factor
    half = draw_session_starts(rng, pop, 0.5, MONDAY, (MONDAY, MONDAY + DAY_MS // 2), 0)
    assert half.start_ms.max() < MONDAY + DAY_MS // 2
    assert np.all(np.diff(full.start_ms) >= 0)
