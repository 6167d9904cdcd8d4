"""Builders for large, homogeneous samples that exercise one mechanism of the world."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import numpy as np

from tripwire.sim.population import DEVICES, LOCALES, PAYMENT_METHODS, Population, build_population
from tripwire.sim.sessions import Sessions


def uniform_population(
    n: int,
    *,
    locale: str,
    device: str,
    app_version: str | None = None,
    payment_method: str | None = None,
) -> Population:
    """``n`` users, all with the given locale and device (and app version / payment method
    when given; other traits drawn as usual)."""
    pop = build_population(
        np.random.default_rng(0), n, datetime.fromisoformat("2026-11-02T00:00:00+00:00")
    )
    versions = [app_version] * n if app_version else pop.app_version
    payment = np.full(n, PAYMENT_METHODS.index(payment_method)) if payment_method else pop.payment
    return dataclasses.replace(
        pop,
        locale=np.full(n, LOCALES.index(locale)),
        device=np.full(n, DEVICES.index(device)),
        app_version=versions,
        payment=payment,
    )


def sessions_between(
    rng: np.random.Generator,
    n_users: int,
    n: int,
    start_ms: int,
    end_ms: int,
    *,
    shopping: bool = True,
    turns: int | None = None,
    ranker_treated: np.ndarray | None = None,
    prompt_treated: np.ndarray | None = None,
) -> Sessions:
    """``n`` sessions of random users starting uniformly in ``[start_ms, end_ms)``."""
    start = np.sort(rng.integers(start_ms, end_ms, n))
    return Sessions(
        ids=[f"s{i}" for i in range(n)],
        user=rng.integers(0, n_users, n),
        start_ms=start,
        voice=rng.random(n) < 0.7,
        entry=["wake_word"] * n,
        shopping=np.full(n, shopping),
        turns=np.full(n, turns) if turns else 1 + rng.poisson(2.0, n),
        surveyed=np.zeros(n, dtype=bool),
        ranker_treated=np.zeros(n, dtype=bool) if ranker_treated is None else ranker_treated,
        prompt_treated=np.zeros(n, dtype=bool) if prompt_treated is None else prompt_treated,
    )
