"""Seasonality-aware baselines for the detectors: what a point *should* have been, and how noisy.

Two pieces, both vectorised over many series held side by side in numpy arrays:

* :class:`SeasonalBaseline` — a streaming additive Holt–Winters-style baseline
  ``expected_t = level + daily[bin_d(t)] + weekly[bin_w(t)]`` updated in error-correction form
  with a Huber-clipped residual, so a single outlier moves it by at most ``huber_c`` scales.
  Missing points leave the state untouched. The first visits of a level/bin use a running
  mean (gain ``max(gain, 1/visits)``) so a cold start converges in one period.
* robust scale: the residual scale starts from, and is tracked as, a winsorised mean absolute
  deviation (×√(π/2), consistent for the normal σ); :func:`mad_scale` is the batch MAD.

And a batch helper, :func:`seasonal_strength`, which runs a robust STL (statsmodels,
``robust=True``; Cleveland et al. 1990) on an hourly aggregate to decide whether a daily or
weekly component is worth modelling (strength ``F_S = max(0, 1 − Var(R)/Var(S+R))``,
Wang, Smith & Hyndman 2006).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

DAY_SECONDS = 86_400
WEEK_SECONDS = 7 * DAY_SECONDS
NORMAL_MEAN_ABS_TO_SD = math.sqrt(math.pi / 2.0)  # σ = E|X| · √(π/2) for X ~ N(0, σ²)
MAD_TO_SD = 1.482602218505602  # σ = 1.4826 · MAD for the normal
MIN_LEVEL_POINTS = 12.0
MIN_SCALE_POINTS = 50.0
MIN_CLIP_VISITS = 10  # residuals behind the scale before the Huber clip applies
MIN_SCALE_LEVEL_VISITS = 3  # points behind the level before its residuals teach the scale


def mad_scale(values: NDArray[np.float64]) -> float:
    """Median absolute deviation scaled to be consistent for the normal σ (NaNs ignored).

    >>> mad_scale(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))
    1.482602218505602
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return math.nan
    return float(MAD_TO_SD * np.median(np.abs(finite - np.median(finite))))


def gain_for_memory(memory: float) -> float:
    """Exponential-smoothing gain whose weights have mean age ``memory`` updates."""
    if memory <= 0:
        raise ValueError(f"memory must be > 0, got {memory}")
    return 1.0 - math.exp(-1.0 / memory)


@dataclass(frozen=True)
class BaselineSettings:
    """Shape and memories of :class:`SeasonalBaseline`.

    Level and scale memories are in seconds of data (so a 5-minute series forgets as fast
    as a minute one); seasonal memories are in periods (days, weeks).
    """

    daily_bins: int = 288  # 5-minute bins: 86 400 / 288 = 300 s
    weekly_bins: int = 168  # hourly bins over the week
    level_memory_seconds: float = 4 * 3600.0  # at least MIN_LEVEL_POINTS points
    daily_memory: float = 4.0  # days (each bin is visited bin_width/step times a day)
    weekly_memory: float = 3.0  # weeks
    scale_memory_seconds: float = DAY_SECONDS  # at least MIN_SCALE_POINTS points
    huber_c: float = 3.0  # residuals clipped at ±huber_c·scale before updating
    step_seconds: int = 60

    def __post_init__(self) -> None:
        if DAY_SECONDS % self.daily_bins:
            raise ValueError(f"daily_bins must divide 86400, got {self.daily_bins}")
        if WEEK_SECONDS % self.weekly_bins:
            raise ValueError(f"weekly_bins must divide 604800, got {self.weekly_bins}")
        if self.step_seconds <= 0:
            raise ValueError(f"step_seconds must be > 0, got {self.step_seconds}")
        if self.huber_c <= 0:
            raise ValueError(f"huber_c must be > 0, got {self.huber_c}")
        for name in (
            "level_memory_seconds",
            "daily_memory",
            "weekly_memory",
            "scale_memory_seconds",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    @property
    def level_memory(self) -> float:
        """Level memory in points: ``level_memory_seconds`` of data, at least 12 points."""
        return max(MIN_LEVEL_POINTS, self.level_memory_seconds / self.step_seconds)

    @property
    def scale_memory(self) -> float:
        """Scale memory in points: ``scale_memory_seconds`` of data, at least 50 points."""
        return max(MIN_SCALE_POINTS, self.scale_memory_seconds / self.step_seconds)

    @property
    def daily_bin_seconds(self) -> int:
        return DAY_SECONDS // self.daily_bins

    @property
    def weekly_bin_seconds(self) -> int:
        return WEEK_SECONDS // self.weekly_bins

    def seasonal_gain(self, bin_seconds: int, memory_periods: float) -> float:
        """Gain of one bin update such that the bin remembers ~``memory_periods`` periods."""
        visits_per_period = max(1.0, bin_seconds / self.step_seconds)
        return gain_for_memory(memory_periods * visits_per_period)


class SeasonalBaseline:
    """Streaming seasonal baseline for ``n_series`` aligned series (one shared clock).

    ``daily``/``weekly`` are per-series switches (a series without seasonality gets a pure
    local level). State is plain numpy arrays so it can be saved and restored.
    """

    def __init__(
        self,
        n_series: int,
        settings: BaselineSettings,
        daily: NDArray[np.bool_] | bool = True,
        weekly: NDArray[np.bool_] | bool = False,
    ) -> None:
        self.settings = settings
        self.n_series = n_series
        shape = (n_series,)
        self.level = np.zeros(shape)
        self.level_visits = np.zeros(shape, dtype=np.int64)
        self.daily = np.zeros((settings.daily_bins, n_series))
        self.daily_visits = np.zeros((settings.daily_bins, n_series), dtype=np.int64)
        self.weekly = np.zeros((settings.weekly_bins, n_series))
        self.weekly_visits = np.zeros((settings.weekly_bins, n_series), dtype=np.int64)
        self.abs_dev = np.full(shape, np.nan)  # winsorised mean |unit residual|
        self.scale_visits = np.zeros(shape, dtype=np.int64)
        self.daily_on = np.broadcast_to(np.asarray(daily, dtype=bool), shape).copy()
        self.weekly_on = np.broadcast_to(np.asarray(weekly, dtype=bool), shape).copy()
        # first-day initialisation of the daily profile (classical Holt–Winters start)
        self.first_ts = np.full(shape, -1, dtype=np.int64)
        self.initialising = self.daily_on.copy()
        self.init_sum = np.zeros((settings.daily_bins, n_series))
        self.init_sq = np.zeros((settings.daily_bins, n_series))
        self.init_n = np.zeros((settings.daily_bins, n_series), dtype=np.int64)
        self.init_w2 = np.zeros((settings.daily_bins, n_series))  # Σ unit_weight² (noise share)
        self._alpha = gain_for_memory(settings.level_memory)
        self._gamma_d = settings.seasonal_gain(settings.daily_bin_seconds, settings.daily_memory)
        self._gamma_w = settings.seasonal_gain(settings.weekly_bin_seconds, settings.weekly_memory)
        self._beta = gain_for_memory(settings.scale_memory)
        self._any_daily = bool(self.daily_on.any())
        self._any_weekly = bool(self.weekly_on.any())
        self._any_initialising = bool(self.initialising.any())
        self._any_unstarted = True

    def bins(self, timestamp: int) -> tuple[int, int]:
        """Daily and weekly bin of an epoch-seconds timestamp."""
        s = self.settings
        return (
            int(timestamp % DAY_SECONDS) // s.daily_bin_seconds,
            int(timestamp % WEEK_SECONDS) // s.weekly_bin_seconds,
        )

    def expected(self, bins: tuple[int, int]) -> NDArray[np.float64]:
        """Forecast for the tick whose bins are ``bins`` (before seeing it)."""
        d, w = bins
        return self.level + self.daily[d] * self.daily_on + self.weekly[w] * self.weekly_on

    def scale(self) -> NDArray[np.float64]:
        """Current robust scale of unit residuals (NaN until the first update)."""
        return self.abs_dev * NORMAL_MEAN_ABS_TO_SD

    def update(
        self,
        timestamp: int,
        bins: tuple[int, int],
        observed: NDArray[np.float64],
        residual: NDArray[np.float64],
        unit_weight: NDArray[np.float64],
        mask: NDArray[np.bool_],
        clip_scale: NDArray[np.float64],
    ) -> None:
        """Absorb ``residual = y − expected`` where ``mask``; ``unit_weight`` maps to unit scale.

        The residual is clipped at ±huber_c · clip_scale · unit_weight (``clip_scale`` is the
        scale the detector uses, NaN while unknown = no clipping), then shared out in
        Holt–Winters error-correction order: level takes α·e, the daily bin γ_d of the rest,
        the weekly bin γ_w of what remains.

        Series with a daily term first spend one day *initialising*: the level is the running
        mean, and when a full day has been seen the daily profile is set to the per-bin means
        minus the day's mean and the scale to the pooled within-bin standard deviation. Learning
        the profile by error correction from a cold start instead leaves a slowly rotating
        bias that lasts days.

        ``residual`` and ``unit_weight`` must be finite where ``mask`` is false (0 and 1).
        Steps that cannot change any state on this tick (initialisation once every series is
        done, a seasonal term no series has) are skipped.
        """
        d, w = bins
        s = self.settings
        if self._any_unstarted:
            self.first_ts = np.where(mask & (self.first_ts < 0), timestamp, self.first_ts)
            self._any_unstarted = bool((self.first_ts < 0).any())
        if self._any_initialising:
            init = self.initialising & mask
            steady = mask & ~self.initialising
            if init.any():
                obs = np.where(init, observed, 0.0)
                self.init_sum[d] += obs
                self.init_sq[d] += obs * obs
                self.init_n[d] += init
                self.init_w2[d] += np.where(init, unit_weight * unit_weight, 0.0)
        else:
            steady = mask
        unit = residual / unit_weight  # 0 where not masked
        # no clipping until the scale rests on MIN_CLIP_VISITS residuals: a scale started
        # from one tiny residual (a thin series' first zero) would otherwise clip everything
        # after it and could never grow back (nor could the level move)
        known = (clip_scale == clip_scale) & (self.scale_visits >= MIN_CLIP_VISITS)
        limit = np.where(known, s.huber_c * clip_scale, np.inf)
        e = np.minimum(np.maximum(unit, -limit), limit) * unit_weight  # 0 where not masked

        # a residual against a level that has seen fewer than MIN_SCALE_LEVEL_VISITS points is
        # the cold start, not noise (the very first is against a level of 0): the scale skips it
        settled = self.level_visits >= MIN_SCALE_LEVEL_VISITS
        self.level_visits += mask
        alpha = np.maximum(self._alpha, 1.0 / np.maximum(self.level_visits, 1))
        self.level += alpha * e
        e = e * (1.0 - alpha)

        if self._any_daily:
            dmask = steady & self.daily_on
            visits = self.daily_visits[d]
            visits += dmask
            gamma_d = np.where(dmask, np.maximum(self._gamma_d, 1.0 / np.maximum(visits, 1)), 0.0)
            self.daily[d] += gamma_d * e
            e = e * (1.0 - gamma_d)

        if self._any_weekly:
            wmask = steady & self.weekly_on
            visits = self.weekly_visits[w]
            visits += wmask
            gamma_w = np.where(wmask, np.maximum(self._gamma_w, 1.0 / np.maximum(visits, 1)), 0.0)
            self.weekly[w] += gamma_w * e

        smask = steady & settled
        self.scale_visits += smask
        abs_unit = np.minimum(np.abs(unit), 2.0 * limit)
        beta = np.maximum(self._beta, 1.0 / np.maximum(self.scale_visits, 1))
        have = self.abs_dev == self.abs_dev
        updated = np.where(have, self.abs_dev + beta * (abs_unit - self.abs_dev), abs_unit)
        self.abs_dev = np.where(smask, updated, self.abs_dev)

        if self._any_initialising:
            ready = self.initialising & (self.first_ts >= 0)
            ready &= timestamp - self.first_ts >= DAY_SECONDS - s.step_seconds
            if ready.any():
                self._finish_initialisation(ready)
                self._any_initialising = bool(self.initialising.any())

    def _finish_initialisation(self, ready: NDArray[np.bool_]) -> None:
        n = self.init_n[:, ready]
        total = np.maximum(n.sum(axis=0), 1)
        mean = self.init_sum[:, ready].sum(axis=0) / total
        has = n > 0
        bin_mean = np.where(has, self.init_sum[:, ready] / np.maximum(n, 1), mean)
        self.daily[:, ready] = np.where(has, bin_mean - mean, 0.0)
        self.daily_visits[:, ready] = n
        self.level[ready] = mean
        self.level_visits[ready] = np.minimum(total, 60)
        within = self.init_sq[:, ready] - np.where(
            has, self.init_sum[:, ready] ** 2 / np.maximum(n, 1), 0.0
        )
        dof = np.maximum(n - 1, 0).sum(axis=0)
        # E[within-bin SS] = σ² Σ_b (n_b − 1)/n_b · Σ_i w_i²  (unit residual scale σ)
        share = (self.init_w2[:, ready] * np.where(has, (n - 1) / np.maximum(n, 1), 0.0)).sum(
            axis=0
        )
        sd = np.sqrt(np.maximum(within.sum(axis=0), 0.0) / np.where(share > 0, share, np.nan))
        abs_dev = np.where(dof >= 10, sd / NORMAL_MEAN_ABS_TO_SD, np.nan)
        self.abs_dev[ready] = abs_dev
        self.scale_visits[ready] = np.where(dof >= 10, np.minimum(dof, 60), 0)
        self.initialising[ready] = False

    def shift_level(
        self, delta: NDArray[np.float64], mask: NDArray[np.bool_], evidence: NDArray[np.int64]
    ) -> None:
        """Re-baseline: move the level by ``delta`` where ``mask`` (after a confirmed change).

        The level then restarts as a running mean that counts the ``evidence`` points the
        shift was estimated from, so the new level is refined quickly by what follows.
        """
        self.level = np.where(mask, self.level + delta, self.level)
        self.level_visits = np.where(mask, evidence, self.level_visits)

    def widen_scale(self, factor: NDArray[np.float64], mask: NDArray[np.bool_]) -> None:
        """Multiply the residual scale by ``factor`` where ``mask`` (after a variance change)."""
        self.abs_dev = np.where(mask, self.abs_dev * factor, self.abs_dev)


def seasonal_strength(
    timestamps: NDArray[np.int64], values: NDArray[np.float64], period_seconds: int
) -> float:
    """Strength in [0, 1] of the ``period_seconds`` seasonality, from a robust STL.

    The series is averaged into hourly buckets (STL on minute data with a 1440 period is
    seconds per series; hourly keeps it at ~50 ms) and decomposed with ``STL(robust=True)``.
    Returns 0 when there is less than two full periods of data.
    """
    from statsmodels.tsa.seasonal import STL

    bucket = 3600 if period_seconds >= DAY_SECONDS else max(60, period_seconds // 24)
    period = period_seconds // bucket
    ok = np.isfinite(values)
    if ok.sum() < 3:
        return 0.0
    keys = timestamps[ok] // bucket
    first = int(keys.min())
    index = (keys - first).astype(np.int64)
    n = int(index.max()) + 1
    if n < 2 * period + 1:
        return 0.0
    sums = np.bincount(index, weights=values[ok], minlength=n)
    counts = np.bincount(index, minlength=n)
    hourly = np.full(n, np.nan)
    hourly[counts > 0] = sums[counts > 0] / counts[counts > 0]
    if np.isnan(hourly).any():  # fill gaps linearly: STL needs a regular series
        idx = np.arange(n)
        good = ~np.isnan(hourly)
        hourly = np.interp(idx, idx[good], hourly[good])
    fit = STL(hourly, period=period, robust=True).fit()
    resid = np.asarray(fit.resid)
    seasonal = np.asarray(fit.seasonal)
    denominator = float(np.var(seasonal + resid))
    if denominator <= 0:
        return 0.0
    return max(0.0, 1.0 - float(np.var(resid)) / denominator)
