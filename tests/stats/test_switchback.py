"""Switchback: design variance, block-length choice, randomisation inference by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tripwire.stats.switchback import (
    autocovariance,
    choose_block_length,
    estimator_variance,
    plan_switchback,
    switchback_design,
    switchback_test,
)


def ar1(n: int, rho: float, rng: np.random.Generator, size: int | None = None) -> np.ndarray:
    """Stationary unit-variance AR(1) series: (n,) or (size, n)."""
    shape = (n,) if size is None else (size, n)
    e = rng.standard_normal(shape)
    y = np.empty(shape)
    y[..., 0] = e[..., 0]
    for t in range(1, n):
        y[..., t] = rho * y[..., t - 1] + math.sqrt(1 - rho**2) * e[..., t]
    return y


def test_estimate_is_the_difference_of_kept_means() -> None:
    design = switchback_design(24, 4, burn_in=1, seed=5)
    y = np.arange(24, dtype=float) ** 0.5
    w = np.array(design.assignment)
    keep = (np.arange(24) % 4) >= 1
    r = switchback_test(y, w, 4, burn_in=1, n_permutations=200)
    expected = y[keep & (w == 1)].mean() - y[keep & (w == 0)].mean()
    assert r.estimate == pytest.approx(expected)
    assert r.n_kept_periods == 18 and r.n_blocks == 6 and r.n_treated_blocks == 3


def test_design_is_balanced_reproducible_and_constant_within_blocks() -> None:
    a = switchback_design(100, 7, burn_in=2, seed=42)
    b = switchback_design(100, 7, burn_in=2, seed=42)
    assert a == b
    assert a.n_blocks == 15 and sum(a.block_assignment) in (7, 8)
    w = np.array(a.assignment)
    for block in range(a.n_blocks):
        assert len(set(w[block * 7 : (block + 1) * 7])) == 1


def test_randomisation_p_values_are_uniform_under_the_null() -> None:
    rng = np.random.default_rng(21)
    series = ar1(120, 0.6, rng, size=300)
    p_values = []
    for i, y in enumerate(series):
        design = switchback_design(120, 6, burn_in=1, seed=1000 + i)
        r = switchback_test(
            y, design.assignment, 6, burn_in=1, n_permutations=400, seed=i, interval=False
        )
        p_values.append(r.p_value)
    p = np.array(p_values)
    assert stats.kstest(p, "uniform").pvalue > 0.01
    assert 0.02 <= np.mean(p <= 0.05) <= 0.09


def test_inverted_interval_covers_a_constant_effect_and_detects_it() -> None:
    rng = np.random.default_rng(5)
    effect, reps = 0.6, 150
    covered = rejected = 0
    for i in range(reps):
        design = switchback_design(160, 8, burn_in=2, seed=i)
        w = np.array(design.assignment)
        y = ar1(160, 0.5, rng) + effect * w
        r = switchback_test(y, w, 8, burn_in=2, n_permutations=400, seed=i)
        covered += r.ci_lower <= effect <= r.ci_upper
        rejected += r.p_value <= 0.05
        assert r.ci_lower <= r.estimate <= r.ci_upper
    assert covered / reps >= 0.9
    # power agrees with the normal approximation built on the design variance
    sd = math.sqrt(estimator_variance(0.5 ** np.arange(160), 160, 8, 2))
    expected_power = stats.norm.sf(1.96 - effect / sd) + stats.norm.cdf(-1.96 - effect / sd)
    assert rejected / reps == pytest.approx(expected_power, abs=0.12)


def test_design_variance_matches_monte_carlo() -> None:
    """The closed-form randomisation variance equals the variance over schedules and noise."""
    rho, n, block, burn = 0.7, 96, 6, 1
    gamma = rho ** np.arange(n)  # AR(1) autocovariance with unit variance
    rng = np.random.default_rng(0)
    series = ar1(n, rho, rng, size=20_000)
    blocks = np.arange(n) // block
    keep = (np.arange(n) % block) >= burn
    labels = rng.permuted(np.tile(np.repeat([0.0, 1.0], 8), (20_000, 1)), axis=1)
    w = labels[:, blocks] * keep
    c = (1 - labels[:, blocks]) * keep
    est = (series * w).sum(1) / w.sum(1) - (series * c).sum(1) / c.sum(1)
    expected = estimator_variance(gamma, n, block, burn)
    assert est.var() == pytest.approx(expected, rel=0.04)


def test_block_length_follows_autocorrelation_and_carryover() -> None:
    rng = np.random.default_rng(2)
    sticky = ar1(3_000, 0.8, rng)
    white = rng.standard_normal(3_000)
    # positively autocorrelated noise, no carryover: switch as often as possible
    assert choose_block_length(sticky, 168).block_length == 1
    # white noise with carryover: longer blocks waste less data on burn-in
    choice = choose_block_length(white, 168, carryover_periods=2)
    assert choice.block_length >= 8 and choice.burn_in == 2
    assert choice.variance == min(choice.variances)
    assert max(choice.candidates) == 168 // 10
    design = plan_switchback(white, 168, carryover_periods=2, seed=3)
    assert design.block_length == choice.block_length and design.burn_in == 2


def test_autocovariance_matches_direct_sum() -> None:
    y = np.random.default_rng(1).standard_normal(50)
    d = y - y.mean()
    direct = [float(d[: 50 - h] @ d[h:]) / 50 for h in range(50)]
    assert autocovariance(y) == pytest.approx(direct, abs=1e-12)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: switchback_design(10, 6), "block_length must be between 1 and"),
        (lambda: switchback_design(10, 2, burn_in=2), "burn_in must be in"),
        (lambda: choose_block_length(np.ones(5) + np.arange(5), 40, 5), "no block length fits"),
        (lambda: switchback_test([1.0, 2.0, 3.0, 4.0], [0, 1, 0, 1], 2), "block 0"),
        (lambda: switchback_test([1.0, 2.0, 3.0, 4.0], [1, 1, 1, 1], 2), "one treated and one"),
        (lambda: switchback_test([1.0, np.inf, 3.0, 4.0], [0, 0, 1, 1], 2), r"outcome\[1\]"),
        (lambda: autocovariance([1.0]), "at least 2 points"),
    ],
)
def test_bad_input(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        call()
