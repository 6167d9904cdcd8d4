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


_HERMITE_NODES, _HERMITE_WEIGHTS = np.polynomial.hermite_e.hermegauss(96)
_HERMITE_WEIGHTS = _HERMITE_WEIGHTS / np.sqrt(2.0 * np.pi)
_LEGENDRE_NODES, _LEGENDRE_WEIGHTS = np.polynomial.legendre.leggauss(64)


def _max_abs_cdf(c: float, loadings: FloatArray, df: float) -> float:
    """P(max_i |Z_i| ≤ c) for equicorrelated-by-factor Z_i = λ_i W + √(1 − λ_i²) E_i.

    With a shared control, Corr(Z_i, Z_j) = λ_i λ_j exactly (λ_i = √V_c / se_i), so the
    k-dimensional probability is a 1-d integral over W ~ N(0, 1) (Dunnett 1955, §3):
    ∫ φ(w) Π_i [Φ((c − λ_i w)/√(1 − λ_i²)) − Φ((−c − λ_i w)/√(1 − λ_i²))] dw, by 96-point
    Gauss–Hermite quadrature. For a multivariate t, c is scaled by S = √(χ²_df / df),
    integrated over S's quantiles by 64-point Gauss–Legendre.
    """
    lam = np.clip(loadings, 0.0, 1.0 - 1e-12)[:, None, None]
    scale = np.sqrt(1.0 - lam**2)
    if np.isfinite(df):
        u = (_LEGENDRE_NODES + 1.0) / 2.0
        s = np.sqrt(stats.chi2.ppf(u, df) / df)[None, :, None]
        s_weights = _LEGENDRE_WEIGHTS / 2.0
    else:
        s = np.ones((1, 1, 1))
        s_weights = np.ones(1)
    w = _HERMITE_NODES[None, None, :]
    inside = stats.norm.cdf((c * s - lam * w) / scale) - stats.norm.cdf((-c * s - lam * w) / scale)
    value = (np.prod(inside, axis=0) @ _HERMITE_WEIGHTS) @ s_weights
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
    with P(max |Z_j| ≤ c) = 1 − α. Because R_ij = λ_i λ_j (one shared factor, the control
    mean), the probability is a 1-d (2-d for t) integral computed by quadrature, which
    agrees with ``scipy.stats.multivariate_normal.cdf`` and ``scipy.stats.dunnett`` and is
    fast enough for many metrics.

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
    if not control_variance_of_mean >= 0:
        raise ValueError(
            f"control_variance_of_mean must be >= 0 (got {control_variance_of_mean!r})"
        )
    loadings = np.sqrt(control_variance_of_mean) / se
    z = np.abs(est / se)
    adjusted = np.array([1.0 - _max_abs_cdf(float(zi), loadings, df) for zi in z])
    target = 1.0 - alpha
    crit = float(
        optimize.brentq(lambda c: _max_abs_cdf(c, loadings, df) - target, 0.1, 40.0, xtol=1e-9)
    )
    return np.clip(adjusted, 0.0, 1.0), np.full(est.size, crit), crit
