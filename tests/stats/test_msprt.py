"""mSPRT: closed form against numerical integration; type-I and coverage by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from tripwire.stats.msprt import (
    confidence_sequence_halfwidth,
    mixing_variance,
    mixture_likelihood_ratio,
    msprt,
)


def running_difference(n_paths: int, n_obs: int, effect: float, seed: int):
    """Cumulative difference in means of paired N(·,1) observations: estimates, variances."""
    rng = np.random.default_rng(seed)
    diffs = rng.standard_normal((n_paths, n_obs)) * math.sqrt(2.0) + effect
    n = np.arange(1, n_obs + 1)
    return np.cumsum(diffs, axis=1) / n, 2.0 / n


@pytest.mark.parametrize(
    ("est", "var", "tau2"), [(0.3, 0.01, 0.02), (-1.2, 0.5, 2.0), (0.0, 1.0, 0.1)]
)
def test_closed_form_equals_integrated_mixture(est: float, var: float, tau2: float) -> None:
    def integrand(theta: float) -> float:
        lr = stats.norm.pdf(est, theta, math.sqrt(var)) / stats.norm.pdf(est, 0.0, math.sqrt(var))
        return lr * stats.norm.pdf(theta, 0.0, math.sqrt(tau2))

    expected, _ = integrate.quad(integrand, -30, 30, points=[0.0, est], limit=200)
    got = mixture_likelihood_ratio([est], [var], tau2)[0]
    assert got == pytest.approx(expected, rel=1e-7)


def test_confidence_sequence_edges_are_where_lr_hits_one_over_alpha() -> None:
    est, var, tau2, alpha = 0.4, 0.02, 0.05, 0.05
    half = confidence_sequence_halfwidth(var, tau2, alpha)
    for null in (est - half, est + half):
        assert mixture_likelihood_ratio([est], [var], tau2, null=null)[0] == pytest.approx(
            1 / alpha
        )
    r = msprt([est], [var], tau2, alpha)
    assert (r.ci_lower[0], r.ci_upper[0]) == pytest.approx((est - half, est + half))


def test_continuous_monitoring_keeps_type_one_error_below_alpha() -> None:
    est, var = running_difference(4_000, 1_000, 0.0, seed=1)
    tau2 = mixing_variance(var[-1])
    rejected = 0
    naive = 0
    for row in est:
        r = msprt(row, var, tau2, alpha=0.05)
        rejected += r.rejected
        naive += bool(np.any(np.abs(row) / np.sqrt(var) > 1.96))
    assert rejected / 4_000 <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 4_000)
    assert naive / 4_000 > 0.3  # peeking a fixed-horizon test after every observation


def test_confidence_sequence_covers_the_truth_uniformly_and_has_power() -> None:
    est, var = running_difference(2_000, 1_000, 0.3, seed=2)
    tau2 = mixing_variance(var[-1])
    covered = 0
    detected = 0
    for row in est:
        r = msprt(row, var, tau2)
        covered += bool(np.all((r.ci_lower <= 0.3) & (r.ci_upper >= 0.3)))
        detected += r.rejected
        assert np.all(np.diff(r.p_value) <= 0)
        assert np.all(r.ci_lower <= r.ci_upper)
    assert covered / 2_000 >= 0.95 - 3 * math.sqrt(0.05 * 0.95 / 2_000)
    assert detected / 2_000 > 0.8


def test_mixing_variance_minimises_the_halfwidth_at_the_planned_variance() -> None:
    v = 0.003
    best = mixing_variance(v)
    width = confidence_sequence_halfwidth(v, best)
    for factor in (0.5, 0.8, 1.25, 2.0):
        assert confidence_sequence_halfwidth(v, best * factor) > width
    assert mixing_variance(2 * v) == pytest.approx(2 * best, rel=1e-6)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="same length"):
        msprt([0.1, 0.2], [0.1], tau2=1.0)
    with pytest.raises(ValueError, match=r"variances\[1\] must be finite and > 0"):
        msprt([0.1, 0.2], [0.1, 0.0], tau2=1.0)
    with pytest.raises(ValueError, match="tau2 must be > 0"):
        msprt([0.1], [0.1], tau2=0.0)
    with pytest.raises(ValueError, match=r"estimates\[0\] is not finite"):
        msprt([math.nan], [0.1], tau2=1.0)
    with pytest.raises(ValueError, match="planned_variance"):
        mixing_variance(-1.0)
