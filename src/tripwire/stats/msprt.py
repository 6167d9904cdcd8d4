"""Always-valid inference by the mixture sequential probability ratio test (mSPRT).

For an asymptotically normal estimate θ̂_n of an effect θ with variance V_n (e.g. a
difference in means, V_n = σ²_A/n_A + σ²_B/n_B), mixing the likelihood ratio over a normal
prior θ ~ N(θ₀, τ²) gives the closed form (Robbins 1970; Johari et al. 2017, eq. 11)

    Λ_n = √(V_n / (V_n + τ²)) · exp( τ² (θ̂_n − θ₀)² / (2 V_n (V_n + τ²)) ).

Λ_n is a non-negative martingale under H₀: θ = θ₀, so by Ville's inequality
P(sup_n Λ_n ≥ 1/α) ≤ α. Hence the always-valid p-value p_n = min(1, min_{m≤n} 1/Λ_m)
may be monitored after every observation without inflating type-I error, and the set of θ₀
with Λ_n(θ₀) < 1/α is a confidence sequence:

    θ̂_n ± √( V_n (V_n + τ²)/τ² · (2 ln(1/α) + ln((V_n + τ²)/V_n)) ),

intersected over time (Johari, Koomen, Pekelis & Walsh 2017; Howard et al. 2021).

τ² sets where the test is most sensitive: :func:`mixing_variance` picks the τ² that makes
the confidence sequence narrowest at a planned variance (the end of the planned runtime).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize


@dataclass(frozen=True)
class MSPRTResult:
    """Running always-valid inference over a sequence of looks.

    Arrays are aligned with the input looks. ``p_value`` is the running always-valid
    p-value, ``ci_lower``/``ci_upper`` the running-intersection confidence sequence,
    ``first_rejection`` the 0-based index of the first look with p ≤ α (None if never).
    """

    estimate: NDArray[np.float64]
    variance: NDArray[np.float64]
    p_value: NDArray[np.float64]
    ci_lower: NDArray[np.float64]
    ci_upper: NDArray[np.float64]
    alpha: float
    mixing_variance: float
    null: float
    first_rejection: int | None

    @property
    def rejected(self) -> bool:
        """Whether H₀ was rejected at some look."""
        return self.first_rejection is not None


def _validate(
    estimates: ArrayLike, variances: ArrayLike, tau2: float, alpha: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    est = np.atleast_1d(np.asarray(estimates, dtype=np.float64))
    var = np.atleast_1d(np.asarray(variances, dtype=np.float64))
    if est.ndim != 1 or est.shape != var.shape:
        raise ValueError(
            f"estimates and variances must be 1-D and the same length, got {est.shape} and "
            f"{var.shape}"
        )
    if not np.all(np.isfinite(est)):
        raise ValueError(f"estimates[{int(np.argmin(np.isfinite(est)))}] is not finite")
    bad = ~(np.isfinite(var) & (var > 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"variances[{i}] must be finite and > 0, got {var[i]!r}")
    if not (math.isfinite(tau2) and tau2 > 0):
        raise ValueError(f"mixing variance tau2 must be > 0, got {tau2!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return est, var


def mixture_likelihood_ratio(
    estimates: ArrayLike, variances: ArrayLike, tau2: float, null: float = 0.0
) -> NDArray[np.float64]:
    """Λ_n = √(V/(V+τ²)) exp(τ²(θ̂−θ₀)² / (2V(V+τ²))) at each look (Johari et al. 2017).

    >>> float(mixture_likelihood_ratio([0.0], [1.0], tau2=1.0)[0]) == math.sqrt(0.5)
    True
    """
    est, var = _validate(estimates, variances, tau2, 0.05)
    log_lr = 0.5 * np.log(var / (var + tau2)) + tau2 * (est - null) ** 2 / (
        2.0 * var * (var + tau2)
    )
    return np.asarray(np.exp(np.minimum(log_lr, 700.0)), dtype=np.float64)


def msprt(
    estimates: ArrayLike,
    variances: ArrayLike,
    tau2: float,
    alpha: float = 0.05,
    null: float = 0.0,
) -> MSPRTResult:
    """Always-valid p-values and confidence sequence from running (estimate, variance).

    ``estimates[n]`` and ``variances[n]`` are the cumulative effect estimate and its
    variance at look n (looks may be as frequent as every observation). Returns the running
    p-value p_n = min(1, min_{m≤n} 1/Λ_m) and the running intersection of the confidence
    sequence θ̂_n ± √(V_n(V_n+τ²)/τ² · (2 ln(1/α) + ln((V_n+τ²)/V_n))) (Johari et al. 2017;
    Robbins 1970). Valid under continuous monitoring for (asymptotically) normal estimates.

    >>> r = msprt([0.5, 0.4, 0.45], [0.04, 0.02, 0.01], tau2=0.01)
    >>> np.round(r.p_value, 3).tolist()
    [0.598, 0.323, 0.009]
    """
    est, var = _validate(estimates, variances, tau2, alpha)
    lr = mixture_likelihood_ratio(est, var, tau2, null)
    p = np.minimum.accumulate(np.minimum(1.0, 1.0 / lr))
    half = np.sqrt(var * (var + tau2) / tau2 * (2.0 * math.log(1.0 / alpha) + np.log1p(tau2 / var)))
    lower = np.maximum.accumulate(est - half)
    upper = np.minimum.accumulate(est + half)
    hits = np.flatnonzero(p <= alpha)
    return MSPRTResult(
        estimate=est,
        variance=var,
        p_value=p,
        ci_lower=lower,
        ci_upper=upper,
        alpha=float(alpha),
        mixing_variance=float(tau2),
        null=float(null),
        first_rejection=int(hits[0]) if hits.size else None,
    )


def confidence_sequence_halfwidth(variance: float, tau2: float, alpha: float = 0.05) -> float:
    """Half-width √(V(V+τ²)/τ² · (2 ln(1/α) + ln(1 + τ²/V))) of the mSPRT confidence set.

    The set {θ₀: Λ(θ₀) < 1/α} solved for θ₀ (Johari et al. 2017; Howard et al. 2021).
    """
    if not (variance > 0 and tau2 > 0 and 0 < alpha < 1):
        raise ValueError(
            f"need variance > 0, tau2 > 0 and alpha in (0, 1); got {variance!r}, {tau2!r}, "
            f"{alpha!r}"
        )
    return math.sqrt(
        variance
        * (variance + tau2)
        / tau2
        * (2.0 * math.log(1.0 / alpha) + math.log1p(tau2 / variance))
    )


def mixing_variance(planned_variance: float, alpha: float = 0.05) -> float:
    """τ² that makes the confidence sequence narrowest when V_n = ``planned_variance``.

    Minimises :func:`confidence_sequence_halfwidth` over τ² (one-dimensional, on the log
    scale). The optimum is a fixed multiple of the planned variance that depends only on α,
    so the test is tuned to the precision reached at the end of the planned runtime
    (tuning for a planned sample size as in Howard et al. 2021; Johari et al. 2017
    instead fit τ to a prior of past effect sizes, which this replaces when none exists).

    >>> round(mixing_variance(1.0, 0.05), 3)
    8.212
    """
    if not (math.isfinite(planned_variance) and planned_variance > 0):
        raise ValueError(f"planned_variance must be > 0, got {planned_variance!r}")
    res = optimize.minimize_scalar(
        lambda s: confidence_sequence_halfwidth(1.0, math.exp(s), alpha),
        bounds=(-10.0, 15.0),
        method="bounded",
        options={"xatol": 1e-10},
    )
    return float(math.exp(res.x) * planned_variance)
