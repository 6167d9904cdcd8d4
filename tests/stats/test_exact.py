"""Exact one-sided tails against scipy's reference tests and by simulation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from tripwire.stats.exact import (
    binomial_tail,
    poisson_ratio_exact_tail,
    poisson_tail,
    two_proportion_exact_tail,
)


@pytest.mark.parametrize(("k", "n", "p"), [(0, 1, 0.97), (3, 40, 0.2), (15, 40, 0.2), (8, 40, 0.2)])
def test_binomial_tail_matches_the_one_sided_binomial_test(k, n, p):
    side = "less" if k < n * p else "greater"
    assert binomial_tail(k, n, p) == pytest.approx(
        stats.binomtest(k, n, p, alternative=side).pvalue
    )


def test_poisson_tail_is_the_tail_in_the_direction_of_the_move():
    assert poisson_tail(2, 10.0) == pytest.approx(stats.poisson.cdf(2, 10.0))
    assert poisson_tail(20, 10.0) == pytest.approx(stats.poisson.sf(19, 10.0))


@pytest.mark.parametrize(
    ("x1", "n1", "x0", "n0"), [(2, 10, 60, 70), (9, 10, 30, 70), (5, 50, 40, 400), (0, 3, 5, 20)]
)
def test_two_proportion_tail_is_fishers_exact_test(x1, n1, x0, n0):
    side = "less" if x1 / n1 < x0 / n0 else "greater"
    table = [[x1, n1 - x1], [x0, n0 - x0]]
    expected = stats.fisher_exact(table, alternative=side).pvalue
    assert two_proportion_exact_tail(x1, n1, x0, n0) == pytest.approx(expected)


def test_poisson_ratio_tail_is_the_conditional_binomial_test():
    # 2 events now (1 window) vs 70 over 7 baseline windows: c | c+b ~ Binomial(72, 1/8)
    expected = stats.binomtest(2, 72, 1 / 8, alternative="less").pvalue
    assert poisson_ratio_exact_tail(2, 1, 70, 7) == pytest.approx(expected)


def test_vectorised_and_empty_samples_are_not_significant():
    out = two_proportion_exact_tail([2, 0], [10, 0], [60, 60], [70, 70])
    assert out.shape == (2,) and out[1] == 1.0 and out[0] < 0.01
    assert poisson_ratio_exact_tail(0, 1, 0, 7) == 1.0


def test_dispersion_makes_the_test_more_conservative():
    plain = two_proportion_exact_tail(20, 100, 300, 1000)
    assert two_proportion_exact_tail(20, 100, 300, 1000, dispersion=3.0) > plain
    assert poisson_ratio_exact_tail(5, 1, 140, 7, dispersion=4.0) > poisson_ratio_exact_tail(
        5, 1, 140, 7
    )


@pytest.mark.parametrize("dispersion", [1.0, 3.0])
def test_false_positive_rate_is_at_most_alpha_under_the_null(dispersion):
    """Thin samples under H0 (over-dispersed when φ = 3, and told so): size at most α.

    With φ = 3 data tested as φ = 1 the rate of false alarms is several times α."""
    rng = np.random.default_rng(5)
    runs, alpha = 4000, 0.05
    p = rng.beta(2, 8, size=runs) if dispersion > 1 else np.full(runs, 0.2)
    n1 = rng.integers(5, 40, size=runs)
    n0 = rng.integers(20, 300, size=runs)
    if dispersion > 1:
        # beta-binomial with intra-class correlation giving φ ≈ 3 at the sizes below
        p1 = rng.beta(p * 20, (1 - p) * 20)
        p0 = rng.beta(p * 20, (1 - p) * 20)
        x1, x0 = rng.binomial(n1, p1), rng.binomial(n0, p0)
    else:
        x1, x0 = rng.binomial(n1, p), rng.binomial(n0, p)
    tails = two_proportion_exact_tail(x1, n1, x0, n0, dispersion=dispersion)
    # each tail is one-sided in the observed direction: two-sided size is ≤ alpha
    assert np.mean(tails < alpha / 2) <= alpha
