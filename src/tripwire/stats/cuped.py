"""CUPED / regression adjustment with a pre-period covariate, for means and ratio metrics.

θ is estimated once on the pooled sample of both arms (Deng, Xu, Kohavi & Walker 2013,
WSDM, "CUPED"), as gbstats, tea-tasting and spotify-confidence do; every arm's mean is then
adjusted by the same θ, so the adjustment cannot create a difference (E[c̄_t − c̄_c] = 0
under randomisation) and only removes variance. The achieved variance reduction is
reported; in large samples it approaches ρ², ρ the outcome–covariate correlation.

The relative effect divides the adjusted difference by the *unadjusted* control mean
(gbstats' convention; tea-tasting divides by the adjusted one).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from tripwire.stats.comparisons import build_comparison, insufficient_message, welch_df
from tripwire.stats.relative import RelativeCI
from tripwire.stats.results import ArmSummary, ComparisonResult
from tripwire.stats.sufficient import CupedMeanStats, CupedRatioStats, Real, as_real, covariance


def _safe_div(num: Any, den: Any) -> Any:
    den = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, np.asarray(num) / np.where(den != 0, den, 1.0), 0.0)


def cuped_mean_test(
    control: CupedMeanStats,
    treatment: CupedMeanStats,
    *,
    alpha: float = 0.05,
    relative_ci: RelativeCI = "delta",
    theta_estimator: Literal["total", "within"] = "total",
) -> ComparisonResult:
    r"""Welch t test on CUPED-adjusted means (Deng et al. 2013).

    .. math:: \theta = \widehat{Cov}(y, c) / \widehat{Var}(c) \text{ on both arms pooled},\quad
              \tilde y_a = \bar y_a − \theta(\bar c_a − \bar c),\quad
              s^2_{\tilde y,a} = s^2_{y,a} + \theta^2 s^2_{c,a} − 2\theta s_{yc,a}

    then Welch's test on ỹ_t − ỹ_c with Var = s²_ỹ/n per arm and Satterthwaite df
    (θ = 0 when the covariate has no variance). Identical to gbstats'
    ``RegressionAdjustedStatistic`` and tea-tasting's ``Mean(value, covariate)``.

    ``theta_estimator="within"`` pools the within-arm moments instead,
    θ_w = Σ_a S_{yc,a} / Σ_a S_{cc,a} (S = centred sums of products); the estimate is then
    exactly the OLS coefficient of T in y ~ 1 + T + c (Frisch–Waugh–Lovell), while the SE
    stays the heteroskedasticity-robust per-arm Welch one.

    >>> c = CupedMeanStats.from_values([1.0, 2.0, 3.0, 4.0], [1.1, 1.9, 3.2, 3.9])
    >>> t = CupedMeanStats.from_values([2.0, 3.0, 4.0, 5.0], [0.9, 2.1, 2.8, 4.1])
    >>> r = cuped_mean_test(c, t)
    >>> round(r.absolute.estimate, 3), r.variance_reduction > 0.9
    (1.049, True)
    """
    total = control + treatment
    if theta_estimator == "total":
        theta = _safe_div(total.covariance, total.covariate.variance)
    elif theta_estimator == "within":
        nc1 = np.asarray(control.n, dtype=np.float64) - 1.0
        nt1 = np.asarray(treatment.n, dtype=np.float64) - 1.0
        s_yc = nc1 * np.asarray(control.covariance) + nt1 * np.asarray(treatment.covariance)
        s_cc = nc1 * np.asarray(control.covariate.variance) + nt1 * np.asarray(
            treatment.covariate.variance
        )
        theta = _safe_div(s_yc, s_cc)
    else:
        raise ValueError(f"theta_estimator must be 'total' or 'within' (got {theta_estimator!r})")
    cbar = np.asarray(total.covariate.mean)
    arms = []
    for arm in (control, treatment):
        n = np.asarray(arm.n, dtype=np.float64)
        adjusted = np.asarray(arm.outcome.mean) - theta * (np.asarray(arm.covariate.mean) - cbar)
        var = (
            np.asarray(arm.outcome.variance)
            + theta**2 * np.asarray(arm.covariate.variance)
            - 2 * theta * np.asarray(arm.covariance)
        )
        arms.append((adjusted, np.maximum(var, 0.0) / n.clip(min=1.0), n))
    (mc, vc, nc), (mt, vt, nt) = arms
    raw_vc = np.asarray(control.outcome.variance) / nc.clip(min=1.0)
    raw_vt = np.asarray(treatment.outcome.variance) / nt.clip(min=1.0)
    small = (nc < 2) | (nt < 2)
    flat = ~small & (vc + vt <= 0)
    return build_comparison(
        "cuped_mean" if theta_estimator == "total" else "cuped_mean_within_theta",
        control=ArmSummary(as_real(mc), as_real(vc), control.n),
        treatment=ArmSummary(as_real(mt), as_real(vt), treatment.n),
        difference=mt - mc,
        df=welch_df(vc, nc, vt, nt),
        alpha=alpha,
        relative_ci=relative_ci,
        insufficient=small | flat,
        message=insufficient_message(small, "fewer than 2 units in an arm")
        + insufficient_message(flat, "zero variance in both arms"),
        control_mean_for_relative=control.outcome.mean,
        treatment_mean_for_relative=treatment.outcome.mean,
        theta=as_real(theta),
        variance_reduction=as_real(1.0 - _safe_div(vc + vt, raw_vc + raw_vt)),
    )


def _ratio_cov(s: CupedRatioStats, left: tuple[str, str], right: tuple[str, str]) -> Any:
    """Per-unit covariance of two linearised ratios ln/ld and rn/rd (delta method).

    Cov(l_L, l_R) with l = (num − R·den) / mean(den):
    [C(ln,rn) − R_R C(ln,rd) − R_L C(ld,rn) + R_L R_R C(ld,rd)] / (mean(ld) mean(rd)).
    """
    sums = {"y": s.sum_num, "d": s.sum_den, "cy": s.sum_cov_num, "cd": s.sum_cov_den}
    cross = {
        ("y", "y"): s.sum_num_sq, ("d", "d"): s.sum_den_sq, ("cy", "cy"): s.sum_cov_num_sq,
        ("cd", "cd"): s.sum_cov_den_sq, ("y", "d"): s.sum_num_den, ("cy", "cd"): s.sum_cov_num_cov_den,
        ("y", "cy"): s.sum_num_cov_num, ("y", "cd"): s.sum_num_cov_den,
        ("d", "cy"): s.sum_den_cov_num, ("d", "cd"): s.sum_den_cov_den,
    }  # fmt: skip

    def cov(a: str, b: str) -> Any:
        key = (a, b) if (a, b) in cross else (b, a)
        return np.asarray(covariance(s.n, sums[a], sums[b], cross[key]))

    n = np.asarray(s.n, dtype=np.float64)
    ln, ld = left
    rn, rd = right
    r_left, r_right = _safe_div(sums[ln], sums[ld]), _safe_div(sums[rn], sums[rd])
    with np.errstate(divide="ignore", invalid="ignore"):  # empty cells give NaN, handled upstream
        mean_ld, mean_rd = np.asarray(sums[ld]) / n, np.asarray(sums[rd]) / n
        return (
            cov(ln, rn)
            - r_right * cov(ln, rd)
            - r_left * cov(ld, rn)
            + r_left * r_right * cov(ld, rd)
        ) / (mean_ld * mean_rd)


_OUTCOME = ("y", "d")
_COVARIATE = ("cy", "cd")


def cuped_ratio_test(
    control: CupedRatioStats,
    treatment: CupedRatioStats,
    *,
    alpha: float = 0.05,
    relative_ci: RelativeCI = "delta",
) -> ComparisonResult:
    r"""CUPED for a ratio metric with a ratio covariate (Deng et al. 2013, §3.3; Deng,
    Knoblich & Lu 2018).

    Both ratios are linearised per unit, l_y = (y − R_y d)/d̄ and l_c = (c_y − R_c c_d)/c̄_d;
    θ = Cov(l_y, l_c) / Var(l_c) on both arms pooled; per arm
    R̃_a = R_{y,a} − θ (R_{c,a} − R_c) and
    Var(R̃_a) = [Var(l_y) + θ² Var(l_c) − 2θ Cov(l_y, l_c)] / n_a; then Welch's test.
    Identical to tea-tasting's ``RatioOfMeans(num, den, cov_num, cov_den)``; the relative
    effect divides by the unadjusted control ratio.

    >>> rng = __import__("numpy").random.default_rng(0)
    >>> def arm(k):
    ...     d = rng.poisson(5, k) + 1; cd = rng.poisson(5, k) + 1
    ...     q = rng.beta(3, 7, k)
    ...     return CupedRatioStats.from_values(rng.binomial(d, q), d, rng.binomial(cd, q), cd)
    >>> r = cuped_ratio_test(arm(2000), arm(2000))
    >>> r.status, bool(r.variance_reduction > 0)
    (<Status.OK: 'ok'>, True)
    """
    total = control + treatment
    theta = _safe_div(
        _ratio_cov(total, _OUTCOME, _COVARIATE), _ratio_cov(total, _COVARIATE, _COVARIATE)
    )
    rc_total = _safe_div(total.sum_cov_num, total.sum_cov_den)
    arms = []
    for arm in (control, treatment):
        n = np.asarray(arm.n, dtype=np.float64)
        ry = _safe_div(arm.sum_num, arm.sum_den)
        rc = _safe_div(arm.sum_cov_num, arm.sum_cov_den)
        var_y = _ratio_cov(arm, _OUTCOME, _OUTCOME)
        var = (
            var_y
            + theta**2 * _ratio_cov(arm, _COVARIATE, _COVARIATE)
            - 2 * theta * _ratio_cov(arm, _OUTCOME, _COVARIATE)
        )
        ok = np.isfinite(var)
        arms.append(
            (ry - theta * (rc - rc_total), np.where(ok, np.maximum(var, 0.0), 0.0) / n.clip(min=1.0), n,
             np.where(np.isfinite(var_y), var_y, 0.0) / n.clip(min=1.0), ry)
        )  # fmt: skip
    (mc, vc, nc, raw_vc, rc_ctl), (mt, vt, nt, raw_vt, rt_trt) = arms
    small = (nc < 2) | (nt < 2)
    no_den = ~small & (
        (np.asarray(control.sum_den) == 0)
        | (np.asarray(treatment.sum_den) == 0)
        | (np.asarray(control.sum_cov_den) == 0)
        | (np.asarray(treatment.sum_cov_den) == 0)
    )
    flat = ~small & ~no_den & (vc + vt <= 0)
    return build_comparison(
        "cuped_ratio",
        control=ArmSummary(as_real(mc), as_real(vc), control.n),
        treatment=ArmSummary(as_real(mt), as_real(vt), treatment.n),
        difference=mt - mc,
        df=welch_df(vc, nc, vt, nt),
        alpha=alpha,
        relative_ci=relative_ci,
        insufficient=small | no_den | flat,
        message=insufficient_message(small, "fewer than 2 units in an arm")
        + insufficient_message(no_den, "a denominator sums to 0 in an arm")
        + insufficient_message(flat, "zero variance in both arms"),
        control_mean_for_relative=as_real(rc_ctl),
        treatment_mean_for_relative=as_real(rt_trt),
        theta=as_real(theta),
        variance_reduction=as_real(1.0 - _safe_div(vc + vt, raw_vc + raw_vt)),
    )


def variance_reduction_from_correlation(rho: Real) -> Real:
    """Expected large-sample CUPED variance reduction ρ² (Deng et al. 2013, eq. 4)."""
    return as_real(np.asarray(rho, dtype=np.float64) ** 2)
