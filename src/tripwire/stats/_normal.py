"""Fast standard-normal helpers shared by the sequential, power and mSPRT modules.

``scipy.stats.norm`` carries per-call overhead that dominates inside tight numerical
loops; these thin wrappers call the underlying ufuncs directly.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def pdf(x: ArrayLike) -> NDArray[np.float64]:
    """Standard normal density φ(x)."""
    arr = np.asarray(x, dtype=np.float64)
    return np.asarray(_INV_SQRT_2PI * np.exp(-0.5 * arr * arr), dtype=np.float64)


def cdf(x: ArrayLike) -> NDArray[np.float64]:
    """Standard normal distribution function Φ(x)."""
    return np.asarray(special.ndtr(x), dtype=np.float64)


def sf(x: ArrayLike) -> NDArray[np.float64]:
    """Upper tail 1 − Φ(x), computed as Φ(−x) to keep precision in the tail."""
    return np.asarray(special.ndtr(-np.asarray(x, dtype=np.float64)), dtype=np.float64)


def quantile(p: float) -> float:
    """Standard normal quantile Φ⁻¹(p) for a scalar p in (0, 1)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"normal quantile needs p in (0, 1), got {p!r}")
    return float(special.ndtri(p))


def z_upper(tail: float) -> float:
    """Critical value z with 1 − Φ(z) = tail (e.g. 1.959964 for tail 0.025)."""
    return -quantile(tail)
