"""Exact one-sided tests for small counts: binomial and Poisson tails, and two-sample versions.

The normal approximation is badly wrong for thin data — one failed trial out of one at a
97% step reads as z ≈ −5.7 — so decisions about thin segments use exact tails:

* :func:`binomial_tail`, :func:`poisson_tail`: the probability of a result at least as
  extreme as ``observed`` *in the direction it moved*, when the expectation is known.
* :func:`two_proportion_exact_tail` (Fisher's exact test, one-sided, from the
  hypergeometric distribution) and :func:`poisson_ratio_exact_tail` (the conditional
  binomial test of two Poisson rates, Przyborowski & Wilenski 1940): the same when the
  expectation is itself estimated from a baseline sample, so a thin baseline's own noise
  is accounted for.

Over-dispersion (units that are not independent, forecast error) is handled by the
effective-sample-size rule: every count is divided by the dispersion ``φ ≥ 1`` (variance
relative to binomial/Poisson) before the exact test, which scales both the mean and the
variance as a quasi-likelihood would. Counts are rounded to integers after scaling.

All functions are vectorised over numpy arrays and return one-sided p-values in ``[0, 1]``.

>>> round(float(binomial_tail(0, 1, 0.97)), 3)  # one failure at a 97% step: not rare
0.03
>>> round(float(two_proportion_exact_tail(2, 10, 60, 70)), 4) < 0.01
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats


def binomial_tail(successes: Any, trials: Any, p: Any) -> np.ndarray:
    """P(X ≤ k) when ``k < n·p`` else P(X ≥ k), for X ~ Binomial(n, p) (exact, one-sided).

    ``successes`` and ``trials`` are rounded to integers; ``p`` is clipped into (0, 1).
    """
    k = np.rint(np.asarray(successes, dtype=np.float64))
    n = np.rint(np.asarray(trials, dtype=np.float64))
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    lower = stats.binom.cdf(k, n, q)
    upper = stats.binom.sf(k - 1, n, q)
    return np.asarray(np.where(k < n * q, lower, upper), dtype=np.float64)


def poisson_tail(observed: Any, expected: Any) -> np.ndarray:
    """P(X ≤ k) when ``k < μ`` else P(X ≥ k), for X ~ Poisson(μ) (exact, one-sided)."""
    k = np.rint(np.asarray(observed, dtype=np.float64))
    mu = np.maximum(np.asarray(expected, dtype=np.float64), 1e-12)
    lower = stats.poisson.cdf(k, mu)
    upper = stats.poisson.sf(k - 1, mu)
    return np.asarray(np.where(k < mu, lower, upper), dtype=np.float64)


def two_proportion_exact_tail(
    successes: Any,
    trials: Any,
    baseline_successes: Any,
    baseline_trials: Any,
    *,
    dispersion: Any = 1.0,
) -> np.ndarray:
    """One-sided Fisher exact p-value that the current proportion differs from the baseline.

    The side is the direction the current proportion moved. Conditional on both sample
    sizes and the total successes, the current successes are hypergeometric under
    H0 (equal proportions). Counts are first divided by ``dispersion`` (≥ 1).

    >>> float(two_proportion_exact_tail(30, 100, 300, 1000)) > 0.5  # no change
    True
    """
    phi = np.maximum(np.asarray(dispersion, dtype=np.float64), 1.0)
    x1 = np.rint(np.asarray(successes, dtype=np.float64) / phi)
    n1 = np.rint(np.asarray(trials, dtype=np.float64) / phi)
    x0 = np.rint(np.asarray(baseline_successes, dtype=np.float64) / phi)
    n0 = np.rint(np.asarray(baseline_trials, dtype=np.float64) / phi)
    x1, n1 = np.minimum(x1, n1), np.maximum(n1, 0.0)
    x0 = np.minimum(x0, n0)
    total, drawn = n0 + n1, x0 + x1
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.where(total > 0, n1 * drawn / np.where(total > 0, total, 1.0), 0.0)
    lower = stats.hypergeom.cdf(x1, total, drawn, n1)
    upper = stats.hypergeom.sf(x1 - 1, total, drawn, n1)
    out = np.where(x1 < expected, lower, upper)
    return np.asarray(np.where((n1 > 0) & (n0 > 0), out, 1.0), dtype=np.float64)


def poisson_ratio_exact_tail(
    observed: Any,
    exposure: Any,
    baseline_observed: Any,
    baseline_exposure: Any,
    *,
    dispersion: Any = 1.0,
) -> np.ndarray:
    """One-sided exact p-value that a Poisson rate differs from a baseline rate.

    Conditional on the total ``c + b``, the current count ``c`` is
    Binomial(c + b, t/(t + t₀)) under equal rates, with exposures ``t`` (current) and
    ``t₀`` (baseline, e.g. the number of baseline windows). Counts are first divided by
    ``dispersion`` (≥ 1).

    >>> round(float(poisson_ratio_exact_tail(2, 1, 70, 7)), 4) < 0.01
    True
    """
    phi = np.maximum(np.asarray(dispersion, dtype=np.float64), 1.0)
    c = np.rint(np.asarray(observed, dtype=np.float64) / phi)
    b = np.rint(np.asarray(baseline_observed, dtype=np.float64) / phi)
    t = np.asarray(exposure, dtype=np.float64)
    t0 = np.asarray(baseline_exposure, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(t + t0 > 0, t / np.where(t + t0 > 0, t + t0, 1.0), 0.5)
    out = binomial_tail(c, c + b, share)
    return np.asarray(np.where(c + b > 0, out, 1.0), dtype=np.float64)


__all__ = [
    "binomial_tail",
    "poisson_ratio_exact_tail",
    "poisson_tail",
    "two_proportion_exact_tail",
]
