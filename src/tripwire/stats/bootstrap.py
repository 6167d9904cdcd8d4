"""Bootstrap comparisons for statistics with no sufficient statistic (quantiles, trimmed means).

This is the one place the stats engine takes unit-level arrays: a p95 latency has no
additive summary, so its sampling distribution is estimated by resampling units within
each arm (Efron & Tibshirani 1993, *An Introduction to the Bootstrap*, ch. 6 and 13).
Resampling is vectorised (a block of resamples is one ``(B, n)`` index matrix) and seeded;
memory is bounded by ``block_size``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from tripwire.stats.results import Effect, Status
from tripwire.stats.sufficient import FloatArray

RowStatistic = Callable[[FloatArray], FloatArray]
"""Maps a (B, n) array of resampled values to B statistics (one per row)."""


@dataclass(frozen=True)
class BootstrapResult:
    """Percentile-bootstrap comparison of one statistic between two arms."""

    method: str
    absolute: Effect
    relative: Effect
    control_value: float
    treatment_value: float
    n_resamples: int
    seed: int
    status: Status
    message: str = ""


def _unit_values(name: str, values: ArrayLike) -> FloatArray:
    x = np.asarray(values, dtype=np.float64).ravel()
    bad = ~np.isfinite(x)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}[{i}] must be finite (got {x[i]!r})")
    return x


def _replicates(
    x: FloatArray, statistic: RowStatistic, n_resamples: int, rng: np.random.Generator, block: int
) -> FloatArray:
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, block):
        b = min(block, n_resamples - start)
        idx = rng.integers(0, x.size, size=(b, x.size))
        out[start : start + b] = statistic(x[idx])
    return out


def _percentile_effect(point: float, reps: FloatArray, alpha: float) -> Effect:
    """Percentile interval and the bootstrap p-value 2·min(P*(θ* ≤ 0), P*(θ* ≥ 0)),
    i.e. the smallest α at which the percentile interval excludes 0."""
    finite = reps[np.isfinite(reps)]
    if finite.size == 0:
        nan = float("nan")
        return Effect(point, nan, nan, nan, nan)
    low, high = (float(v) for v in np.quantile(finite, [alpha / 2, 1 - alpha / 2]))
    p = min(1.0, 2.0 * min(float(np.mean(finite <= 0)), float(np.mean(finite >= 0))))
    return Effect(point, float(finite.std(ddof=1)), float(low), float(high), float(p))


def bootstrap_difference(
    control: ArrayLike,
    treatment: ArrayLike,
    statistic: RowStatistic,
    *,
    name: str = "statistic",
    n_resamples: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    block_size: int | None = None,
) -> BootstrapResult:
    r"""Percentile bootstrap of T(treatment) − T(control) and T(treatment)/T(control) − 1.

    Each replicate resamples n_c control units and n_t treatment units with replacement
    (arms independently, as randomised); the interval is the (α/2, 1 − α/2) percentiles of
    the B replicates, se their standard deviation. ``statistic`` must reduce along axis 1.

    >>> rng = np.random.default_rng(1)
    >>> c, t = rng.exponential(100, 3000), rng.exponential(110, 3000)
    >>> r = bootstrap_difference(c, t, lambda a: a.mean(axis=1), n_resamples=500, seed=3)
    >>> r.absolute.ci_low < r.absolute.estimate < r.absolute.ci_high
    True
    """
    xc, xt = _unit_values("control", control), _unit_values("treatment", treatment)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1) (got {alpha!r})")
    if n_resamples < 100:
        raise ValueError(
            f"n_resamples must be >= 100 for a percentile interval (got {n_resamples})"
        )
    method = f"bootstrap_{name}"
    if xc.size < 2 or xt.size < 2:
        nan = float("nan")
        empty = Effect(nan, nan, nan, nan, nan)
        return BootstrapResult(
            method, empty, empty, nan, nan, n_resamples, seed, Status.INSUFFICIENT_DATA,
            "insufficient data: fewer than 2 units in an arm",
        )  # fmt: skip
    rng = np.random.default_rng(seed)
    block = block_size or max(1, min(n_resamples, 4_000_000 // max(xc.size, xt.size)))
    tc = _replicates(xc, statistic, n_resamples, rng, block)
    tt = _replicates(xt, statistic, n_resamples, rng, block)
    vc = float(statistic(xc[None, :])[0])
    vt = float(statistic(xt[None, :])[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_reps = np.where(tc != 0, tt / np.where(tc != 0, tc, 1.0) - 1.0, np.nan)
        rel_point = vt / vc - 1.0 if vc != 0 else float("nan")
    return BootstrapResult(
        method,
        _percentile_effect(vt - vc, tt - tc, alpha),
        _percentile_effect(rel_point, rel_reps, alpha),
        vc,
        vt,
        n_resamples,
        seed,
        Status.OK,
        "relative effect undefined: control statistic is 0" if vc == 0 else "",
    )


def bootstrap_quantile_difference(
    control: ArrayLike,
    treatment: ArrayLike,
    q: float = 0.95,
    *,
    n_resamples: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> BootstrapResult:
    """Difference in the q-quantile between arms (e.g. p95 latency), percentile bootstrap.

    Quantiles use numpy's default (type 7, linear interpolation; Hyndman & Fan 1996).

    >>> rng = np.random.default_rng(2)
    >>> r = bootstrap_quantile_difference(rng.lognormal(5, 0.5, 4000),
    ...                                   rng.lognormal(5.1, 0.5, 4000), 0.95, seed=1)
    >>> r.method, bool(r.absolute.p_value < 0.05)
    ('bootstrap_p95', True)
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1] (got {q!r})")
    label = f"p{q * 100:g}"
    return bootstrap_difference(
        control,
        treatment,
        lambda a: np.quantile(a, q, axis=1),
        name=label,
        n_resamples=n_resamples,
        alpha=alpha,
        seed=seed,
    )
