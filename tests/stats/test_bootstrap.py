"""Bootstrap comparisons: determinism, agreement with analytic SEs, coverage, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from tripwire.stats import (
    MeanStats,
    Status,
    bootstrap_difference,
    bootstrap_quantile_difference,
    welch_t_test,
)


def test_seeded_and_deterministic():
    rng = np.random.default_rng(60)
    c, t = rng.exponential(1.0, 800), rng.exponential(1.1, 900)
    a = bootstrap_quantile_difference(c, t, 0.95, n_resamples=400, seed=7)
    b = bootstrap_quantile_difference(c, t, 0.95, n_resamples=400, seed=7)
    assert a == b
    assert bootstrap_quantile_difference(c, t, 0.95, n_resamples=400, seed=8) != a
    assert a.absolute.estimate == pytest.approx(np.quantile(t, 0.95) - np.quantile(c, 0.95))


def test_block_size_does_not_change_the_answer():
    rng = np.random.default_rng(61)
    c, t = rng.normal(0, 1, 500), rng.normal(0, 1, 500)
    mean = lambda a: a.mean(axis=1)  # noqa: E731
    one = bootstrap_difference(c, t, mean, n_resamples=300, seed=1, block_size=300)
    many = bootstrap_difference(c, t, mean, n_resamples=300, seed=1, block_size=7)
    assert one.absolute == many.absolute


def test_bootstrap_se_of_mean_difference_matches_welch():
    rng = np.random.default_rng(62)
    c, t = rng.lognormal(0, 1, 3000), rng.lognormal(0.05, 1, 3000)
    boot = bootstrap_difference(c, t, lambda a: a.mean(axis=1), n_resamples=3000, seed=2)
    welch = welch_t_test(MeanStats.from_values(c), MeanStats.from_values(t))
    assert boot.absolute.se == pytest.approx(welch.absolute.se, rel=0.05)


def test_p95_se_matches_asymptotic_quantile_variance():
    """Var(q̂_p) ≈ p(1 − p) / (n f(ξ_p)²) (e.g. Serfling 1980, §2.3)."""
    rng = np.random.default_rng(63)
    n, q = 4000, 0.95
    c, t = rng.exponential(1.0, n), rng.exponential(1.0, n)
    r = bootstrap_quantile_difference(c, t, q, n_resamples=2000, seed=3)
    xi = stats.expon.ppf(q)
    se_one = np.sqrt(q * (1 - q) / n) / stats.expon.pdf(xi)
    assert r.absolute.se == pytest.approx(np.sqrt(2) * se_one, rel=0.12)


def test_p95_interval_coverage_by_simulation():
    rng = np.random.default_rng(64)
    truth = stats.expon.ppf(0.95, scale=1.2) - stats.expon.ppf(0.95, scale=1.0)
    covered = []
    for i in range(100):
        c, t = rng.exponential(1.0, 1000), rng.exponential(1.2, 1000)
        r = bootstrap_quantile_difference(c, t, 0.95, n_resamples=300, seed=i)
        covered.append(r.absolute.ci_low <= truth <= r.absolute.ci_high)
    # 100 experiments: a loose band around 95% (the binomial 99.9% range is ~87–100%).
    assert np.mean(covered) >= 0.87


def test_insufficient_and_bad_input():
    r = bootstrap_quantile_difference([1.0], [1.0, 2.0, 3.0])
    assert r.status == Status.INSUFFICIENT_DATA and "fewer than 2 units" in r.message
    with pytest.raises(ValueError, match=r"treatment\[1\] must be finite"):
        bootstrap_quantile_difference([1.0, 2.0], [1.0, np.inf])
    with pytest.raises(ValueError, match="q must be"):
        bootstrap_quantile_difference([1.0, 2.0], [1.0, 2.0], 1.5)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_quantile_difference([1.0, 2.0], [1.0, 2.0], n_resamples=10)


def test_zero_control_statistic_gives_undefined_relative():
    r = bootstrap_quantile_difference(np.zeros(50), np.ones(50), 0.5, n_resamples=200)
    assert r.absolute.estimate == 1.0
    assert np.isnan(r.relative.estimate) and "control statistic is 0" in r.message
