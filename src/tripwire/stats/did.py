"""Difference-in-differences on aggregated panels with cluster-robust standard errors.

Rows are cells of a panel (a unit or segment × a period), e.g. a metric per locale per day.
With D_it = treated_i · post_t, the two-way fixed-effects regression

    y_it = α_i + γ_t + τ D_it + ε_it

estimates the effect τ (with ``fixed_effects=False``: y = β₀ + β₁ treated + β₂ post +
τ D + ε, the 2 × 2 form). Errors of the same unit are serially correlated, which makes
ordinary OLS standard errors far too small (Bertrand, Duflo & Mullainathan 2004), so the
variance is the cluster-robust sandwich clustered by unit (CR1, as statsmodels'
``cov_type="cluster"``):

    V = G/(G−1) · (N−1)/(N−K) · (X'WX)⁻¹ (Σ_g s_g s_g') (X'WX)⁻¹,   s_g = Σ_{i∈g} x_i w_i e_i,

with inference on t(G − 1). Optional weights (e.g. cell sizes) give weighted least squares.

The unit and period effects are absorbed by alternating (weighted) demeaning rather than
dummy columns (Frisch–Waugh–Lovell: the coefficient, residuals and the cluster-robust
variance of τ are those of the full dummy regression), so memory stays O(rows) for panels
of thousands of segments × hundreds of periods. K in the small-sample factor counts the
absorbed effects as statsmodels does with explicit dummies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats


@dataclass(frozen=True)
class DiDResult:
    """Effect τ of treatment × post with cluster-robust inference (t with G − 1 df)."""

    effect: float
    se: float
    ci_lower: float
    ci_upper: float
    p_value: float
    t_stat: float
    df: int
    n_obs: int
    n_clusters: int
    alpha: float
    fixed_effects: bool


def _flag(name: str, values: ArrayLike, n: int) -> NDArray[np.float64]:
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) like outcome, got {arr.shape}")
    out = arr.astype(np.float64)
    bad = ~np.isin(out, (0.0, 1.0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name}[{i}] must be 0/1 or boolean, got {arr[i]!r}")
    return out


def _codes(name: str, values: ArrayLike, n: int) -> NDArray[np.intp]:
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) like outcome, got {arr.shape}")
    _, codes = np.unique(arr, return_inverse=True)
    return np.asarray(codes, dtype=np.intp)


def _absorb(
    columns: NDArray[np.float64], groupings: list[NDArray[np.intp]], w: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Residualise columns on the fixed effects of every grouping (alternating projections).

    One sweep is exact for balanced panels; unbalanced ones converge geometrically.
    """
    out = columns.copy()
    weight_sums = [np.bincount(g, weights=w) for g in groupings]
    scale = max(float(np.abs(columns).max()), 1.0)
    for _ in range(10_000):
        largest = 0.0
        for g, ws in zip(groupings, weight_sums, strict=True):
            for j in range(out.shape[1]):
                means = np.bincount(g, weights=w * out[:, j], minlength=ws.size) / ws
                out[:, j] -= means[g]
                largest = max(largest, float(np.abs(means).max()))
        if largest < 1e-11 * scale:
            break
    return out


def difference_in_differences(
    outcome: ArrayLike,
    treated: ArrayLike,
    post: ArrayLike,
    cluster: ArrayLike,
    *,
    period: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    fixed_effects: bool = True,
    alpha: float = 0.05,
) -> DiDResult:
    """Estimate τ in y = α_i + γ_t + τ·treated·post with standard errors clustered by unit.

    ``outcome``, ``treated`` (0/1), ``post`` (0/1) and ``cluster`` (unit/segment id) have one
    entry per panel cell; ``period`` (period id) gives the period fixed effects (default:
    ``post`` itself); ``weights`` (e.g. cell sizes) turn OLS into WLS. With
    ``fixed_effects=False`` the 2 × 2 regression with intercept, treated, post and their
    product is used instead of unit and period effects. Bertrand, Duflo & Mullainathan
    (2004); Cameron & Miller (2015) for the CR1 small-sample factors.

    >>> y = [1.0, 1.1, 2.0, 2.3, 1.0, 1.2, 2.6, 3.0]
    >>> treated = [0, 0, 0, 0, 1, 1, 1, 1]
    >>> post = [0, 0, 1, 1, 0, 0, 1, 1]
    >>> unit = [0, 1, 0, 1, 2, 3, 2, 3]
    >>> round(difference_in_differences(y, treated, post, unit).effect, 3)
    0.6
    """
    y = np.asarray(outcome, dtype=np.float64)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"outcome must be a non-empty 1-D array, got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"outcome[{int(np.argmin(np.isfinite(y)))}] is not finite")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    n = y.size
    tr = _flag("treated", treated, n)
    po = _flag("post", post, n)
    g = _codes("cluster", cluster, n)
    n_clusters = int(g.max()) + 1
    if n_clusters < 2:
        raise ValueError("need at least 2 clusters for cluster-robust standard errors")
    d = tr * po
    if not (d.any() and (d == 0).any()):
        raise ValueError(
            "treated·post must take both values 0 and 1 (need treated post cells "
            "and comparison cells)"
        )
    if weights is None:
        w = np.ones(n)
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (n,) or not np.all(np.isfinite(w) & (w > 0)):
            raise ValueError(f"weights must be {n} finite positive numbers")
    if fixed_effects:
        t_codes = _codes("period", po if period is None else period, n)
        absorbed = _absorb(np.column_stack([d, y]), [g, t_codes], w)
        k = 1 + n_clusters + int(t_codes.max())  # τ, unit effects, period effects but one
    else:
        others = np.column_stack([np.ones(n), tr, po])
        sw = np.sqrt(w)[:, None]
        coef = np.linalg.lstsq(others * sw, np.column_stack([d, y]) * sw, rcond=None)[0]
        absorbed = np.column_stack([d, y]) - others @ coef
        k = 4
    d_res, y_res = absorbed[:, 0], absorbed[:, 1]
    sxx = float(np.sum(w * d_res * d_res))
    if sxx <= 1e-10 * float(np.sum(w * d * d)):
        raise ValueError(
            "the design is collinear: treated·post is not identified (check that treatment "
            "varies within periods and the panel has pre and post periods for both groups)"
        )
    if n <= k:
        raise ValueError(f"{n} panel cells cannot identify {k} coefficients")
    beta = float(np.sum(w * d_res * y_res)) / sxx
    resid = y_res - beta * d_res
    scores = np.bincount(g, weights=w * d_res * resid, minlength=n_clusters)
    factor = n_clusters / (n_clusters - 1) * (n - 1) / (n - k)
    variance = factor * float(scores @ scores) / (sxx * sxx)
    effect = beta
    se = math.sqrt(max(variance, 0.0))
    df = n_clusters - 1
    t_stat = effect / se if se > 0 else math.copysign(math.inf, effect)
    crit = float(stats.t.isf(alpha / 2.0, df))
    p = float(2.0 * stats.t.sf(abs(t_stat), df))
    return DiDResult(
        effect=effect,
        se=se,
        ci_lower=effect - crit * se,
        ci_upper=effect + crit * se,
        p_value=p,
        t_stat=float(t_stat),
        df=df,
        n_obs=n,
        n_clusters=n_clusters,
        alpha=float(alpha),
        fixed_effects=fixed_effects,
    )
