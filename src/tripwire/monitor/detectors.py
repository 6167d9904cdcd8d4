"""Streaming change detectors for KPI time series: CUSUM and EWMA on standardised residuals.

A detector consumes a series point by point — a value, or for proportions and ratios a
numerator and a denominator — and returns, for each point, the expected value with an
interval, the standardised residual (score), the detector statistic against its threshold,
and whether it fired. :class:`DetectorBank` holds ``n_series`` aligned series (segments of
one metric at one grain, sharing the clock) in numpy arrays and updates them all per tick;
:meth:`DetectorBank.run` (batch/backfill) is literally a loop over :meth:`DetectorBank.update`,
so streaming and batch agree exactly. :class:`Detector` is the one-series convenience face.

Per point ``t`` (see ``docs/monitors.md``):

* baseline ``ŷ_t`` from :class:`~tripwire.monitor.baselines.SeasonalBaseline`;
* unit weight ``w_t``: 1 for values; ``√(p̂(1−p̂)/n_t)`` for proportions (binomial noise at
  that traffic, ``p̂ = ŷ_t``); ``1/√n_t`` for ratios (delta-method: Var(Σx/Σn) ∝ σ²/n);
* scale ``σ`` of ``(y_t − ŷ_t)/w_t`` tracked robustly (for proportions floored at 1: never
  tighter than binomial, wider when over-dispersed; for ratios of counts, with
  ``resolution`` = 1, floored at one count, ``σ·w ≥ 1/n_t``, so a
  ratio that sat at exactly 1.0 in history does not page when one order straddles an hour);
* score ``z_t = (y_t − ŷ_t)/(w_t σ)`` — low traffic means a large ``w_t`` and a small score,
  so thin hours do not page;
* CUSUM (Page 1954): ``S⁺ = max(0, S⁺ + z − k)``, ``S⁻ = max(0, S⁻ − z − k)``, fire when
  either exceeds ``h``; EWMA (Roberts 1959): ``E = (1−λ)E + λz``, fire when
  ``|E| / √(λ/(2−λ)·(1−(1−λ)^{2i}))`` exceeds ``L``.

``method="llr"`` replaces the score-CUSUM by a bank of CUSUMs of log-likelihood ratios
(:mod:`tripwire.monitor.llr`): binomial for proportions (each bucket's evidence grows with
its traffic, no pooling), Gaussian at the tracked noise for ratios and values, against a
few alternatives in each direction; thresholds are in nats. Its share/ratio baseline is a
traffic-weighted ``Σx/Σn`` forgotten over ``llr_memory_seconds`` (a Huber-clipped residual
of a 0/1 bucket would bias a rare share down), and its over-dispersion factor is the one
calibration measured on hourly sums.

After firing, the series is *held* for ``confirm_points`` valid points (no new alarm, no
baseline learning); then the level is re-baselined by the mean residual of the hold if it is
a confirmed shift (|mean z| > ``confirm_z``), and the scale widened if the hold's spread says
the variance rose. So a level shift fires once, not forever; a spike fires once and moves
nothing. Before detection the Huber clip bounds how much of a change the baseline absorbs
(a 1.3σ drop loses ~6% of its size to the level in 15 minutes at the default memories).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tripwire.monitor.baselines import DAY_SECONDS, BaselineSettings, SeasonalBaseline
from tripwire.monitor.llr import (
    DEFAULT_ODDS,
    DEFAULT_SHIFTS,
    binomial_increments,
    cusum_step,
    gaussian_increments,
)
from tripwire.monitor.onset import Onset, locate_onset
from tripwire.stats.count_noise import binomial_information, binomial_sd, count_resolution_sd

Method = Literal["cusum", "ewma", "llr"]
MetricKind = Literal["value", "proportion", "ratio"]
METHODS: tuple[Method, ...] = ("cusum", "ewma", "llr")
KINDS: tuple[MetricKind, ...] = ("value", "proportion", "ratio")


def cusum_update(
    pos: NDArray[np.float64], neg: NDArray[np.float64], z: NDArray[np.float64], k: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Two-sided CUSUM step: ``S⁺ = max(0, S⁺ + z − k)``, ``S⁻ = max(0, S⁻ − z − k)``.

    >>> cusum_update(np.array([1.0]), np.array([0.2]), np.array([1.5]), 0.5)
    (array([2.]), array([0.]))
    """
    return np.maximum(pos + (z - k), 0.0), np.maximum(neg - (z + k), 0.0)


def ewma_update(
    e: NDArray[np.float64], n: NDArray[np.float64], z: NDArray[np.float64], lam: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """EWMA step: ``E = E + λ(z − E)``, ``n = n + 1``; returns (E, n, E / sd(E)).

    ``sd(E)² = λ/(2−λ) · (1 − (1−λ)^{2n})`` for unit-variance scores started at E = 0.

    >>> e, n, stat = ewma_update(np.array([0.0]), np.array([0.0]), np.array([1.0]), 0.2)
    >>> e, n, stat
    (array([0.2]), array([1.]), array([1.]))
    """
    e = e + lam * (z - e)
    n = n + 1
    var = lam / (2.0 - lam) * (1.0 - (1.0 - lam) ** (2 * n))
    return e, n, e / np.sqrt(var)


@dataclass(frozen=True)
class DetectorConfig:
    """Everything that defines a detector; thresholds are defaults until calibrated.

    ``h`` (CUSUM) and ``limit`` (EWMA) are in units of the score; calibration
    (:mod:`tripwire.monitor.calibration`) replaces them per series from a false-alarm target.
    """

    method: Method = "cusum"
    kind: MetricKind = "value"
    k: float = 0.5
    h: float = 8.0
    lam: float = 0.2
    limit: float = 4.0
    daily: bool = True
    weekly: bool = False
    baseline: BaselineSettings = field(default_factory=BaselineSettings)
    warmup_seconds: int = DAY_SECONDS
    confirm_points: int = 10
    confirm_z: float = 0.5
    min_denominator: float = 1.0
    resolution: float = 0.0
    min_information: float = 5.0
    interval_z: float = 3.0
    score_clip: float = 50.0
    onset_buffer: int = 256
    effects: tuple[float, ...] = ()
    llr_memory_seconds: float = DAY_SECONDS

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.k < 0:
            raise ValueError(f"k must be >= 0, got {self.k}")
        if self.h <= 0 or self.limit <= 0:
            raise ValueError(f"thresholds must be > 0, got h={self.h}, limit={self.limit}")
        if not 0 < self.lam <= 1:
            raise ValueError(f"lam must be in (0, 1], got {self.lam}")
        if self.confirm_points < 1:
            raise ValueError(f"confirm_points must be >= 1, got {self.confirm_points}")
        if self.warmup_seconds < 0:
            raise ValueError(f"warmup_seconds must be >= 0, got {self.warmup_seconds}")
        if self.min_information <= 0:
            raise ValueError(f"min_information must be > 0, got {self.min_information}")
        if self.resolution < 0:
            raise ValueError(f"resolution must be >= 0, got {self.resolution}")
        if self.onset_buffer < 8:
            raise ValueError(f"onset_buffer must be >= 8, got {self.onset_buffer}")
        for e in self.effects:
            ok = e > 1 if self.kind == "proportion" else 0 < e < 1
            if not ok:
                need = (
                    "odds ratios > 1" if self.kind == "proportion" else "relative shifts in (0, 1)"
                )
                raise ValueError(f"effects of a {self.kind} LLR detector are {need}, got {e}")

    @property
    def llr_effects(self) -> tuple[float, ...]:
        """The LLR bank's alternatives: odds ratios (proportions) or relative shifts."""
        if self.effects:
            return self.effects
        return DEFAULT_ODDS if self.kind == "proportion" else DEFAULT_SHIFTS

    @property
    def warmup_points(self) -> int:
        """Valid points a series must see before it may fire."""
        return math.ceil(self.warmup_seconds / self.baseline.step_seconds)

    @property
    def default_threshold(self) -> float:
        return self.limit if self.method == "ewma" else self.h


@dataclass(frozen=True)
class TickResult:
    """One tick for every series of a bank (arrays of length ``n_series``).

    ``score`` is the standardised residual (NaN where the point is missing/too thin);
    ``statistic`` is signed (CUSUM: S⁺ if S⁺ ≥ S⁻ else −S⁻; EWMA: standardised E) and is
    compared with ``threshold``. ``fired`` marks the point where an alarm starts;
    ``in_alarm`` stays true through the confirmation hold that follows. ``direction`` is
    +1/−1 on fired points (up/down), 0 elsewhere.
    """

    timestamp: int
    observed: NDArray[np.float64]
    expected: NDArray[np.float64]
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]
    score: NDArray[np.float64]
    statistic: NDArray[np.float64]
    threshold: NDArray[np.float64]
    fired: NDArray[np.bool_]
    in_alarm: NDArray[np.bool_]
    direction: NDArray[np.int8]


@dataclass(frozen=True)
class RunResult:
    """A batch of ticks stacked: every array has shape ``(n_ticks, n_series)``.

    Fields not requested from :meth:`DetectorBank.run_batch` (``fields=``) are empty
    ``(0, n_series)`` arrays: a 14-day minute backfill of 1,000 series is 160 MB per field.
    """

    timestamps: NDArray[np.int64]
    observed: NDArray[np.float64]
    expected: NDArray[np.float64]
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]
    score: NDArray[np.float64]
    statistic: NDArray[np.float64]
    threshold: NDArray[np.float64]
    fired: NDArray[np.bool_]
    in_alarm: NDArray[np.bool_]
    direction: NDArray[np.int8]


RESULT_FIELDS: dict[str, type] = {
    "observed": float,
    "expected": float,
    "lower": float,
    "upper": float,
    "score": float,
    "statistic": float,
    "threshold": float,
    "fired": bool,
    "in_alarm": bool,
    "direction": np.int8,
}


def to_epoch_seconds(timestamp: int | float | datetime | np.datetime64) -> int:
    """Epoch seconds (UTC) of a timestamp given as int seconds, datetime or datetime64."""
    if isinstance(timestamp, datetime):
        if timestamp.tzinfo is None:
            raise ValueError(f"naive datetime {timestamp!r}: give a timezone (UTC)")
        return int(timestamp.timestamp())
    if isinstance(timestamp, np.datetime64):
        return int(timestamp.astype("datetime64[s]").astype(np.int64))
    return int(timestamp)


class DetectorBank:
    """``n_series`` detectors of one config updated together, one tick at a time.

    ``thresholds`` (per series; default ``config.h`` or ``config.limit``) and the per-series
    seasonality switches ``daily``/``weekly`` are what calibration chooses.
    """

    def __init__(
        self,
        config: DetectorConfig,
        n_series: int,
        *,
        thresholds: ArrayLike | None = None,
        daily: ArrayLike | None = None,
        weekly: ArrayLike | None = None,
    ) -> None:
        if n_series < 1:
            raise ValueError(f"n_series must be >= 1, got {n_series}")
        self.config = config
        self.n_series = n_series
        shape = (n_series,)
        self.thresholds = np.broadcast_to(
            np.asarray(config.default_threshold if thresholds is None else thresholds, float),
            shape,
        ).copy()
        if not np.all(self.thresholds > 0):
            raise ValueError("thresholds must all be > 0")
        self.baseline = SeasonalBaseline(
            n_series,
            config.baseline,
            daily=config.daily if daily is None else np.asarray(daily, bool),
            weekly=config.weekly if weekly is None else np.asarray(weekly, bool),
        )
        self.seen = np.zeros(shape, dtype=np.int64)  # valid points so far
        self.pos = np.zeros(shape)  # CUSUM S⁺, or EWMA E
        self.neg = np.zeros(shape)  # CUSUM S⁻
        self.ewma_n = np.zeros(shape)
        self.last_ewma_stat = np.zeros(shape)
        self.run = np.zeros(shape, dtype=np.int64)  # points since the statistic left zero
        self.holding = np.zeros(shape, dtype=bool)
        self.hold_n = np.zeros(shape, dtype=np.int64)
        self.hold_resid = np.zeros(shape)
        self.hold_resid_n = np.zeros(shape, dtype=np.int64)
        # thin proportion/ratio ticks are pooled until they carry enough information
        self.pool_x = np.zeros(shape)
        self.pool_n = np.zeros(shape)
        self.pool_e = np.zeros(shape)
        self.pool_info = np.zeros(shape)
        self.hold_z = np.zeros(shape)
        self.hold_z2 = np.zeros(shape)
        self.last_fire_run = np.zeros(shape, dtype=np.int64)
        self.last_fire_ts = np.full(shape, -1, dtype=np.int64)
        self.ring_scores = np.full((config.onset_buffer, n_series), np.nan)
        self.ring_ts = np.full(config.onset_buffer, -1, dtype=np.int64)
        self.ticks = 0
        self.last_timestamp: int | None = None
        self._all_warm = False  # every series past warm-up (stays so: its inputs only grow)
        self._ones = np.ones(shape)
        self._nans = np.full(shape, np.nan)
        self._no_direction = np.zeros(shape, dtype=np.int8)
        # the LLR bank: one CUSUM per alternative (ups, then downs) per series
        self.llr_stat = np.zeros((2 * len(config.llr_effects), n_series))
        #: when a dict, every tick's LLR inputs are appended to it (for calibration)
        self.recording: dict[str, list[NDArray[Any]]] | None = None
        # an LLR detector's share/ratio baseline: traffic-weighted sums, exponentially
        # forgotten (Σx/Σn): unbiased on 0/1 buckets, where a clipped residual is not
        self.ew_x = np.zeros(shape)
        self.ew_n = np.zeros(shape)
        self.hold_x = np.zeros(shape)
        self.hold_den = np.zeros(shape)
        self._ew_keep = math.exp(
            -config.baseline.step_seconds / max(config.llr_memory_seconds, 1.0)
        )
        self._weighted = config.method == "llr" and config.kind != "value"
        #: noise per unit beyond the model over buckets of an hour (sessions' turns come in
        #: clusters): a floor on the LLR's noise factor, set by calibration
        self.llr_dispersion = np.ones(shape)

    # -- inputs ---------------------------------------------------------------------------
    def _inputs(
        self,
        values: ArrayLike | None,
        numerators: ArrayLike | None,
        denominators: ArrayLike | None,
        rows: int | None = None,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Observed values ``y`` and denominators ``n`` (NaN = no data), validated.

        Works on one tick (``rows=None``: arrays of ``n_series``) or on a whole block
        (``rows`` ticks: arrays ``(rows, n_series)``) with the same elementwise arithmetic,
        so a backfill prepares its inputs once, vectorised over time.
        """
        shape = (self.n_series,) if rows is None else (rows, self.n_series)
        if self.config.kind == "value":
            if values is None:
                raise ValueError("a value detector needs values")
            y = np.broadcast_to(np.asarray(values, float), shape)
            return y, np.ones(shape)
        if numerators is None or denominators is None:
            raise ValueError(f"a {self.config.kind} detector needs numerators and denominators")
        num = np.broadcast_to(np.asarray(numerators, float), shape)
        den = np.broadcast_to(np.asarray(denominators, float), shape)
        broken = den < 0
        if self.config.kind == "proportion":
            broken |= (num < 0) | (num > den)
        if broken.any():
            where = np.unravel_index(int(np.argmax(broken)), shape)
            bad = int(where[-1])
            if den[where] < 0:
                raise ValueError(f"series {bad}: denominator {den[where]} is negative")
            if num[where] < 0:
                raise ValueError(
                    f"series {bad}: numerator {num[where]} of a proportion is negative"
                )
            raise ValueError(
                f"series {bad}: numerator {num[where]} exceeds denominator {den[where]}"
            )
        thick = den >= max(self.config.min_denominator, 1e-300)
        y = np.where(thick, num / np.where(thick, den, 1.0), np.nan)
        return y, np.where(thick, den, np.nan)

    # -- one tick -------------------------------------------------------------------------
    def update(
        self,
        timestamp: int | datetime | np.datetime64,
        values: ArrayLike | None = None,
        numerators: ArrayLike | None = None,
        denominators: ArrayLike | None = None,
    ) -> TickResult:
        """Consume one tick (a value per series; NaN = missing) and return its verdicts."""
        ts = to_epoch_seconds(timestamp)
        self._check_time(ts)
        y, n = self._inputs(values, numerators, denominators)
        return self._step(ts, y, n)

    def _check_time(self, first: int) -> None:
        if self.last_timestamp is not None and first <= self.last_timestamp:
            raise ValueError(
                f"timestamps must increase: {first} after {self.last_timestamp} (tick {self.ticks})"
            )

    def _step(self, ts: int, y: NDArray[np.float64], n: NDArray[np.float64]) -> TickResult:
        """The detector arithmetic of one tick on validated inputs (see the module doc).

        Streaming (:meth:`update`) and batch (:meth:`ticks`, :meth:`run_batch`) both come
        here, one tick at a time, so they agree exactly. Work that cannot change any state
        (holds when nothing is held, warm-up checks once every series is warm) is skipped.
        """
        cfg = self.config
        self.last_timestamp = ts
        valid = np.isfinite(y)
        base = self.baseline
        bins = base.bins(ts)
        expected = base.expected(bins)
        if self._weighted:  # Σx/Σn once it has seen traffic
            expected = np.where(
                self.ew_n > 0, self.ew_x / np.where(self.ew_n > 0, self.ew_n, 1.0), expected
            )
        raw_scale = base.scale()

        if cfg.kind == "proportion":
            weight = binomial_sd(expected, n)
            scale = np.fmax(raw_scale, 1.0)  # NaN (unknown) → 1: never tighter than binomial
            if cfg.method == "llr":  # the LLR weighs each bucket by its traffic: no pooling
                raw_z = (y - expected) / (weight * scale)
            else:
                info = binomial_information(expected, n)
                raw_z = self._pooled_score(valid, y, n, expected, scale, info)
        else:
            scale = np.maximum(raw_scale, 1e-9 * (1.0 + np.abs(expected)))  # NaN stays NaN
            if cfg.kind == "ratio":
                weight = 1.0 / np.sqrt(n)
                if cfg.resolution > 0:  # a ratio of counts cannot resolve less than one count
                    scale = np.fmax(scale, count_resolution_sd(n, cfg.resolution) / weight)
                if cfg.method == "llr":
                    raw_z = (y - expected) / (weight * scale)
                else:
                    raw_z = self._pooled_score(valid, y, n, expected, scale, n)
            else:
                weight = self._ones
                raw_z = (y - expected) / scale
        z = np.minimum(
            np.maximum(raw_z, -cfg.score_clip), cfg.score_clip
        )  # (ufuncs: no np.clip overhead)
        scored = z == z  # NaN where missing, still pooling, or the scale is unknown

        if not self._all_warm:
            warm = (self.seen >= cfg.warmup_points) & ~base.initialising & (base.scale_visits >= 10)
            self._all_warm = bool(warm.all())
            active = scored & warm
        else:
            active = scored
        any_holding = bool(self.holding.any())
        if any_holding:
            active = active & ~self.holding  # a new array: ``scored`` is used by the hold
        zero = np.where(active, z, 0.0)
        thr = self.thresholds
        if cfg.method == "cusum":
            new_pos, new_neg = cusum_update(self.pos, self.neg, zero, cfg.k)
            pos = np.where(active, new_pos, self.pos)
            neg = np.where(active, new_neg, self.neg)
            moving = (pos > 0) | (neg > 0)
            self.run = np.where(active, np.where(moving, self.run + 1, 0), self.run)
            statistic = np.where(pos >= neg, pos, -neg)
        elif cfg.method == "llr":
            pos, neg, statistic = self._llr_step(active, y, n, expected, weight, scale)
        else:
            new_e, new_n, new_stat = ewma_update(self.pos, self.ewma_n, zero, cfg.lam)
            pos = np.where(active, new_e, self.pos)
            neg = self.neg
            self.ewma_n = np.where(active, new_n, self.ewma_n)
            previous = np.where(self.ewma_n > 0, self.last_ewma_stat, 0.0)
            statistic = np.where(active, new_stat, previous)
            self.last_ewma_stat = statistic
            same_sign = np.sign(pos) == np.sign(self.pos)
            self.run = np.where(active, np.where(same_sign, self.run + 1, 1), self.run)
        fired = active & (np.abs(statistic) > thr)
        any_fired = bool(fired.any())

        # baseline learns from ordinary points (not from alarms or holds); the Huber clip
        # bounds what an anomaly can teach it before detection
        learn = valid
        if any_holding:
            learn = learn & ~self.holding
        if any_fired:
            learn = learn & ~fired
        residual = np.where(learn, y - expected, 0.0)
        base.update(ts, bins, y, residual, np.where(learn, weight, 1.0), learn, scale)
        self.seen += valid
        if self._weighted:
            keep = self._ew_keep
            self.ew_x = np.where(learn, keep * self.ew_x + y * n, self.ew_x)
            self.ew_n = np.where(learn, keep * self.ew_n + n, self.ew_n)

        self._last_n = n
        if any_holding:  # accumulate the residuals that follow an alarm, then re-baseline
            self._hold_step(y, expected, valid, scored, z)
        if any_fired:  # alarms: start a hold, reset the statistic
            direction = np.where(fired, np.sign(statistic), 0).astype(np.int8)
            self.last_fire_run = np.where(fired, self.run, self.last_fire_run)
            self.last_fire_ts = np.where(fired, ts, self.last_fire_ts)
            self.holding = self.holding | fired
            self.hold_n = np.where(fired, 0, self.hold_n)
            self.hold_resid = np.where(fired, 0.0, self.hold_resid)
            self.hold_resid_n = np.where(fired, 0, self.hold_resid_n)
            self.hold_x = np.where(fired, 0.0, self.hold_x)
            self.hold_den = np.where(fired, 0.0, self.hold_den)
            self.hold_z = np.where(fired, 0.0, self.hold_z)
            self.hold_z2 = np.where(fired, 0.0, self.hold_z2)
            pos = np.where(fired, 0.0, pos)
            neg = np.where(fired, 0.0, neg)
            self.ewma_n = np.where(fired, 0.0, self.ewma_n)
            self.last_ewma_stat = np.where(fired, 0.0, self.last_ewma_stat)
            self.run = np.where(fired, 0, self.run)
            if cfg.method == "llr":
                self.llr_stat = np.where(fired, 0.0, self.llr_stat)
        else:
            direction = self._no_direction
        self.pos, self.neg = pos, neg

        slot = self.ticks % cfg.onset_buffer
        self.ring_scores[slot] = z
        self.ring_ts[slot] = ts
        self.ticks += 1

        half = cfg.interval_z * scale * weight
        lower, upper = expected - half, expected + half
        if cfg.kind == "proportion":
            lower = np.minimum(np.maximum(lower, 0.0), 1.0)
            upper = np.minimum(np.maximum(upper, 0.0), 1.0)
        return TickResult(
            timestamp=ts,
            observed=y,
            expected=expected,
            lower=lower,
            upper=upper,
            score=z,
            statistic=statistic,
            threshold=thr.copy(),
            fired=fired,
            in_alarm=self.holding.copy(),
            direction=direction,
        )

    def _hold_step(
        self,
        y: NDArray[np.float64],
        expected: NDArray[np.float64],
        valid: NDArray[np.bool_],
        scored: NDArray[np.bool_],
        z: NDArray[np.float64],
    ) -> None:
        """One tick of the confirmation hold; at its end re-baseline a confirmed shift."""
        cfg = self.config
        holding_now = self.holding & scored
        held_valid = self.holding & valid
        if self._weighted:
            self.hold_x = self.hold_x + np.where(held_valid, y * self._last_n, 0.0)
            self.hold_den = self.hold_den + np.where(held_valid, self._last_n, 0.0)
        self.hold_n = self.hold_n + holding_now
        self.hold_resid = self.hold_resid + np.where(held_valid, y - expected, 0.0)
        self.hold_resid_n = self.hold_resid_n + held_valid
        self.hold_z = self.hold_z + np.where(holding_now, z, 0.0)
        self.hold_z2 = self.hold_z2 + np.where(holding_now, z * z, 0.0)
        done = self.holding & (self.hold_n >= cfg.confirm_points)
        if done.any():
            count = np.maximum(self.hold_n, 1)
            mean_z = self.hold_z / count
            shift = done & (np.abs(mean_z) > cfg.confirm_z)
            resid_n = np.maximum(self.hold_resid_n, 1)
            self.baseline.shift_level(self.hold_resid / resid_n, shift, resid_n)
            if self._weighted:  # the new regime's share, from the hold's traffic
                self.ew_x = np.where(shift, self.hold_x, self.ew_x)
                self.ew_n = np.where(shift, self.hold_den, self.ew_n)
            sd_z = np.sqrt(np.maximum(self.hold_z2 / count - mean_z**2, 0.0))
            self.baseline.widen_scale(sd_z, done & (sd_z > 1.5))
            self.holding = self.holding & ~done

    def llr_increments(
        self,
        y: NDArray[np.float64],
        n: NDArray[np.float64],
        expected: NDArray[np.float64],
        sd: NDArray[np.float64],
    ) -> NDArray[np.float64]:
        """LLR increments ``(J, n_series)`` of one tick (see :mod:`tripwire.monitor.llr`).

        ``sd`` is the noise the series' kind implies at that traffic: for proportions the
        over-dispersion factor (≥ 1), otherwise the standard deviation of ``y``.
        """
        cfg = self.config
        if cfg.kind == "proportion":
            return binomial_increments(y * n, n, expected, cfg.llr_effects, sd)
        return gaussian_increments(y - expected, expected, sd * sd, cfg.llr_effects)

    def _llr_step(
        self,
        active: NDArray[np.bool_],
        y: NDArray[np.float64],
        n: NDArray[np.float64],
        expected: NDArray[np.float64],
        weight: NDArray[np.float64],
        scale: NDArray[np.float64],
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """One tick of the LLR CUSUM bank; returns (max up, max down, signed statistic)."""
        if self.config.kind == "proportion":
            # the hourly over-dispersion from calibration, not the per-bucket scale: a 0/1
            # bucket's absolute residual says nothing about over-dispersion, and a factor
            # that wanders with it would make the calibrated threshold mean another rate
            sd = self.llr_dispersion
        else:
            sd = np.fmax(scale, self.llr_dispersion) * weight
        if self.recording is not None:
            for key, value in (("y", y), ("n", n), ("expected", expected), ("sd", sd)):
                self.recording.setdefault(key, []).append(value)
            self.recording.setdefault("active", []).append(active)
        inc = self.llr_increments(y, n, expected, sd)
        stat = np.where(active, cusum_step(self.llr_stat, inc), self.llr_stat)
        self.llr_stat = stat
        half = stat.shape[0] // 2
        up, down = stat[:half].max(axis=0), stat[half:].max(axis=0)
        moving = (up > 0) | (down > 0)
        self.run = np.where(active, np.where(moving, self.run + 1, 0), self.run)
        return up, down, np.where(up >= down, up, -down)

    def reset_statistics(self) -> None:
        """Zero the detector statistics (not the baseline): e.g. after a threshold change."""
        self.llr_stat = np.zeros_like(self.llr_stat)
        self.pos = np.zeros(self.n_series)
        self.neg = np.zeros(self.n_series)
        self.ewma_n = np.zeros(self.n_series)
        self.last_ewma_stat = np.zeros(self.n_series)
        self.run = np.zeros(self.n_series, dtype=np.int64)
        self.holding = np.zeros(self.n_series, dtype=bool)

    def _pooled_score(
        self,
        valid: NDArray[np.bool_],
        y: NDArray[np.float64],
        n: NDArray[np.float64],
        expected: NDArray[np.float64],
        scale: NDArray[np.float64],
        info: NDArray[np.float64],
    ) -> NDArray[np.float64]:
        """Score of counts pooled over consecutive ticks until they hold ``min_information``.

        Information ``info`` is ``n·p̂(1−p̂)`` for a proportion (the binomial variance of the
        count) and ``n`` for a ratio. At segment traffic every tick scores on its own; at
        1 session/min ~25 minutes are pooled, so the normal approximation behind the score
        (and the calibration) holds instead of a single conversion reading as a 2σ jump.
        ``z = (Σx − Σn·ŷ)/(σ·√Σinfo)``; NaN while still pooling.
        """
        self.pool_x = self.pool_x + np.where(valid, y * n, 0.0)
        self.pool_n = self.pool_n + np.where(valid, n, 0.0)
        self.pool_e = self.pool_e + np.where(valid, expected * n, 0.0)
        self.pool_info = self.pool_info + np.where(valid, info, 0.0)
        ready = valid & (self.pool_info >= self.config.min_information)
        if not ready.any():
            return self._nans
        z = np.where(
            ready,
            (self.pool_x - self.pool_e) / (scale * np.sqrt(np.where(ready, self.pool_info, 1.0))),
            np.nan,
        )
        self.pool_x = np.where(ready, 0.0, self.pool_x)
        self.pool_n = np.where(ready, 0.0, self.pool_n)
        self.pool_e = np.where(ready, 0.0, self.pool_e)
        self.pool_info = np.where(ready, 0.0, self.pool_info)
        return z

    # -- many ticks -----------------------------------------------------------------------
    def ticks_of(
        self,
        timestamps: ArrayLike,
        values: ArrayLike | None = None,
        numerators: ArrayLike | None = None,
        denominators: ArrayLike | None = None,
    ) -> Iterator[TickResult]:
        """Consume ``(n_ticks, n_series)`` arrays tick by tick, yielding each tick's verdicts.

        The inputs are validated and turned into values and denominators once for the whole
        block (vectorised over time); each tick then runs the same arithmetic as
        :meth:`update`, so a backfill and a stream over the same data agree exactly.
        """
        ts = np.asarray(timestamps)
        rows = int(ts.shape[0])

        def prepare(arr: ArrayLike | None, name: str) -> NDArray[np.float64] | None:
            if arr is None:
                return None
            a = np.asarray(arr, float)
            if a.ndim == 1:
                a = a[:, None]
            if a.shape[0] != rows:
                raise ValueError(
                    f"{name}: expected {rows} rows (one per timestamp), got {a.shape[0]}"
                )
            return a

        if ts.dtype.kind == "M":
            stamps = ts.astype("datetime64[s]").astype(np.int64).tolist()
        else:
            stamps = [to_epoch_seconds(t) for t in ts.tolist()]
        if rows == 0:
            return
        steps = np.diff(np.asarray(stamps, dtype=np.int64))
        if steps.size and (steps <= 0).any():
            bad = int(np.argmax(steps <= 0)) + 1
            raise ValueError(
                f"timestamps must increase: {stamps[bad]} after {stamps[bad - 1]} (row {bad})"
            )
        self._check_time(stamps[0])
        y, n = self._inputs(
            prepare(values, "values"),
            prepare(numerators, "numerators"),
            prepare(denominators, "denominators"),
            rows=rows,
        )
        for i in range(rows):
            yield self._step(stamps[i], y[i], n[i])

    def run_batch(
        self,
        timestamps: ArrayLike,
        values: ArrayLike | None = None,
        numerators: ArrayLike | None = None,
        denominators: ArrayLike | None = None,
        *,
        fields: Collection[str] | None = None,
    ) -> RunResult:
        """Backfill: :meth:`ticks_of` over ``(n_ticks, n_series)`` arrays, results stacked.

        ``fields`` limits which per-tick arrays are kept (default all; see :class:`RunResult`).
        """
        unknown = set(fields or ()) - set(RESULT_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown result fields {sorted(unknown)}; choose from {list(RESULT_FIELDS)}"
            )
        rows = int(np.asarray(timestamps).shape[0])
        keep = RESULT_FIELDS if fields is None else {f: RESULT_FIELDS[f] for f in fields}
        out: dict[str, NDArray[Any]] = {
            name: np.empty((rows if name in keep else 0, self.n_series), dtype=dtype)
            for name, dtype in RESULT_FIELDS.items()
        }
        stamps = np.empty(rows, dtype=np.int64)
        for i, tick in enumerate(self.ticks_of(timestamps, values, numerators, denominators)):
            stamps[i] = tick.timestamp
            for name in keep:
                out[name][i] = getattr(tick, name)
        return RunResult(timestamps=stamps, **out)

    # -- onset ----------------------------------------------------------------------------
    def recent_scores(self, series: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """The last ``onset_buffer`` (timestamp, score) of a series, oldest first."""
        size = self.config.onset_buffer
        order = (np.arange(size) + self.ticks) % size
        ts = self.ring_ts[order]
        keep = ts >= 0
        return ts[keep], self.ring_scores[order, series][keep]

    def locate_onset(self, series: int) -> Onset:
        """Onset of the change behind the latest alarm of ``series`` (call right after it fires).

        Uses the scores up to the alarm, over a window of ~4× the alarm's run length (so the
        pre-change regime is in view), and the change-point search of
        :func:`tripwire.monitor.onset.locate_onset`.
        """
        if self.last_fire_ts[series] < 0:
            raise ValueError(f"series {series} has not fired")
        ts, scores = self.recent_scores(series)
        upto = ts <= self.last_fire_ts[series]
        ts, scores = ts[upto], scores[upto]
        run = int(self.last_fire_run[series])
        window = min(ts.size, max(30, 4 * run + 20))
        return locate_onset(ts[-window:], scores[-window:], run_length=run)


@dataclass(frozen=True)
class Verdict:
    """One point of one series, as plain floats."""

    timestamp: int
    observed: float
    expected: float
    lower: float
    upper: float
    score: float
    statistic: float
    threshold: float
    fired: bool
    in_alarm: bool
    direction: int


class Detector:
    """A single-series detector: ``update(timestamp, value)`` or ``update(t, numerator=, denominator=)``.

    >>> det = Detector(DetectorConfig(daily=False, warmup_seconds=600))
    >>> for minute in range(30):
    ...     v = det.update(minute * 60, 10.0 + (minute % 3) * 0.1)
    >>> v.fired, round(v.expected, 2)
    (False, 10.1)
    """

    def __init__(
        self,
        config: DetectorConfig,
        *,
        threshold: float | None = None,
        daily: bool | None = None,
        weekly: bool | None = None,
    ) -> None:
        self.bank = DetectorBank(config, 1, thresholds=threshold, daily=daily, weekly=weekly)

    @property
    def config(self) -> DetectorConfig:
        return self.bank.config

    def update(
        self,
        timestamp: int | datetime | np.datetime64,
        value: float | None = None,
        *,
        numerator: float | None = None,
        denominator: float | None = None,
    ) -> Verdict:
        tick = self.bank.update(timestamp, value, numerator, denominator)
        return Verdict(
            timestamp=tick.timestamp,
            observed=float(tick.observed[0]),
            expected=float(tick.expected[0]),
            lower=float(tick.lower[0]),
            upper=float(tick.upper[0]),
            score=float(tick.score[0]),
            statistic=float(tick.statistic[0]),
            threshold=float(tick.threshold[0]),
            fired=bool(tick.fired[0]),
            in_alarm=bool(tick.in_alarm[0]),
            direction=int(tick.direction[0]),
        )

    def run_batch(
        self,
        timestamps: ArrayLike,
        values: ArrayLike | None = None,
        numerators: ArrayLike | None = None,
        denominators: ArrayLike | None = None,
    ) -> RunResult:
        """Batch over history (same arithmetic as :meth:`update`); arrays of shape ``(T,)``."""

        def col(a: ArrayLike | None) -> NDArray[np.float64] | None:
            return None if a is None else np.asarray(a, float)[:, None]

        return self.bank.run_batch(timestamps, col(values), col(numerators), col(denominators))

    def locate_onset(self) -> Onset:
        return self.bank.locate_onset(0)
