"""Binomial noise helpers of the monitors against simulation."""

from __future__ import annotations

import numpy as np

from tripwire.stats.count_noise import (
    binomial_information,
    binomial_sd,
    clamp_share,
    count_resolution_sd,
)


def test_binomial_sd_and_information_match_simulated_counts() -> None:
    rng = np.random.default_rng(0)
    p = np.array([0.03, 0.22, 0.5, 0.9])
    n = np.array([400.0, 100.0, 7.0, 30.0])
    x = rng.binomial(n.astype(int), p, size=(200_000, p.size))
    share_sd = (x / n).std(axis=0)
    count_var = x.var(axis=0)
    np.testing.assert_allclose(binomial_sd(p, n), share_sd, rtol=0.01)
    np.testing.assert_allclose(binomial_information(p, n), count_var, rtol=0.02)


def test_shares_at_zero_or_one_keep_some_noise() -> None:
    p = np.array([0.0, 1.0, np.nan])
    assert np.all(binomial_sd(p[:2], np.array([10.0, 10.0])) > 0)
    assert np.isnan(clamp_share(p)[2])


def test_count_resolution_is_one_count() -> None:
    n = np.array([1.0, 50.0, 1000.0])
    np.testing.assert_allclose(count_resolution_sd(n, 1.0) * n, 1.0)
