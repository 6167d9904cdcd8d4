"""Multiple-testing adjustments: Bonferroni, Holm, Benjamini–Hochberg, Dunnett.

Adjusted p-values are returned in the input order and match statsmodels'
``multipletests`` (methods ``bonferroni``, ``holm``, ``fdr_bh``). :func:`rejection_levels`
gives, for each hypothesis, the unadjusted level its own p-value is compared against, which
is what a scorecard shows as "adjusted level".
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize, stats

from tripwire.stats.sufficient import FloatArray

Adjustment = Literal["none", "bonferroni", "holm", "benjamini_hochberg"]


def _pvalues(p_values: ArrayLike) -> FloatArray:
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p-values must be a 1-d sequence (got shape {p.shape})")
    bad = ~np.isfinite(p) | (p < 0) | (p > 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"p-value at index {i} must be in [0, 1] (got {p[i]!r})")
    return p


def bonferroni_adjust(p_values: ArrayLike) -> FloatArray:
    """Bonferroni: p̃_i = min(1, m·p_i) (Dunn 1961, JASA 56:52).

    >>> bonferroni_adjust([0.01, 0.04]).tolist()
    [0.02, 0.08]
    """
    p = _pvalues(p_values)
    return np.minimum(1.0, p * p.size)


def holm_adjust(p_values: ArrayLike) -> FloatArray:
    """Holm's step-down (Holm 1979, Scand J Stat 6:65): with p_(1) ≤ … ≤ p_(m),
    p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j)).

    >>> holm_adjust([0.01, 0.04, 0.03]).round(4).tolist()
    [0.03, 0.06, 0.06]
    """
    p = _pvalues(p_values)
    m = p.size
    order = np.argsort(p, kind="mergesort")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(1.0, stepped)
    return out


def benjamini_hochberg_adjust(p_values: ArrayLike) -> FloatArray:
    """Benjamini–Hochberg step-up FDR control (Benjamini & Hochberg 1995, JRSS B 57:289):
    p̃_(i) = min_{j ≥ i} min(1, m p_(j) / j).

    >>> benjamini_hochberg_adjust([0.01, 0.04, 0.03]).round(4).tolist()
    [0.03, 0.04, 0.04]
    """
    p = _pvalues(p_values)
    m = p.size
    order = np.argsort(p, kind="mergesort")
    scaled = p[order] * m / np.arange(1, m + 1)
    stepped = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(1.0, stepped)
    return out


def adjust_p_values(p_values: ArrayLike, method: Adjustment) -> FloatArray:
    """Dispatch to one of the adjustments above (``none`` returns the p-values)."""
    if method == "none":
        return _pvalues(p_values).copy()
    if method == "bonferroni":
        return bonferroni_adjust(p_values)
    if method == "holm":
        return holm_adjust(p_values)
    if method == "benjamini_hochberg":
        return benjamini_hochberg_adjust(p_values)
    raise ValueError(
        f"unknown adjustment {method!r}; expected none, bonferroni, holm or benjamini_hochberg"
    )


def rejection_levels(p_values: ArrayLike, method: Adjustment, alpha: float = 0.05) -> FloatArray:
    """The level each raw p-value is compared with under ``method`` at overall ``alpha``.

    Bonferroni α/m; Holm α/(m − r + 1) for the hypothesis of rank r (step-down); BH r·α/m
    (step-up); none α. For Holm and BH the rank is the p-value's rank, so the levels
    depend on the other p-values, as they do in the procedures themselves. A hypothesis
    is rejected exactly when its adjusted p-value ≤ α.

    >>> rejection_levels([0.01, 0.04, 0.03], "holm").round(4).tolist()
    [0.0167, 0.05, 0.025]
    """
    p = _pvalues(p_values)
    m = p.size
    if method == "none":
        return np.full(m, alpha)
    if method == "bonferroni":
        return np.full(m, alpha / m)
    rank = np.empty(m, dtype=np.int64)
    rank[np.argsort(p, kind="mergesort")] = np.arange(1, m + 1)
    if method == "holm":
        return alpha / (m - rank + 1)
    if method == "benjamini_hochberg":
        return rank * alpha / m
    raise ValueError(f"unknown adjustment {method!r}")


def _max_abs_cdf(c: float, corr: FloatArray, df: float) -> float:
    """P(max_i |Z_i| ≤ c) for Z ~ N(0, corr) or multivariate t_df (Genz–Bretz integration)."""
    k = corr.shape[0]
    upper = np.full(k, c)
    if not np.isfinite(df):
        value = stats.multivariate_normal.cdf(
            upper, mean=np.zeros(k), cov=corr, lower_limit=-upper, abseps=1e-7, releps=1e-7
        )
    else:
        value = stats.multivariate_t.cdf(
            upper, loc=np.zeros(k), shape=corr, df=df, lower_limit=-upper, maxpts=200_000 * k
        )
    return float(np.clip(value, 0.0, 1.0))


def dunnett_adjust(
    estimates: ArrayLike,
    standard_errors: ArrayLike,
    control_variance_of_mean: float,
    *,
    df: float = np.inf,
    alpha: float = 0.05,
) -> tuple[FloatArray, FloatArray, float]:
    r"""Dunnett's many-to-one adjustment from sufficient statistics (Dunnett 1955, JASA 50:1096).

    Comparisons Δ_i = x̄_i − x̄_c share the control mean, so
    Corr(Δ_i, Δ_j) = V_c / (se_i se_j) with V_c the variance of the control mean. The
    adjusted p-value of comparison i is P(max_j |Z_j| ≥ |z_i|) with Z ~ N(0, R) (or a
    multivariate t with ``df``), and the simultaneous (1 − α) intervals are Δ_i ± c·se_i
    with P(max |Z_j| ≤ c) = 1 − α. Integration by Genz & Bretz (2009) through scipy.

    Returns (adjusted p-values, critical values per comparison, c).

    >>> p, _, c = dunnett_adjust([0.5, 0.1], [0.2, 0.2], 0.02)
    >>> round(c, 2), bool(p[0] < 0.05 < p[1])
    (2.21, True)
    """
    est = np.asarray(estimates, dtype=np.float64)
    se = np.asarray(standard_errors, dtype=np.float64)
    if est.shape != se.shape or est.ndim != 1:
        raise ValueError("estimates and standard_errors must be 1-d and of equal length")
    if not (np.all(np.isfinite(se)) and np.all(se > 0)):
        raise ValueError("Dunnett adjustment needs finite, positive standard errors")
    corr = np.clip(control_variance_of_mean / np.outer(se, se), -1.0, 1.0)
    np.fill_diagonal(corr, 1.0)
    z = np.abs(est / se)
    adjusted = np.array([1.0 - _max_abs_cdf(float(zi), corr, df) for zi in z])
    target = 1.0 - alpha
    crit = float(
        optimize.brentq(lambda c: _max_abs_cdf(c, corr, df) - target, 0.5, 40.0, xtol=1e-7)
    )
    return np.clip(adjusted, 0.0, 1.0), np.full(est.size, crit), crit
