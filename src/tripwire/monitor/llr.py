"""Log-likelihood-ratio increments and their CUSUMs: evidence that accumulates with traffic.

A per-bucket z threshold treats a bucket of one turn and a bucket of a thousand alike once
standardised; a CUSUM of *log-likelihood ratios* (Page 1954; Lorden 1971) does not: each
bucket adds ``log p₁(data)/p₀(data)``, whose size grows with the bucket's traffic, so thin
buckets add little evidence and dense ones a lot, and the statistic ``S = max(0, S + llr)``
fires after the least evidence a test with that false-alarm rate can need (Lorden: the
CUSUM is worst-case optimal). The null ``p₀`` is the seasonal baseline's expectation.

An unknown effect size is covered by a small bank of alternatives, both directions:

* proportions — binomial: ``x ~ Bin(n, p)``, alternatives at odds ratios ``θ`` and ``1/θ``;
  ``llr = x·log(p₁/p₀) + (n − x)·log((1 − p₁)/(1 − p₀))``, divided by the squared
  over-dispersion factor (quasi-likelihood) when the series is noisier than binomial;
* ratios and values — Gaussian with variance ``v`` (the detector's residual scale at that
  traffic), alternatives at relative shifts ``±δ·|ŷ|``: ``llr = (Δ·r − Δ²/2)/v``.

Rows of an increments array are ``(up for each effect, then down for each effect)``.
:func:`run_maxima` replays a CUSUM bank over a whole path, vectorised over time (Lindley's
recursion as a cumulative sum minus its running minimum), for calibration.

>>> import numpy as np
>>> inc = binomial_increments(np.array([3.0]), np.array([10.0]), np.array([0.1]), (3.0,))
>>> inc.shape, bool(inc[0, 0] > 0), bool(inc[1, 0] < 0)   # 3 of 10 at p₀ = 10%: evidence up
((2, 1), True, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

#: Default alternatives: odds ratios for proportions, relative shifts for ratios and values.
DEFAULT_ODDS: tuple[float, ...] = (1.5, 4.0, 16.0)
DEFAULT_SHIFTS: tuple[float, ...] = (0.1, 0.25, 0.5)
#: A proportion's baseline is kept inside [P_FLOOR, 1 − P_FLOOR]: a share never seen in a
#: short history is not "impossible", and one event cannot then carry unbounded evidence.
P_FLOOR = 1e-3


def odds_shift(p0: NDArray[np.float64], theta: float | NDArray[np.float64]) -> NDArray[np.float64]:
    """The share whose odds are ``theta`` times those of ``p0``.

    >>> odds_shift(np.array([0.5]), 3.0)
    array([0.75])
    """
    return theta * p0 / (1.0 - p0 + theta * p0)


def binomial_increments(
    x: NDArray[np.float64],
    n: NDArray[np.float64],
    p0: NDArray[np.float64],
    odds: Sequence[float],
    dispersion: NDArray[np.float64] | float = 1.0,
) -> NDArray[np.float64]:
    """LLR increments ``(2·len(odds), n_series)`` of ``x`` successes in ``n`` trials.

    ``n = 0`` (or NaN) adds nothing. ``dispersion`` (≥ 1) is the ratio of the observed
    noise to the binomial; the LLR is divided by its square.
    """
    # with p₁ = θp/(1 − p + θp): log(p₁/p) = log θ − log(1 + p(θ − 1)) and
    # log((1 − p₁)/(1 − p)) = −log(1 + p(θ − 1)), so llr = x·log θ − n·log(1 + p(θ − 1))
    p = np.minimum(np.maximum(p0, P_FLOOR), 1.0 - P_FLOOR)
    ok = (n > 0) & (x == x) & (p == p)  # NaN compares false
    xs = np.where(ok, x, 0.0)
    ns = np.where(ok, n, 0.0)
    p = np.where(ok, p, 0.5)
    thetas = np.array([*odds, *(1.0 / t for t in odds)])
    shape = (-1,) + (1,) * p.ndim
    inc = xs * np.log(thetas).reshape(shape) - ns * np.log1p(p * (thetas - 1.0).reshape(shape))
    return np.asarray(inc / np.square(dispersion))


def gaussian_increments(
    residual: NDArray[np.float64],
    expected: NDArray[np.float64],
    variance: NDArray[np.float64],
    shifts: Sequence[float],
) -> NDArray[np.float64]:
    """LLR increments ``(2·len(shifts), n_series)`` of a Gaussian residual ``y − ŷ``.

    The alternatives move the mean by ``±δ·|ŷ|``; a missing point (NaN) or an unknown
    variance adds nothing.
    """
    ok = np.isfinite(residual) & np.isfinite(variance) & (variance > 0) & np.isfinite(expected)
    r = np.where(ok, residual, 0.0)
    v = np.where(ok, variance, 1.0)
    size = np.where(ok, np.abs(expected), 0.0)
    rows = []
    for sign in (1.0, -1.0):
        for delta in shifts:
            d = sign * delta * size
            rows.append((d * r - 0.5 * d * d) / v)
    return np.asarray(rows)


def cusum_step(
    statistic: NDArray[np.float64], increments: NDArray[np.float64]
) -> NDArray[np.float64]:
    """``S = max(0, S + llr)`` for every CUSUM of the bank (same shape)."""
    return np.maximum(statistic + increments, 0.0)


def run_maxima(increments: NDArray[np.float64]) -> NDArray[np.float64]:
    """Maxima of each CUSUM's excursions over a path, all CUSUMs of the bank together.

    ``increments`` is ``(T, J)``: one path of ``T`` ticks for ``J`` CUSUMs started at 0.
    An excursion of ``S_j`` is a run of ticks above 0; a threshold ``h`` fires once for
    each excursion whose maximum exceeds it (the detector resets on firing, which starts a
    new excursion, and the null rarely climbs twice in one), so the alarm rate of every
    threshold follows from one pass. Counting the bank's alarms as the sum over its CUSUMs
    is a union bound: conservative when two alternatives cross together.
    """
    out = []
    level = np.cumsum(increments, axis=0)
    floor = np.minimum(np.minimum.accumulate(level, axis=0), 0.0)
    stat = level - floor
    for j in range(increments.shape[1]):
        column = stat[:, j]
        positive = column > 0
        if not positive.any():
            continue
        starts = np.flatnonzero(positive & ~np.concatenate(([False], positive[:-1])))
        out.append(np.maximum.reduceat(np.where(positive, column, 0.0), starts))
    return np.concatenate(out) if out else np.zeros(0)


def detection_delay_bound(information_per_tick: float, false_alarm_ticks: float) -> float:
    """Lorden's lower bound on the worst-case mean delay, in ticks: ``log(γ) / I``.

    Any change detector whose mean time to a false alarm is ``γ`` ticks needs, to first
    order, ``log γ / I`` ticks after the change, where ``I`` is the Kullback–Leibler
    information per tick between the changed and the normal data (Lorden 1971; Lai 1998).
    Infinite when the change carries no information.

    >>> round(detection_delay_bound(0.5, math.e**10), 6)
    20.0
    """
    if information_per_tick <= 0 or not math.isfinite(information_per_tick):
        return math.inf
    return math.log(max(false_alarm_ticks, math.e)) / information_per_tick


def binomial_information(p1: float, p0: float) -> float:
    """KL divergence ``KL(Bern(p₁) ‖ Bern(p₀))`` in nats per trial (shares clamped).

    >>> round(binomial_information(0.34, 0.03), 3)
    0.571
    """
    a = min(max(p1, P_FLOOR), 1.0 - P_FLOOR)
    b = min(max(p0, P_FLOOR), 1.0 - P_FLOOR)
    return a * math.log(a / b) + (1.0 - a) * math.log((1.0 - a) / (1.0 - b))


def poisson_information(mu1: float, mu0: float) -> float:
    """KL divergence ``KL(Pois(μ₁) ‖ Pois(μ₀))`` in nats.

    >>> round(poisson_information(0.011, 0.11), 4)
    0.0737
    """
    if mu0 <= 0:
        return math.inf if mu1 > 0 else 0.0
    if mu1 <= 0:
        return mu0
    return mu1 * math.log(mu1 / mu0) - mu1 + mu0
