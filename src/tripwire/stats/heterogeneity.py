"""Treatment-effect heterogeneity across cohorts (locales, devices, tenure bands).

Per-cohort effects come from the vectorised tests (statistics with one array element per
cohort). This module asks three questions of them: do the cohorts differ more than noise
allows (Cochran's Q, I²), what is each cohort's effect once its noise is accounted for
(empirical-Bayes partial pooling toward the overall effect), and does the aggregate point
the other way from the cohorts that hold most of the traffic (Simpson's paradox).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from tripwire.stats.results import ComparisonResult, Status
from tripwire.stats.sufficient import FloatArray


def _effects(estimates: ArrayLike, standard_errors: ArrayLike) -> tuple[FloatArray, FloatArray]:
    est = np.atleast_1d(np.asarray(estimates, dtype=np.float64))
    se = np.atleast_1d(np.asarray(standard_errors, dtype=np.float64))
    if est.shape != se.shape or est.ndim != 1:
        raise ValueError(
            f"estimates {est.shape} and standard errors {se.shape} must be 1-d, equal length"
        )
    bad = ~np.isfinite(est) | ~np.isfinite(se) | (se <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"cohort {i}: estimate {est[i]!r} and standard error {se[i]!r} must be finite with se > 0 "
            "(drop cohorts whose comparison has insufficient data)"
        )
    return est, se


@dataclass(frozen=True)
class HeterogeneityResult:
    """Cochran's Q test of equal effects, with I² and the DerSimonian–Laird τ²."""

    q: float
    df: int
    p_value: float
    i_squared: float
    tau_squared: float
    fixed_effect: float
    fixed_effect_se: float
    status: Status


def cochran_q(estimates: ArrayLike, standard_errors: ArrayLike) -> HeterogeneityResult:
    r"""Cochran's Q (Cochran 1954, Biometrics 10:101), I² (Higgins & Thompson 2002, Stat Med
    21:1539) and τ² (DerSimonian & Laird 1986, Control Clin Trials 7:177).

    .. math:: w_i = 1/se_i^2,\ \hat\theta_F = \frac{\sum w_i\hat\theta_i}{\sum w_i},\
              Q = \sum w_i(\hat\theta_i − \hat\theta_F)^2 \sim \chi^2_{k−1},\
              I^2 = \max(0, (Q − (k−1))/Q),\
              \tau^2 = \max\left(0, \frac{Q − (k−1)}{\sum w − \sum w^2/\sum w}\right)

    >>> r = cochran_q([0.195, -0.031, -0.083], [0.047, 0.058, 0.075])
    >>> round(r.q, 2), r.df, r.p_value < 0.01, round(r.i_squared, 2)
    (14.27, 2, True, 0.86)
    """
    est, se = _effects(estimates, standard_errors)
    k = est.size
    w = 1.0 / se**2
    fixed = float((w * est).sum() / w.sum())
    if k < 2:
        return HeterogeneityResult(
            0.0,
            0,
            float("nan"),
            0.0,
            0.0,
            fixed,
            float(1 / np.sqrt(w.sum())),
            Status.INSUFFICIENT_DATA,
        )
    q = float((w * (est - fixed) ** 2).sum())
    df = k - 1
    i2 = max(0.0, (q - df) / q) if q > 0 else 0.0
    tau2 = max(0.0, (q - df) / (w.sum() - (w**2).sum() / w.sum()))
    return HeterogeneityResult(
        q, df, float(stats.chi2.sf(q, df)), i2, tau2, fixed, float(1 / np.sqrt(w.sum())), Status.OK
    )


@dataclass(frozen=True)
class PartialPoolingResult:
    """Raw and partially pooled cohort effects.

    ``shrinkage[i]`` = B_i ∈ [0, 1] is how far cohort i moved toward ``overall``
    (1 = all the way); ``pooled_se`` is the approximate posterior standard deviation.
    """

    raw: FloatArray
    raw_se: FloatArray
    pooled: FloatArray
    pooled_se: FloatArray
    shrinkage: FloatArray
    overall: float
    overall_se: float
    tau_squared: float


def partial_pooling(
    estimates: ArrayLike,
    standard_errors: ArrayLike,
    *,
    overall: float | None = None,
    overall_se: float | None = None,
) -> PartialPoolingResult:
    r"""Empirical-Bayes (normal–normal) shrinkage of cohort effects toward the overall effect.

    Model θ̂_i ~ N(θ_i, se_i²), θ_i ~ N(μ, τ²), τ² by DerSimonian–Laird (:func:`cochran_q`).
    With B_i = se_i² / (se_i² + τ²) (Efron & Morris 1975, JASA 70:311; Morris 1983, JASA
    78:47):

    .. math:: \tilde\theta_i = \mu + (1 − B_i)(\hat\theta_i − \mu),\quad
              Var(\tilde\theta_i) ≈ (1 − B_i)\,se_i^2 + B_i^2 Var(\hat\mu)

    μ defaults to the random-effects mean Σw*θ̂/Σw*, w* = 1/(se² + τ²); pass ``overall``
    (and its ``overall_se``) to shrink toward the experiment's aggregate effect instead.
    τ² = 0 (no detectable heterogeneity) pools every cohort to μ.

    >>> r = partial_pooling([0.20, -0.03, -0.08], [0.05, 0.06, 0.08])
    >>> [round(float(x), 3) for x in r.pooled]
    [0.183, -0.02, -0.053]
    """
    est, se = _effects(estimates, standard_errors)
    tau2 = cochran_q(est, se).tau_squared if est.size > 1 else 0.0
    w_star = 1.0 / (se**2 + tau2)
    if overall is None:
        mu = float((w_star * est).sum() / w_star.sum())
        mu_var = float(1.0 / w_star.sum())
    else:
        if not np.isfinite(overall):
            raise ValueError(f"overall must be finite (got {overall!r})")
        mu = float(overall)
        mu_var = float(overall_se) ** 2 if overall_se is not None else 0.0
    shrink = se**2 / (se**2 + tau2)
    pooled = mu + (1.0 - shrink) * (est - mu)
    pooled_se = np.sqrt((1.0 - shrink) * se**2 + shrink**2 * mu_var)
    return PartialPoolingResult(
        est, se, pooled, pooled_se, shrink, mu, float(np.sqrt(mu_var)), float(tau2)
    )


@dataclass(frozen=True)
class SimpsonResult:
    """Whether the aggregate effect's sign contradicts the cohorts holding most traffic."""

    flag: bool
    aggregate_sign: int
    majority_sign: int
    majority_share: float
    message: str


def simpson_paradox(
    aggregate_effect: float,
    cohort_effects: ArrayLike,
    cohort_weights: ArrayLike,
    *,
    majority: float = 0.5,
) -> SimpsonResult:
    """Flag when sign(aggregate) differs from the sign shared by cohorts holding more than
    ``majority`` of the traffic (Simpson 1951, JRSS B 13:238; Blyth 1972).

    Cohorts whose effect is exactly 0 count for neither sign; if no sign holds a majority
    there is nothing to contradict and the flag is off.

    >>> simpson_paradox(0.01, [-0.02, -0.01, 0.08], [0.4, 0.3, 0.3]).flag
    True
    """
    eff = np.atleast_1d(np.asarray(cohort_effects, dtype=np.float64))
    w = np.atleast_1d(np.asarray(cohort_weights, dtype=np.float64))
    if eff.shape != w.shape:
        raise ValueError("cohort_effects and cohort_weights must have the same length")
    if not (np.all(np.isfinite(eff)) and np.all(np.isfinite(w)) and np.all(w >= 0)) or w.sum() <= 0:
        raise ValueError("cohort effects must be finite and weights finite, >= 0, not all 0")
    share = w / w.sum()
    pos, neg = float(share[eff > 0].sum()), float(share[eff < 0].sum())
    agg = int(np.sign(aggregate_effect))
    if pos > majority:
        sign, held = 1, pos
    elif neg > majority:
        sign, held = -1, neg
    else:
        return SimpsonResult(False, agg, 0, max(pos, neg), "no sign holds a majority of traffic")
    flag = agg != 0 and agg != sign
    message = (
        f"aggregate effect is {'positive' if agg > 0 else 'negative'} but cohorts holding "
        f"{held:.0%} of traffic have {'positive' if sign > 0 else 'negative'} effects"
        if flag
        else ""
    )
    return SimpsonResult(flag, agg, sign, held, message)


@dataclass(frozen=True)
class CohortAnalysis:
    """Everything the scorecard shows about cohorts for one metric."""

    cohorts: tuple[str, ...]
    scale: str
    raw: FloatArray
    raw_se: FloatArray
    usable: NDArray[np.bool_]
    heterogeneity: HeterogeneityResult
    pooling: PartialPoolingResult
    simpson: SimpsonResult


def analyze_cohorts(
    cohorts: Sequence[str],
    per_cohort: ComparisonResult,
    aggregate: ComparisonResult,
    *,
    relative: bool = True,
    weights: ArrayLike | None = None,
) -> CohortAnalysis:
    """Heterogeneity, partial pooling toward the aggregate and the Simpson flag.

    ``per_cohort`` is a vectorised comparison (one element per cohort), ``aggregate`` the
    scalar comparison of the whole experiment; cohorts with insufficient data are left out
    of Q and pooling (their pooled value is NaN). Weights default to the cohort's units.
    """
    effect = per_cohort.relative if relative else per_cohort.absolute
    agg = aggregate.relative if relative else aggregate.absolute
    est = np.atleast_1d(np.asarray(effect.estimate, dtype=np.float64))
    se = np.atleast_1d(np.asarray(effect.se, dtype=np.float64))
    if len(cohorts) != est.size:
        raise ValueError(f"{len(cohorts)} cohort names for {est.size} cohort results")
    usable = np.isfinite(est) & np.isfinite(se) & (se > 0)
    if usable.sum() == 0:
        raise ValueError("no cohort has enough data for an effect estimate")
    w = (
        np.atleast_1d(np.asarray(per_cohort.control.n, dtype=np.float64))
        + np.atleast_1d(np.asarray(per_cohort.treatment.n, dtype=np.float64))
        if weights is None
        else np.atleast_1d(np.asarray(weights, dtype=np.float64))
    )
    het = cochran_q(est[usable], se[usable])
    pooled_part = partial_pooling(
        est[usable], se[usable], overall=float(agg.estimate), overall_se=float(agg.se)
    )
    pooled = np.full(est.size, np.nan)
    pooled_se = np.full(est.size, np.nan)
    shrink = np.full(est.size, np.nan)
    pooled[usable], pooled_se[usable], shrink[usable] = (
        pooled_part.pooled,
        pooled_part.pooled_se,
        pooled_part.shrinkage,
    )
    pooling = PartialPoolingResult(
        est,
        se,
        pooled,
        pooled_se,
        shrink,
        pooled_part.overall,
        pooled_part.overall_se,
        pooled_part.tau_squared,
    )
    simpson = simpson_paradox(float(agg.estimate), est[usable], w[usable])
    return CohortAnalysis(
        tuple(cohorts),
        "relative" if relative else "absolute",
        est,
        se,
        usable,
        het,
        pooling,
        simpson,
    )
