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


@dataclass(frozen=True)
class PreTrendResult:
    """Event-study check of parallel pre-trends.

    ``periods[j]`` and ``estimates[j]``/``ses[j]``: the treated-minus-comparison difference
    in period j relative to ``reference_period`` (the last pre period), for every period but
    the reference. The joint test covers the pre periods only: F = b'V⁻¹b / q on
    F(q, G − 1); a small p-value says the groups were already diverging before treatment.
    """

    periods: tuple[str, ...]
    estimates: tuple[float, ...]
    ses: tuple[float, ...]
    reference_period: str
    n_pre_tested: int
    f_stat: float
    p_value: float
    df: int


def pre_trend_test(
    outcome: ArrayLike,
    treated: ArrayLike,
    post: ArrayLike,
    cluster: ArrayLike,
    period: ArrayLike,
    *,
    weights: ArrayLike | None = None,
) -> PreTrendResult:
    """Test parallel pre-trends with an event-study regression clustered by unit.

    y_it = α_i + γ_t + Σ_{s ≠ ref} δ_s · treated_i · 1[t = s] + ε_it, with ref the last
    pre-treatment period; H₀: δ_s = 0 for every pre period s (Wald F with the CR1 covariance,
    denominator df G − 1). The post-period δ_s trace the effect over time. Period ids must
    sort in time order. Bertrand, Duflo & Mullainathan (2004); Roth (2022) on what a
    pre-test can and cannot rule out (low power with few pre periods).
    """
    y = np.asarray(outcome, dtype=np.float64)
    if y.ndim != 1 or y.size == 0 or not np.all(np.isfinite(y)):
        raise ValueError("outcome must be a non-empty, finite 1-D array")
    n = y.size
    tr = _flag("treated", treated, n)
    po = _flag("post", post, n)
    g = _codes("cluster", cluster, n)
    per = np.asarray(period)
    if per.shape != (n,):
        raise ValueError(f"period must have shape ({n},) like outcome, got {per.shape}")
    labels, t_codes = np.unique(per, return_inverse=True)
    n_periods = labels.size
    post_of = np.full(n_periods, -1.0)
    for j in range(n_periods):
        vals = np.unique(po[t_codes == j])
        if vals.size != 1:
            raise ValueError(f"post must be constant within a period; period {labels[j]!r} mixes")
        post_of[j] = vals[0]
    pre = np.flatnonzero(post_of == 0)
    if pre.size < 2:
        raise ValueError("need at least 2 pre-treatment periods to test pre-trends")
    post_periods = np.flatnonzero(post_of == 1)
    if post_periods.size and post_periods.min() < pre.max():
        raise ValueError("period ids must sort in time order with every pre period first")
    ref = int(pre.max())
    n_clusters = int(g.max()) + 1
    others = [j for j in range(n_periods) if j != ref]
    x = np.column_stack([tr * (t_codes == j) for j in others])
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or not np.all(np.isfinite(w) & (w > 0)):
        raise ValueError(f"weights must be {n} finite positive numbers")
    absorbed = _absorb(np.column_stack([x, y]), [g, t_codes.astype(np.intp)], w)
    xr, yr = absorbed[:, :-1], absorbed[:, -1]
    bread_inv = xr.T @ (xr * w[:, None])
    if np.linalg.matrix_rank(bread_inv) < xr.shape[1]:
        raise ValueError(
            "event-study design is collinear: need treated and comparison units "
            "observed in every period"
        )
    bread = np.linalg.inv(bread_inv)
    beta = bread @ (xr.T @ (w * yr))
    resid = yr - xr @ beta
    weighted = xr * (w * resid)[:, None]
    scores = np.column_stack(
        [np.bincount(g, weights=col, minlength=n_clusters) for col in weighted.T]
    )
    k = xr.shape[1] + n_clusters + n_periods - 1
    factor = n_clusters / (n_clusters - 1) * (n - 1) / (n - k)
    cov = factor * bread @ (scores.T @ scores) @ bread
    tested = [i for i, j in enumerate(others) if post_of[j] == 0]
    q = len(tested)
    if q > n_clusters - 1:
        raise ValueError(
            f"{q} pre-period coefficients cannot be tested with {n_clusters} "
            "clusters; use fewer pre periods"
        )
    b = beta[tested]
    v = cov[np.ix_(tested, tested)]
    f_stat = float(b @ np.linalg.solve(v, b)) / q
    p = float(stats.f.sf(f_stat, q, n_clusters - 1))
    return PreTrendResult(
        periods=tuple(str(labels[j]) for j in others),
        estimates=tuple(float(v_) for v_ in beta),
        ses=tuple(float(math.sqrt(max(c, 0.0))) for c in np.diag(cov)),
        reference_period=str(labels[ref]),
        n_pre_tested=q,
        f_stat=f_stat,
        p_value=p,
        df=n_clusters - 1,
    )
