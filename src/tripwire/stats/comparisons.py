"""Two-arm comparisons from sufficient statistics: Welch t, two-proportion z, delta-method ratio.

Every function takes the control arm first, returns a :class:`ComparisonResult` with the
absolute effect (treatment − control) and the relative effect (see
:mod:`tripwire.stats.relative`), and runs vectorised when the statistics hold arrays.

Conventions (docs/statistics.md): Welch's unequal-variance t with Welch–Satterthwaite df
is the default for means and ratios (it equals scipy's ``ttest_ind(equal_var=False)`` and
gbstats' ``TwoSidedTTest``); the two-proportion z test uses the pooled SE for the p-value
and the unpooled (Wald) SE for the interval, without continuity correction (statsmodels'
``proportions_ztest`` + ``confint_proportions_2indep(method="wald")``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from tripwire.stats.relative import RelativeCI, critical_value, relative_effect, two_sided_p
from tripwire.stats.results import (
    ArmSummary,
    ComparisonResult,
    Effect,
    Status,
    nan_where,
    status_array,
)
from tripwire.stats.sufficient import MeanStats, RatioStats, Real, as_real

MIN_EXPECTED_COUNT = 5.0
"""Cochran's rule: the normal approximation to a 2×2 table needs every expected count ≥ 5."""


def welch_df(var_of_mean_c: Any, n_c: Any, var_of_mean_t: Any, n_t: Any) -> Any:
    r"""Welch–Satterthwaite degrees of freedom (Welch 1947, Biometrika 34:28).

    .. math:: \nu = (V_c + V_t)^2 / (V_c^2/(n_c − 1) + V_t^2/(n_t − 1)),\quad V_a = s_a^2/n_a
    """
    vc, vt = (
        np.asarray(var_of_mean_c, dtype=np.float64),
        np.asarray(var_of_mean_t, dtype=np.float64),
    )
    nc, nt = np.asarray(n_c, dtype=np.float64), np.asarray(n_t, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (vc + vt) ** 2 / (vc**2 / (nc - 1.0) + vt**2 / (nt - 1.0))


def build_comparison(
    method: str,
    *,
    control: ArmSummary,
    treatment: ArmSummary,
    difference: Any,
    df: Any,
    alpha: float,
    relative_ci: RelativeCI,
    insufficient: Any,
    message: str,
    control_mean_for_relative: Any = None,
    treatment_mean_for_relative: Any = None,
    p_value_se: Any = None,
    exact: Any = False,
    theta: Real | None = None,
    variance_reduction: Real | None = None,
) -> ComparisonResult:
    """Assemble a result from per-arm means and variances of the mean (shared by all tests).

    CI Δ ± t_{1−α/2,df}·se with se = √(V_c + V_t); statistic Δ / se (or Δ / ``p_value_se``
    when the p-value uses another SE, like the pooled z test); p = 2·P(T_df ≥ |stat|).
    """
    _check_alpha(alpha)
    vc = np.asarray(control.variance_of_mean, dtype=np.float64)
    vt = np.asarray(treatment.variance_of_mean, dtype=np.float64)
    diff = np.asarray(difference, dtype=np.float64)
    bad = np.asarray(insufficient, dtype=bool)
    se = np.sqrt(vc + vt)
    q = critical_value(alpha, df)
    test_se = se if p_value_se is None else np.asarray(p_value_se, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        statistic = diff / np.where(test_se > 0, test_se, np.nan)
        p = two_sided_p(statistic, df)
    absolute = Effect(
        as_real(diff),
        nan_where(bad, se),
        nan_where(bad, diff - q * se),
        nan_where(bad, diff + q * se),
        nan_where(bad, p),
    )
    mc = control.mean if control_mean_for_relative is None else control_mean_for_relative
    mt = treatment.mean if treatment_mean_for_relative is None else treatment_mean_for_relative
    rel = relative_effect(diff, mc, mt, vc, vt, alpha=alpha, df=df, method=relative_ci)
    relative = Effect(
        rel.estimate,
        nan_where(bad, rel.se),
        nan_where(bad, rel.ci_low),
        nan_where(bad, rel.ci_high),
        nan_where(bad, rel.p_value),
    )
    if np.any(np.asarray(mc) == 0):
        message = (
            message + "; " if message else ""
        ) + "relative effect undefined where the control mean is 0"
    return ComparisonResult(
        method=method,
        absolute=absolute,
        relative=relative,
        control=control,
        treatment=treatment,
        df=nan_where(bad, df),
        alpha=alpha,
        status=status_array(bad, exact),
        message=message,
        statistic=nan_where(bad, statistic),
        theta=theta,
        variance_reduction=variance_reduction,
    )


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1) (got {alpha!r})")


def insufficient_message(mask: Any, reason: str) -> str:
    """A result message naming which elements lack data and why ("" when none do)."""
    bad = np.asarray(mask, dtype=bool)
    if not bad.any():
        return ""
    if bad.ndim == 0:
        return f"insufficient data: {reason}"
    return f"insufficient data at indices {np.flatnonzero(bad).tolist()}: {reason}"


def welch_t_test(
    control: MeanStats,
    treatment: MeanStats,
    *,
    alpha: float = 0.05,
    relative_ci: RelativeCI = "delta",
) -> ComparisonResult:
    r"""Welch's unequal-variance t test of the difference in means (Welch 1947).

    .. math:: \Delta = \bar x_t − \bar x_c,\quad se = \sqrt{s_t^2/n_t + s_c^2/n_c},\quad
              t = \Delta / se \sim t_\nu

    with Satterthwaite's ν (:func:`welch_df`) and s² the unbiased variance. Equals
    ``scipy.stats.ttest_ind(equal_var=False)``. Needs n ≥ 2 per arm and some variance;
    otherwise the result has status ``insufficient_data``.

    >>> r = welch_t_test(MeanStats(100, 1000.0, 10400.0), MeanStats(100, 1100.0, 12500.0))
    >>> round(r.absolute.estimate, 3), round(r.absolute.p_value, 4), r.status
    (1.0, 0.0005, <Status.OK: 'ok'>)
    """
    vc = np.asarray(control.variance) / np.asarray(control.n, dtype=np.float64).clip(min=1.0)
    vt = np.asarray(treatment.variance) / np.asarray(treatment.n, dtype=np.float64).clip(min=1.0)
    small = (np.asarray(control.n) < 2) | (np.asarray(treatment.n) < 2)
    flat = ~small & (vc + vt <= 0)
    return build_comparison(
        "welch_t",
        control=ArmSummary(control.mean, as_real(vc), control.n),
        treatment=ArmSummary(treatment.mean, as_real(vt), treatment.n),
        difference=np.asarray(treatment.mean) - np.asarray(control.mean),
        df=welch_df(vc, control.n, vt, treatment.n),
        alpha=alpha,
        relative_ci=relative_ci,
        insufficient=small | flat,
        message=insufficient_message(small, "fewer than 2 units in an arm")
        + insufficient_message(flat, "zero variance in both arms"),
    )


def _wilson(k: Any, n: Any, z: float) -> tuple[Any, Any]:
    """Wilson score interval for k successes in n (Wilson 1927, JASA 22:209)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def two_proportion_z_test(
    control: MeanStats,
    treatment: MeanStats,
    *,
    alpha: float = 0.05,
    pooled: bool = True,
    relative_ci: RelativeCI = "delta",
    min_expected_count: float = MIN_EXPECTED_COUNT,
) -> ComparisonResult:
    r"""Two-proportion z test (e.g. Agresti 2013, *Categorical Data Analysis*, §3.1.2).

    .. math:: z = (\hat p_t − \hat p_c) / \sqrt{\bar p(1−\bar p)(1/n_t + 1/n_c)},\quad
              \bar p = (x_t + x_c)/(n_t + n_c)

    (``pooled=False`` uses √(p_t q_t/n_t + p_c q_c/n_c) for the p-value too); the interval
    is always the unpooled Wald interval Δ ± z_{1−α/2} √(p_t q_t/n_t + p_c q_c/n_c), and
    no continuity correction is applied. Matches statsmodels ``proportions_ztest``.

    Small samples: when an expected cell count of the 2×2 table is below
    ``min_expected_count`` (Cochran 1954), the p-value comes from Fisher's exact test and
    the interval from Newcombe's hybrid Wilson score method (Newcombe 1998, Stat Med
    17:873, method 10); status ``exact``. An empty arm gives ``insufficient_data``.

    >>> r = two_proportion_z_test(MeanStats.from_proportion(20000, 2041),
    ...                           MeanStats.from_proportion(20000, 2034))
    >>> round(r.absolute.estimate, 5), round(r.absolute.p_value, 4)
    (-0.00035, 0.9079)
    >>> two_proportion_z_test(MeanStats.from_proportion(12, 0),
    ...                       MeanStats.from_proportion(12, 3)).status
    <Status.EXACT: 'exact'>
    """
    for name, arm in (("control", control), ("treatment", treatment)):
        if not arm.is_binary_compatible:
            raise ValueError(
                f"two_proportion_z_test: {name} statistics are not from 0/1 values "
                "(need sum_sq == sum and 0 <= sum <= n); use welch_t_test for means"
            )
    nc, nt = np.asarray(control.n, dtype=np.float64), np.asarray(treatment.n, dtype=np.float64)
    xc, xt = np.asarray(control.sum, dtype=np.float64), np.asarray(treatment.sum, dtype=np.float64)
    empty = (nc < 1) | (nt < 1)
    safe_nc, safe_nt = np.where(nc < 1, 1.0, nc), np.where(nt < 1, 1.0, nt)
    pc, pt = xc / safe_nc, xt / safe_nt
    vc, vt = pc * (1 - pc) / safe_nc, pt * (1 - pt) / safe_nt
    pbar = (xc + xt) / (safe_nc + safe_nt)
    pooled_se = np.sqrt(pbar * (1 - pbar) * (1 / safe_nc + 1 / safe_nt))
    expected = np.minimum(np.minimum(nc, nt) * pbar, np.minimum(nc, nt) * (1 - pbar))
    exact = ~empty & (expected < min_expected_count)
    result = build_comparison(
        "two_proportion_z" if pooled else "two_proportion_z_unpooled",
        control=ArmSummary(as_real(np.where(nc < 1, np.nan, pc)), as_real(vc), control.n),
        treatment=ArmSummary(as_real(np.where(nt < 1, np.nan, pt)), as_real(vt), treatment.n),
        difference=np.where(empty, np.nan, pt - pc),
        df=np.full(np.shape(nc), np.inf),
        alpha=alpha,
        relative_ci=relative_ci,
        insufficient=empty,
        message=insufficient_message(empty, "an arm has no units"),
        p_value_se=pooled_se if pooled else None,
        exact=exact,
    )
    if not exact.any():
        return result
    return _exact_proportions(result, exact, xc, nc, xt, nt, alpha)


def _exact_proportions(
    result: ComparisonResult, exact: Any, xc: Any, nc: Any, xt: Any, nt: Any, alpha: float
) -> ComparisonResult:
    """Replace p-values and intervals by Fisher's exact test and Newcombe's interval where
    the normal approximation is inadequate."""
    z = float(stats.norm.ppf(1 - alpha / 2))
    shape = np.shape(exact)
    p_exact = np.asarray(result.absolute.p_value, dtype=np.float64).copy().reshape(shape)
    for idx in zip(*np.nonzero(np.atleast_1d(exact)), strict=False):
        at = idx if shape else ()
        table = [
            [
                int(round(float(np.asarray(xt)[at]))),
                int(round(float(np.asarray(nt)[at] - np.asarray(xt)[at]))),
            ],
            [
                int(round(float(np.asarray(xc)[at]))),
                int(round(float(np.asarray(nc)[at] - np.asarray(xc)[at]))),
            ],
        ]
        p_exact[at] = stats.fisher_exact(table).pvalue
    with np.errstate(divide="ignore", invalid="ignore"):
        lt, ut = _wilson(xt, nt, z)
        lc, uc = _wilson(xc, nc, z)
        pt, pc = xt / nt, xc / nc
        d = pt - pc
        low = d - np.sqrt((pt - lt) ** 2 + (uc - pc) ** 2)
        high = d + np.sqrt((ut - pt) ** 2 + (pc - lc) ** 2)
    a = result.absolute
    absolute = Effect(
        a.estimate,
        a.se,
        as_real(np.where(exact, low, a.ci_low)),
        as_real(np.where(exact, high, a.ci_high)),
        as_real(np.where(exact, p_exact, a.p_value)),
    )
    note = "Fisher exact p-value and Newcombe interval where an expected count < 5"
    return ComparisonResult(
        method=f"{result.method}+fisher_exact",
        absolute=absolute,
        relative=result.relative,
        control=result.control,
        treatment=result.treatment,
        df=result.df,
        alpha=alpha,
        status=result.status,
        message="; ".join(m for m in (result.message, note) if m),
        statistic=result.statistic,
    )


def ratio_variance(stats_: RatioStats) -> Real:
    r"""Per-unit delta-method variance of a ratio R = Σx/Σy (Deng, Knoblich & Lu 2018, eq. 3).

    .. math:: \sigma_R^2 = (s_x^2 − 2R\,s_{xy} + R^2 s_y^2) / \bar y^2

    so Var(R̂) = σ_R² / n. Unbiased (n − 1) moments.
    """
    n = np.asarray(stats_.n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.asarray(stats_.ratio)
        ybar = np.asarray(stats_.sum_den) / n
        var = (
            np.asarray(stats_.numerator.variance)
            - 2 * r * np.asarray(stats_.covariance)
            + r**2 * np.asarray(stats_.denominator.variance)
        ) / ybar**2
    return as_real(np.maximum(var, 0.0))


def delta_method_ratio_test(
    control: RatioStats,
    treatment: RatioStats,
    *,
    alpha: float = 0.05,
    relative_ci: RelativeCI = "delta",
) -> ComparisonResult:
    r"""Difference of two ratio metrics Σx/Σy with delta-method variances (Deng et al. 2018).

    Units (users) are independent but their sessions are not, so the variance of
    R̂ = Σx/Σy comes from per-unit moments: Var(R̂) = (s_x² − 2R s_xy + R² s_y²) / (n ȳ²)
    (:func:`ratio_variance`). Welch t on Δ = R_t − R_c with Satterthwaite df, matching
    gbstats' ``RatioStatistic`` and tea-tasting's ``RatioOfMeans``.

    >>> c = RatioStats.from_values([1, 0, 2, 1], [3, 1, 4, 2])
    >>> t = RatioStats.from_values([2, 1, 2, 1], [3, 2, 4, 2])
    >>> r = delta_method_ratio_test(c, t)
    >>> round(c.ratio, 3), round(t.ratio, 3), r.status
    (0.4, 0.545, <Status.OK: 'ok'>)
    """
    nc, nt = np.asarray(control.n, dtype=np.float64), np.asarray(treatment.n, dtype=np.float64)
    vc = np.asarray(ratio_variance(control)) / nc.clip(min=1.0)
    vt = np.asarray(ratio_variance(treatment)) / nt.clip(min=1.0)
    small = (nc < 2) | (nt < 2)
    no_den = ~small & ((np.asarray(control.sum_den) == 0) | (np.asarray(treatment.sum_den) == 0))
    flat = ~small & ~no_den & (vc + vt <= 0)
    vc, vt = np.where(np.isfinite(vc), vc, 0.0), np.where(np.isfinite(vt), vt, 0.0)
    return build_comparison(
        "delta_method_ratio",
        control=ArmSummary(control.ratio, as_real(vc), control.n),
        treatment=ArmSummary(treatment.ratio, as_real(vt), treatment.n),
        difference=np.asarray(treatment.ratio) - np.asarray(control.ratio),
        df=welch_df(vc, nc, vt, nt),
        alpha=alpha,
        relative_ci=relative_ci,
        insufficient=small | no_den | flat,
        message=insufficient_message(small, "fewer than 2 units in an arm")
        + insufficient_message(no_den, "denominator sums to 0 in an arm")
        + insufficient_message(flat, "zero variance in both arms"),
    )


__all__ = [
    "MIN_EXPECTED_COUNT",
    "Status",
    "build_comparison",
    "delta_method_ratio_test",
    "insufficient_message",
    "ratio_variance",
    "two_proportion_z_test",
    "welch_df",
    "welch_t_test",
]
