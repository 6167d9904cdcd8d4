"""Sufficient statistics: the only data the stats engine ever sees.

A two-sample test on means, proportions or ratios needs nothing but per-arm counts, sums,
sums of squares and cross-products; the query engine computes them and unit-level rows never
reach Python. Every type here is a frozen dataclass that

* validates on construction (finite values, n >= 0, non-negative sums of squares, a
  non-negative implied variance up to rounding) and names the offending field;
* adds with ``+`` (the sum over disjoint segments is the statistic of their union), so
  per-cohort and aggregate analyses share one source;
* accepts scalars or equal-shaped numpy arrays in every field: an array holds one segment
  (or metric, or cohort) per element and every test in :mod:`tripwire.stats` then runs
  vectorised over them.

Moments use the unbiased (n - 1) denominator, like ``numpy.var(ddof=1)`` and
``scipy.stats.ttest_ind``.

>>> a = MeanStats.from_values([1.0, 2.0, 3.0])
>>> b = MeanStats.from_values([4.0])
>>> (a + b).mean, (a + b).n
(2.5, 4.0)
>>> MeanStats(n=-1, sum=0.0, sum_sq=0.0)
Traceback (most recent call last):
...
ValueError: MeanStats.n must be >= 0 (got -1.0 at index ())
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Self, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray: TypeAlias = NDArray[np.float64]
Real: TypeAlias = float | FloatArray
"""A float for one comparison, or a numpy array holding one comparison per element."""

_RELATIVE_ROUNDING = 1e-9


def as_real(value: Any) -> Real:
    """Return a Python float for 0-d input and a float64 array otherwise."""
    array = np.asarray(value, dtype=np.float64)
    return float(array) if array.ndim == 0 else array


def _validate(
    obj: Any, *, non_negative: tuple[str, ...], square_pairs: tuple[tuple[str, str], ...]
) -> None:
    """Coerce every field to float / float64 array and check it (shared by all types)."""
    name = type(obj).__name__
    shape: tuple[int, ...] | None = None
    for field in fields(obj):
        raw = getattr(obj, field.name)
        try:
            array = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise TypeError(f"{name}.{field.name} must be numeric (got {raw!r})") from error
        if shape is None:
            shape = array.shape
        elif array.shape != shape:
            raise ValueError(
                f"{name}.{field.name} has shape {array.shape}, expected {shape} like the other fields"
            )
        bad = ~np.isfinite(array)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{name}.{field.name} must be finite (got {float(array[bad].flat[0])!r} at index {index})"
            )
        if field.name in non_negative and (array < 0).any():
            index = tuple(int(i) for i in np.argwhere(array < 0)[0])
            raise ValueError(
                f"{name}.{field.name} must be >= 0 (got {float(array[array < 0].flat[0])!r} at index {index})"
            )
        object.__setattr__(obj, field.name, float(array) if array.ndim == 0 else array)
    n = np.asarray(obj.n)
    for total, squares in square_pairs:
        s, ss = np.asarray(getattr(obj, total)), np.asarray(getattr(obj, squares))
        with np.errstate(over="ignore", invalid="ignore"):
            square, bound = s * s, n * ss
        if not (np.all(np.isfinite(square)) and np.all(np.isfinite(bound))):
            raise ValueError(
                f"{name}: {total} or {squares} too large for float64 moments (overflow)"
            )
        # Cauchy-Schwarz: (sum x)^2 <= n * sum x^2; rounding may break it by a few ulps.
        bad = square - bound > _RELATIVE_ROUNDING * np.maximum(bound, 1e-300)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{name}: {total}^2 > n * {squares} at index {index}, i.e. a negative variance; "
                "the sums do not come from one set of values"
            )


def _moment(n: Any, sum_a: Any, sum_b: Any, sum_ab: Any) -> Real:
    """Unbiased covariance (n - 1 denominator) of a and b from their sums; 0 when n < 2."""
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = (np.asarray(sum_ab) - np.asarray(sum_a) * np.asarray(sum_b) / n) / (n - 1.0)
    return as_real(np.where(n >= 2, cov, 0.0))


def _mean(n: Any, total: Any) -> Real:
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return as_real(np.where(n > 0, np.asarray(total) / np.where(n > 0, n, 1.0), np.nan))


def _add(a: Any, b: Any) -> Any:
    if type(a) is not type(b):
        return NotImplemented
    return type(a)(**{f.name: np.add(getattr(a, f.name), getattr(b, f.name)) for f in fields(a)})


def _paired_moments(
    first: ArrayLike, second: ArrayLike, names: tuple[str, str]
) -> tuple[float, float, float, float, float, float]:
    """n, Σa, Σa², Σb, Σb², Σab of two per-unit arrays of the same length."""
    a = np.asarray(first, dtype=np.float64).ravel()
    b = np.asarray(second, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} has {a.size} units but {names[1]} has {b.size}")
    return float(a.size), float(a.sum()), float(a @ a), float(b.sum()), float(b @ b), float(a @ b)


@dataclass(frozen=True)
class MeanStats:
    """Per-arm statistics of a per-unit value x: n, Σx, Σx².

    A proportion is a mean of 0/1 values (``sum_sq == sum``); build it with
    :meth:`from_proportion`.
    """

    n: Real
    sum: Real
    sum_sq: Real

    def __post_init__(self) -> None:
        _validate(self, non_negative=("n", "sum_sq"), square_pairs=(("sum", "sum_sq"),))

    def __add__(self, other: MeanStats) -> MeanStats:
        return _add(self, other)  # type: ignore[no-any-return]

    @classmethod
    def from_values(cls, values: ArrayLike) -> Self:
        """Statistics of a 1-d array of unit values (for tests and small data)."""
        x = np.asarray(values, dtype=np.float64).ravel()
        return cls(n=float(x.size), sum=float(x.sum()), sum_sq=float(x @ x))

    @classmethod
    def from_proportion(cls, n: ArrayLike, successes: ArrayLike) -> Self:
        """Statistics of n binary units of which ``successes`` are 1."""
        n_arr = np.asarray(n, dtype=np.float64)
        k = np.asarray(successes, dtype=np.float64)
        if (k > n_arr).any():
            raise ValueError("MeanStats.from_proportion: successes must be <= n")
        return cls(n=as_real(n_arr), sum=as_real(k), sum_sq=as_real(k))

    @property
    def mean(self) -> Real:
        """x̄ = Σx / n (NaN when n = 0)."""
        return _mean(self.n, self.sum)

    @property
    def variance(self) -> Real:
        """s² = (Σx² − (Σx)²/n) / (n − 1), clipped at 0 against rounding; 0 when n < 2."""
        return as_real(np.maximum(_moment(self.n, self.sum, self.sum, self.sum_sq), 0.0))

    @property
    def is_binary_compatible(self) -> bool:
        """True when the sums could come from 0/1 values (Σx² = Σx, 0 ≤ Σx ≤ n)."""
        s, ss, n = np.asarray(self.sum), np.asarray(self.sum_sq), np.asarray(self.n)
        return bool(np.all((np.abs(s - ss) <= 1e-9 + 1e-12 * np.abs(s)) & (s <= n)))


@dataclass(frozen=True)
class RatioStats:
    """Per-arm statistics of a ratio metric Σnum / Σden over units (e.g. clicks / sessions).

    Keeps per-unit numerator and denominator moments so the delta method can account for
    the correlation of the two within a unit (Deng, Knoblich & Lu 2018).
    """

    n: Real
    sum_num: Real
    sum_num_sq: Real
    sum_den: Real
    sum_den_sq: Real
    sum_num_den: Real

    def __post_init__(self) -> None:
        _validate(
            self,
            non_negative=("n", "sum_num_sq", "sum_den_sq"),
            square_pairs=(("sum_num", "sum_num_sq"), ("sum_den", "sum_den_sq")),
        )

    def __add__(self, other: RatioStats) -> RatioStats:
        return _add(self, other)  # type: ignore[no-any-return]

    @classmethod
    def from_values(cls, numerator: ArrayLike, denominator: ArrayLike) -> Self:
        """Statistics of per-unit numerator and denominator arrays."""
        return cls(*_paired_moments(numerator, denominator, ("numerator", "denominator")))

    @property
    def ratio(self) -> Real:
        """R = Σnum / Σden (NaN when Σden = 0)."""
        return _mean(self.sum_den, self.sum_num)

    @property
    def numerator(self) -> MeanStats:
        return MeanStats(self.n, self.sum_num, self.sum_num_sq)

    @property
    def denominator(self) -> MeanStats:
        return MeanStats(self.n, self.sum_den, self.sum_den_sq)

    @property
    def covariance(self) -> Real:
        """Unbiased per-unit covariance of numerator and denominator."""
        return _moment(self.n, self.sum_num, self.sum_den, self.sum_num_den)


@dataclass(frozen=True)
class CupedMeanStats:
    """Per-arm statistics of an outcome y and a pre-period covariate c, for CUPED:
    n, Σy, Σy², Σc, Σc², Σyc."""

    n: Real
    sum: Real
    sum_sq: Real
    sum_cov: Real
    sum_cov_sq: Real
    sum_cross: Real

    def __post_init__(self) -> None:
        _validate(
            self,
            non_negative=("n", "sum_sq", "sum_cov_sq"),
            square_pairs=(("sum", "sum_sq"), ("sum_cov", "sum_cov_sq")),
        )

    def __add__(self, other: CupedMeanStats) -> CupedMeanStats:
        return _add(self, other)  # type: ignore[no-any-return]

    @classmethod
    def from_values(cls, outcome: ArrayLike, covariate: ArrayLike) -> Self:
        """Statistics of per-unit outcome and covariate arrays."""
        return cls(*_paired_moments(outcome, covariate, ("outcome", "covariate")))

    @property
    def outcome(self) -> MeanStats:
        return MeanStats(self.n, self.sum, self.sum_sq)

    @property
    def covariate(self) -> MeanStats:
        return MeanStats(self.n, self.sum_cov, self.sum_cov_sq)

    @property
    def covariance(self) -> Real:
        """Unbiased per-unit covariance of outcome and covariate."""
        return _moment(self.n, self.sum, self.sum_cov, self.sum_cross)


@dataclass(frozen=True)
class CupedRatioStats:
    """Per-arm statistics of a ratio metric and a pre-period ratio covariate, for ratio CUPED.

    Four per-unit variables: numerator y, denominator d, covariate numerator cy and
    covariate denominator cd; their sums, sums of squares and the six cross-products.
    """

    n: Real
    sum_num: Real
    sum_num_sq: Real
    sum_den: Real
    sum_den_sq: Real
    sum_num_den: Real
    sum_cov_num: Real
    sum_cov_num_sq: Real
    sum_cov_den: Real
    sum_cov_den_sq: Real
    sum_cov_num_cov_den: Real
    sum_num_cov_num: Real
    sum_num_cov_den: Real
    sum_den_cov_num: Real
    sum_den_cov_den: Real

    def __post_init__(self) -> None:
        _validate(
            self,
            non_negative=("n", "sum_num_sq", "sum_den_sq", "sum_cov_num_sq", "sum_cov_den_sq"),
            square_pairs=(
                ("sum_num", "sum_num_sq"),
                ("sum_den", "sum_den_sq"),
                ("sum_cov_num", "sum_cov_num_sq"),
                ("sum_cov_den", "sum_cov_den_sq"),
            ),
        )

    def __add__(self, other: CupedRatioStats) -> CupedRatioStats:
        return _add(self, other)  # type: ignore[no-any-return]

    @classmethod
    def from_values(
        cls,
        numerator: ArrayLike,
        denominator: ArrayLike,
        cov_numerator: ArrayLike,
        cov_denominator: ArrayLike,
    ) -> Self:
        """Statistics of four per-unit arrays (outcome ratio parts, covariate ratio parts)."""
        y, d, cy, cd = (
            np.asarray(v, dtype=np.float64).ravel()
            for v in (numerator, denominator, cov_numerator, cov_denominator)
        )
        if not (y.shape == d.shape == cy.shape == cd.shape):
            raise ValueError(
                "numerator, denominator and covariate arrays must have the same length"
            )
        return cls(
            float(y.size), float(y.sum()), float(y @ y), float(d.sum()), float(d @ d), float(y @ d),
            float(cy.sum()), float(cy @ cy), float(cd.sum()), float(cd @ cd), float(cy @ cd),
            float(y @ cy), float(y @ cd), float(d @ cy), float(d @ cd),
        )  # fmt: skip

    @property
    def outcome(self) -> RatioStats:
        return RatioStats(
            self.n, self.sum_num, self.sum_num_sq, self.sum_den, self.sum_den_sq, self.sum_num_den
        )

    @property
    def covariate(self) -> RatioStats:
        return RatioStats(
            self.n,
            self.sum_cov_num,
            self.sum_cov_num_sq,
            self.sum_cov_den,
            self.sum_cov_den_sq,
            self.sum_cov_num_cov_den,
        )


def covariance(n: Any, sum_a: Any, sum_b: Any, sum_ab: Any) -> Real:
    """Unbiased covariance from sums: (Σab − Σa·Σb/n) / (n − 1); 0 when n < 2."""
    return _moment(n, sum_a, sum_b, sum_ab)
