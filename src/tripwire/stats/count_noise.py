"""Sampling noise of per-bucket counts and shares, for the monitors' detectors.

Arrays in, arrays out (vectorised over series); no state. A detector judges a bucket's
share ``x/n`` against its *binomial* noise at that traffic, pools thin buckets until they
carry enough binomial information for the normal approximation, and never believes a ratio
of counts resolves less than one count.

>>> import numpy as np
>>> p, n = np.array([0.22, 0.5]), np.array([100.0, 4.0])
>>> binomial_sd(p, n).round(4)            # sd of the observed share x/n
array([0.0414, 0.25  ])
>>> binomial_information(p, n).round(2)   # Var(x) = n p (1 − p)
array([17.16,  1.  ])
>>> count_resolution_sd(np.array([50.0]), 1.0)   # a ratio of counts moves in steps of 1/n
array([0.02])
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

#: Shares are clamped into [P_EPS, 1 − P_EPS] so that an expected 0% or 100% still has noise.
P_EPS = 1e-6


def clamp_share(p: NDArray[np.float64]) -> NDArray[np.float64]:
    """``p`` clamped into ``[P_EPS, 1 − P_EPS]`` (NaN stays NaN)."""
    return np.minimum(np.maximum(p, P_EPS), 1.0 - P_EPS)


def binomial_information(p: NDArray[np.float64], n: NDArray[np.float64]) -> NDArray[np.float64]:
    """Binomial variance of the count ``x ~ Bin(n, p)``: ``n·p(1 − p)`` (``p`` clamped).

    Summed over buckets, it is the information a pooled count carries; the normal
    approximation of the count is fair once it reaches ~5 (the usual ``np(1−p) ≥ 5`` rule).
    """
    q = clamp_share(p)
    return n * q * (1.0 - q)


def binomial_sd(p: NDArray[np.float64], n: NDArray[np.float64]) -> NDArray[np.float64]:
    """Standard deviation of the share ``x/n`` under ``Bin(n, p)``: ``√(p(1 − p)/n)``."""
    q = clamp_share(p)
    return np.sqrt(q * (1.0 - q) / n)


def count_resolution_sd(n: NDArray[np.float64], resolution: float) -> NDArray[np.float64]:
    """Smallest meaningful standard deviation of a ratio ``x/n`` whose numerator moves in steps
    of ``resolution`` (1 for counts): ``resolution / n``.

    A ratio that sat at exactly 1.0 in history (telemetry orders per ledger order) has an
    estimated noise of zero; without this floor one order straddling a bucket boundary would
    read as a change of infinitely many standard deviations.
    """
    return resolution / n
