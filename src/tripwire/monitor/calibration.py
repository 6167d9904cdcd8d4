"""Automatic calibration: thresholds from a false-alarm target, by replaying history.

Hand-tuned ``h = 5`` pages too often on a noisy segment and never on a smooth one. Instead:

1. choose the seasonal components per series: a daily (weekly) term is modelled only if a
   robust STL of the history shows a seasonal strength ≥ ``min_strength``
   (:func:`~tripwire.monitor.baselines.seasonal_strength`);
2. replay the history through the detector's own baseline (never firing) to get its
   one-step-ahead standardised residuals — whatever their real tails and autocorrelation;
3. resample them with a moving-block bootstrap (Künsch 1989; blocks of an hour keep the
   short-range dependence) into ``paths × replay_days`` of null data, run the CUSUM/EWMA
   recursion on them for a grid of thresholds at once (with the same reset after an alarm),
   and count false alarms per day for each threshold;
4. pick the threshold whose rate meets the target (e.g. 1 per 30 days): log(rate) is close
   to linear in ``h`` for CUSUM (Siegmund 1985) and in ``L²`` for EWMA, so the rate is
   extrapolated from the well-estimated upper part of the grid instead of needing millions
   of simulated days;
5. rates are counted per *score* and turned into rates per day with the series' own scoring
   rate: a thin proportion series whose ticks are pooled scores a few times a day, a thick
   one every tick, and each gets the threshold that meets the same per-day target;
6. no threshold goes below what iid N(0, 1) scores would need (a reference replayed by the
   same bootstrap): a few hundred history scores cannot show the tail a 1-in-10⁴ threshold
   lives in, and a short, quiet history would otherwise give a thin series a threshold
   that pages weekly. A series with fewer than ``MIN_OWN_SCORES`` (200) null scores gets
   the reference threshold at its own scoring rate: a bootstrap of a few dozen scores
   (four days of an hourly series, minus its warm-up) extrapolates its tail from noise,
   in either direction — one cold-start residual in it set a 2.5× higher threshold.

The result carries per-series thresholds and seasonality switches and a bank already warmed
on the history, ready to stream the next tick.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tripwire.monitor.baselines import DAY_SECONDS, WEEK_SECONDS, mad_scale, seasonal_strength
from tripwire.monitor.detectors import (
    DetectorBank,
    DetectorConfig,
    RunResult,
    cusum_update,
    ewma_update,
)

MIN_SCORES = 30  # fewer points than this after warm-up: no calibration at all
MIN_OWN_SCORES = 200  # fewer null scores than this: the normal reference sets the threshold
REFERENCE_SCORES = 20_000  # iid N(0, 1) scores: the floor every calibrated threshold keeps
MAX_SCORE_INFLATION = 2.0  # history scores are scaled up to unit robust sd by at most this
SCORE_WINSOR = 6.0  # residuals beyond ±6σ in history are anomalies, not noise to calibrate on


@dataclass(frozen=True)
class Calibration:
    """Per-series calibration of one detector config (arrays of length ``n_series``).

    A series with fewer than ``MIN_OWN_SCORES`` null scores in its history (e.g. a segment so thin
    that its pooled counts score a few times a day) gets the threshold normal scores would
    need at its scoring rate; one that never scored keeps the config's default threshold and
    has a NaN estimated rate.
    """

    config: DetectorConfig
    thresholds: NDArray[np.float64]
    daily: NDArray[np.bool_]
    weekly: NDArray[np.bool_]
    estimated_false_alarms_per_day: NDArray[np.float64]
    target_false_alarms_per_day: float
    history_points: NDArray[np.int64]


@dataclass(frozen=True)
class CalibrationRun:
    """A calibration and the bank that replayed the history (state ready for the next tick)."""

    calibration: Calibration
    bank: DetectorBank
    history: RunResult


def choose_seasonality(
    timestamps: NDArray[np.int64],
    values: NDArray[np.float64],
    *,
    min_strength: float = 0.4,
    default_daily: bool = True,
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Per-series (daily, weekly) switches from robust-STL seasonal strength of ``values (T, S)``.

    Strength is only trusted over at least four periods: with less history the daily term is
    ``default_daily`` (for values, keep it: missing a real daily cycle costs far more than
    modelling an absent one; for proportions, drop it: at minute grain binomial noise dwarfs
    the daily swing of a rate, and traffic seasonality is already in the binomial weights)
    and the weekly term is left out (it could not be learnt in time anyway).
    """
    ts = np.asarray(timestamps, dtype=np.int64)
    span = int(ts[-1] - ts[0]) if ts.size else 0
    vals = np.asarray(values, float)
    if vals.ndim == 1:
        vals = vals[:, None]
    daily = np.zeros(vals.shape[1], dtype=bool)
    weekly = np.zeros(vals.shape[1], dtype=bool)
    for s in range(vals.shape[1]):
        if span >= 4 * DAY_SECONDS:
            daily[s] = seasonal_strength(ts, vals[:, s], DAY_SECONDS) >= min_strength
        else:  # a daily profile needs a day to initialise and another to be calibrated on
            daily[s] = default_daily and span >= 2 * DAY_SECONDS
        if span >= 4 * WEEK_SECONDS:
            weekly[s] = seasonal_strength(ts, vals[:, s], WEEK_SECONDS) >= min_strength
    return daily, weekly


def excursions(history: RunResult) -> NDArray[np.bool_]:
    """Points belonging to an alarm: its excursion (statistic off zero) up to the hold's end."""
    out = history.in_alarm.copy()
    stat = history.statistic
    for t, s in zip(*np.nonzero(history.fired), strict=True):
        start = t
        while start > 0 and stat[start - 1, s] != 0.0:
            start -= 1
        out[start : t + 1, s] = True
    return out


def threshold_grid(config: DetectorConfig, size: int = 28) -> NDArray[np.float64]:
    """Candidate thresholds: CUSUM h in [1, 60], EWMA L in [1.5, 15], geometric."""
    low, high = (1.0, 60.0) if config.method == "cusum" else (1.5, 15.0)
    return np.geomspace(low, high, size)


def bootstrap_alarm_rates(
    scores: list[NDArray[np.float64]],
    config: DetectorConfig,
    grid: NDArray[np.float64],
    *,
    points_per_day: float,
    replay_days: float,
    paths: int,
    block: int,
    rng: np.random.Generator,
) -> NDArray[np.float64]:
    """False alarms per day, shape ``(n_series, len(grid))``, on block-bootstrapped scores."""
    n_series = len(scores)
    steps = int(np.ceil(replay_days * points_per_day))
    n_blocks = -(-steps // block)
    counts = np.zeros((grid.size, n_series * paths))
    g = grid[:, None]
    lam, k = config.lam, config.k
    offsets = np.arange(block)
    # null replay: each path is a chain of random blocks of the series' own scores
    z = np.empty((n_blocks * block, n_series * paths))
    for i, s in enumerate(scores):
        starts = rng.integers(0, max(s.size - block, 0) + 1, size=(n_blocks, paths))
        idx = np.minimum(starts[:, None, :] + offsets[None, :, None], s.size - 1)
        z[:, i * paths : (i + 1) * paths] = s[idx].reshape(n_blocks * block, paths)
    z = z[:steps]
    pos = np.zeros_like(counts)
    neg = np.zeros_like(counts)
    ewma_n = np.zeros_like(counts)
    for t in range(steps):
        zt = z[t]
        if config.method == "cusum":
            pos, neg = cusum_update(pos, neg, zt, k)
            fire = (pos > g) | (neg > g)
            pos[fire] = 0.0
            neg[fire] = 0.0
        else:
            pos, ewma_n, stat = ewma_update(pos, ewma_n, zt, lam)
            fire = np.abs(stat) > g
            pos[fire] = 0.0
            ewma_n[fire] = 0.0
        counts += fire
    days = steps / points_per_day
    return np.asarray((counts.reshape(grid.size, n_series, paths).sum(axis=2) / (paths * days)).T)


def threshold_for_rate(
    grid: NDArray[np.float64],
    rates: NDArray[np.float64],
    target: float,
    *,
    method: str,
    min_alarms_per_point: float,
    days: float,
) -> tuple[float, float]:
    """Smallest threshold whose (extrapolated) false-alarm rate is ≤ ``target``.

    Fits log(rate) linearly in ``h`` (CUSUM) or ``L²`` (EWMA) over the top of the grid with
    enough simulated alarms, and never returns less than a threshold empirically above target.
    """
    x = grid if method == "cusum" else grid**2
    reliable = rates * days >= min_alarms_per_point
    above = np.flatnonzero(rates > target)
    floor = grid[above.max()] if above.size else grid[0]
    if not reliable.any():
        return float(floor), float(rates[np.searchsorted(grid, floor)])
    idx = np.flatnonzero(reliable)[-4:]
    if idx.size >= 2:
        slope, intercept = np.polyfit(x[idx], np.log(rates[idx]), 1)
    else:
        slope, intercept = 0.0, float(np.log(rates[idx[0]]))
    if slope < 0:
        xs = (np.log(target) - intercept) / slope
        h = float(np.sqrt(xs)) if method == "ewma" and xs > 0 else float(xs)
    else:
        h = float(grid[-1])
    h = float(np.clip(max(h, floor), grid[0], grid[-1]))
    xh = h if method == "cusum" else h * h
    est = float(np.exp(intercept + slope * xh)) if slope < 0 else float(rates[idx[-1]])
    return h, est


LLR_GRID = np.geomspace(1.0, 40.0, 40)  # thresholds (nats) of an LLR CUSUM bank
LLR_BLOCK_SECONDS = 6 * 3600  # bootstrap blocks keep slow baseline errors (hours) whole
# replay length per path: the tail is extrapolated with the LLR's known slope, so 4 × 20
# days (a minute series: 115 k ticks) pin its level as well as 4 × 30 at two thirds the cost
LLR_REPLAY_DAYS = 20.0


def llr_threshold_for_rate(
    grid: NDArray[np.float64], rates: NDArray[np.float64], target: float, *, days: float
) -> tuple[float, float]:
    """Smallest LLR-CUSUM threshold whose extrapolated false-alarm rate is ≤ ``target``.

    For true likelihood ratios ``exp(S)`` is a martingale under the null, so an excursion
    exceeds ``h`` with probability ``∝ e^{−h}``: log(rate) falls with slope −1 in ``h``.
    The slope fitted over the top of the grid's reliable part (≥ 5 simulated alarms) is
    kept when it is shallower (real noise beyond the model: a heavier tail) and replaced by
    −1 when it is steeper (the sparse end of a finite replay, not a lighter tail).
    """
    counts = rates * days
    reliable = np.flatnonzero(counts >= 5.0)
    above = np.flatnonzero(rates > target)
    floor = float(grid[above.max()]) if above.size else float(grid[0])
    if reliable.size == 0:
        return floor, float(rates[np.searchsorted(grid, floor)])
    idx = reliable[-4:]
    slope = -1.0
    if idx.size >= 2:
        fitted = float(np.polyfit(grid[idx], np.log(rates[idx]), 1)[0])
        slope = min(max(fitted, -1.0), -1e-3)
    anchor = int(idx[-1])
    intercept = float(np.log(rates[anchor])) - slope * float(grid[anchor])
    h = (np.log(target) - intercept) / slope
    h = float(np.clip(max(h, floor), grid[0], grid[-1]))
    return h, float(np.exp(intercept + slope * h))


def hourly_dispersion(
    config: DetectorConfig, recording: dict[str, NDArray[np.float64]], usable: NDArray[np.bool_]
) -> NDArray[np.float64]:
    """Per-series noise factor (≥ 1, an sd ratio) of hourly sums against the LLR's model.

    Minute buckets of a thin series cannot show over-dispersion (a turn is resolved or not),
    but turns come in sessions and sessions in bursts: the hourly count of unresolved turns
    varies more than a binomial. ``√mean((X − E)² / V)`` over the history's hours (``X``
    observed, ``E`` expected, ``V`` the model variance of the hourly sum) measures that; the
    LLR is divided by its square (quasi-likelihood), so the clusters do not read as evidence.
    """
    y, n, expected, sd = (recording[k] for k in ("y", "n", "expected", "sd"))
    per_hour = max(1, 3600 // config.baseline.step_seconds)
    live = usable & recording["active"].astype(bool) & np.isfinite(y) & np.isfinite(expected)
    if config.kind == "proportion":
        p = np.clip(expected, 1e-6, 1 - 1e-6)
        x = np.where(live, y * n, 0.0)
        e = np.where(live, p * n, 0.0)
        v = np.where(live, n * p * (1 - p), 0.0)
    else:
        x = np.where(live, y, 0.0)
        e = np.where(live, expected, 0.0)
        v = np.where(live, sd * sd / np.square(np.fmax(sd, 1e-300) / sd), 0.0)
    hours = x.shape[0] // per_hour
    if hours == 0:
        return np.ones(x.shape[1])

    def hourly(a: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(a[: hours * per_hour].reshape(hours, per_hour, -1).sum(axis=1))

    hx, he, hv = hourly(x), hourly(e), hourly(v)
    ok = hv > 0
    ratio = np.where(ok, np.square(hx - he) / np.where(ok, hv, 1.0), 0.0)
    ratio = np.minimum(ratio, 25.0)  # one anomalous hour must not set the noise of all
    count = ok.sum(axis=0)
    phi = np.where(count >= 24, ratio.sum(axis=0) / np.maximum(count, 1), 1.0)
    return np.asarray(np.sqrt(np.maximum(phi, 1.0)))


def _block_rows(
    rows: NDArray[np.int64], length: int, block: int, rng: np.random.Generator
) -> NDArray[np.int64]:
    """``length`` row indices: random runs of ``block`` consecutive entries of ``rows``."""
    n_blocks = -(-length // block)
    starts = rng.integers(0, max(rows.size - block, 0) + 1, size=n_blocks)
    idx = np.minimum(starts[:, None] + np.arange(block)[None, :], rows.size - 1)
    return rows[idx.ravel()[:length]]


def llr_thresholds(
    bank: DetectorBank,
    recording: dict[str, NDArray[np.float64]],
    usable: NDArray[np.bool_],
    false_alarms_per_day: float,
    *,
    replay_days: float,
    paths: int,
    block: int,
    rng: np.random.Generator,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-series thresholds of an LLR CUSUM bank meeting the false-alarm target.

    Two null replays per series, each ``paths`` × ``replay_days`` long and built from blocks
    of the history's ticks (so its traffic pattern, quiet nights included, is kept):

    * *own*: the history's own LLR increments, block-bootstrapped — the series' real noise,
      over-dispersion and baseline error included (needs ``MIN_OWN_SCORES`` scored ticks);
    * *model*: fresh data drawn from the null model at each tick's traffic and expectation
      (binomial counts, or Gaussian residuals at the tracked scale) — the floor no series
      goes below, since a few days cannot show the tail a 1-in-10⁴ threshold lives in.

    Each replay gives the maxima of its excursions (:func:`tripwire.monitor.llr.run_maxima`),
    hence the alarm rate of every threshold at once; the threshold is read off the grid with
    log(rate) extrapolated linearly in ``h`` (the CUSUM's exponential tail).
    """
    from tripwire.monitor.llr import run_maxima

    cfg = bank.config
    y, n, expected, sd = (recording[k] for k in ("y", "n", "expected", "sd"))
    active = recording["active"].astype(bool)
    points_per_day = DAY_SECONDS / cfg.baseline.step_seconds
    length = max(int(replay_days * points_per_day), block)
    days = paths * length / points_per_day
    own = np.where(active[None], bank.llr_increments(y, n, expected, sd), 0.0)
    thresholds = np.full(bank.n_series, cfg.default_threshold)
    estimated = np.full(bank.n_series, np.nan)
    grid = LLR_GRID

    def rates(maxima: list[NDArray[np.float64]]) -> NDArray[np.float64]:
        m = np.sort(np.concatenate(maxima)) if maxima else np.zeros(0)
        above = m.size - np.searchsorted(m, grid, side="right")
        return np.asarray(above / days)

    def read(r: NDArray[np.float64]) -> tuple[float, float]:
        return llr_threshold_for_rate(grid, r, false_alarms_per_day, days=days)

    for s in range(bank.n_series):
        rows = np.flatnonzero(usable[:, s])
        if rows.size == 0 or not active[rows, s].any():
            continue
        model_maxima, own_maxima = [], []
        for _ in range(paths):
            take = _block_rows(rows, length, block, rng)
            ns, ps, sds = n[take, s], expected[take, s], sd[take, s]
            live = active[take, s] & np.isfinite(ns) & np.isfinite(ps)
            if cfg.kind == "proportion":
                trials = np.where(live, np.round(ns), 0).astype(np.int64)
                p = np.clip(np.where(live, ps, 0.5), 0.0, 1.0)
                draws = rng.binomial(trials, p) / np.maximum(trials, 1)
            else:
                draws = ps + np.where(live, sds, 0.0) * rng.standard_normal(take.size)
            inc = bank.llr_increments(draws[:, None], ns[:, None], ps[:, None], sds[:, None])
            inc = np.where(live[None, :, None], inc, 0.0)[:, :, 0].T
            model_maxima.append(run_maxima(inc))
            own_maxima.append(run_maxima(own[:, take, s].T))
        h, est = read(rates(model_maxima))
        if active[rows, s].sum() >= MIN_OWN_SCORES:
            own_h, own_est = read(rates(own_maxima))
            if own_h > h:
                h, est = own_h, own_est
        thresholds[s] = h
        estimated[s] = est
    return thresholds, estimated


def _calibrated(
    bank: DetectorBank,
    config: DetectorConfig,
    thresholds: NDArray[np.float64],
    estimated: NDArray[np.float64],
    false_alarms_per_day: float,
    history: RunResult,
    daily: NDArray[np.bool_],
    weekly: NDArray[np.bool_],
) -> CalibrationRun:
    """Install the thresholds in the bank (statistics zeroed) and record the calibration."""
    bank.thresholds = thresholds.copy()
    bank.reset_statistics()
    calibration = Calibration(
        config=config,
        thresholds=thresholds,
        daily=daily,
        weekly=weekly,
        estimated_false_alarms_per_day=estimated,
        target_false_alarms_per_day=false_alarms_per_day,
        history_points=np.isfinite(history.score).sum(axis=0),
    )
    return CalibrationRun(calibration=calibration, bank=bank, history=history)


def calibrate(
    config: DetectorConfig,
    timestamps: ArrayLike,
    values: ArrayLike | None = None,
    numerators: ArrayLike | None = None,
    denominators: ArrayLike | None = None,
    *,
    false_alarms_per_day: float = 1.0 / 30.0,
    seasonality: str = "auto",
    min_strength: float = 0.4,
    replay_days: float = 30.0,
    paths: int = 4,
    block_seconds: int = 3600,
    seed: int = 0,
) -> CalibrationRun:
    """Calibrate ``config`` on history arrays ``(T, S)`` (or ``(T,)`` for one series).

    ``false_alarms_per_day`` is per series: for one false page per metric per 30 days over
    ``m`` segments, pass ``1 / (30 · m)``. ``seasonality="auto"`` picks daily/weekly terms per
    series from the history; ``"config"`` keeps the config's switches.
    """
    if false_alarms_per_day <= 0:
        raise ValueError(f"false_alarms_per_day must be > 0, got {false_alarms_per_day}")
    if seasonality not in ("auto", "config"):
        raise ValueError(f"seasonality must be 'auto' or 'config', got {seasonality!r}")
    ts = np.asarray(timestamps)

    def as2d(a: ArrayLike | None) -> NDArray[np.float64] | None:
        if a is None:
            return None
        arr = np.asarray(a, float)
        return arr[:, None] if arr.ndim == 1 else arr

    v, num, den = as2d(values), as2d(numerators), as2d(denominators)
    first = next(a for a in (v, num, den) if a is not None)
    n_series = first.shape[1]
    stamps = (
        ts.astype("datetime64[s]").astype(np.int64) if ts.dtype.kind == "M" else ts.astype(np.int64)
    )
    if seasonality == "auto":
        if config.kind == "value":
            assert v is not None
            level = v
        else:
            assert num is not None and den is not None
            level = num / np.where(den > 0, den, np.nan)
        daily, weekly = choose_seasonality(
            stamps, level, min_strength=min_strength, default_daily=config.kind == "value"
        )
    else:
        daily = np.full(n_series, config.daily)
        weekly = np.full(n_series, config.weekly)

    # replay with the config's default threshold so changes in the history fire and are
    # re-baselined as they would be live; their excursions and holds are left out of the
    # null sample (they are the signal, not the noise)
    bank = DetectorBank(config, n_series, daily=daily, weekly=weekly)
    if config.method == "llr":
        bank.recording = {}
    history = bank.run_batch(stamps, v, num, den)
    recording, bank.recording = bank.recording, None
    excluded = excursions(history)
    warm_from = min(config.warmup_points, max(len(stamps) - 1, 0))
    if recording is not None:
        if len(stamps) - warm_from < MIN_SCORES:
            raise ValueError(
                f"{len(stamps)} points leave fewer than {MIN_SCORES} after warm-up "
                f"({config.warmup_points} points); give a longer history"
            )
        seen = np.cumsum(np.isfinite(history.observed), axis=0)
        usable = (seen > warm_from) & ~excluded
        arrays = {k: np.asarray(a) for k, a in recording.items()}
        bank.llr_dispersion = hourly_dispersion(config, arrays, usable)
        thresholds, estimated = llr_thresholds(
            bank,
            arrays,
            usable,
            false_alarms_per_day,
            replay_days=min(replay_days, LLR_REPLAY_DAYS),
            paths=paths,
            block=max(5, LLR_BLOCK_SECONDS // config.baseline.step_seconds),
            rng=np.random.default_rng(seed),
        )
        return _calibrated(
            bank, config, thresholds, estimated, false_alarms_per_day, history, daily, weekly
        )
    scores = []
    usable = np.zeros(n_series, dtype=bool)
    n_scored = np.zeros(n_series)
    for s in range(n_series):
        z = history.score[:, s]
        seen = np.cumsum(np.isfinite(history.observed[:, s]))
        z = z[(seen > warm_from) & np.isfinite(z) & ~excluded[:, s]]
        n_scored[s] = z.size
        if z.size < MIN_OWN_SCORES:
            continue  # too thin to bootstrap: the normal reference alone sets its threshold
        usable[s] = True
        # early in a replay the baseline's scale is still inflated by its cold start, so raw
        # scores understate live ones: scale them up to unit robust sd, never down (scores
        # wider than unit are over-dispersion the live detector will see too)
        # — at most doubled: a series that rarely moves (a ratio of counts at exactly 1.0
        # but for the odd order straddling an hour) has a MAD near 0 that says nothing
        # about its tails, and dividing by it would turn every ±1 count into ±6σ
        sd = mad_scale(z)
        z = z / min(max(sd, MAX_SCORE_INFLATION**-1), 1.0) if sd > 0 else z
        scores.append(np.clip(z, -SCORE_WINSOR, SCORE_WINSOR))

    if len(stamps) - warm_from < MIN_SCORES:
        raise ValueError(
            f"{len(stamps)} points leave fewer than {MIN_SCORES} after warm-up "
            f"({config.warmup_points} points); give a longer history"
        )
    # a pooled (thin) series scores a few times a day, a thick one every tick: the target
    # per day becomes a target per *score* through the series' own scoring rate
    step = config.baseline.step_seconds
    points_per_day = DAY_SECONDS / step
    scored_days = max(len(stamps) - warm_from, 1) / points_per_day
    scores_per_day = np.maximum(n_scored, 1.0) / scored_days
    # reference null: iid N(0, 1) scores. A bootstrap of a few hundred scores cannot show
    # the tail that sets a 1-in-10⁴ threshold, so no series gets a threshold below what
    # perfectly normal scores would need; series too thin to bootstrap get exactly that.
    rng = np.random.default_rng(seed)
    reference = rng.standard_normal(REFERENCE_SCORES)
    block = max(5, min(block_seconds // step, min((z.size for z in scores), default=600) // 4))
    grid = threshold_grid(config)
    steps = replay_days * points_per_day  # scores per path (as before: same cost, same depth)
    rates = bootstrap_alarm_rates(
        [*scores, reference],
        config,
        grid,
        points_per_day=1.0,  # rates per score
        replay_days=steps,
        paths=paths,
        block=block,
        rng=rng,
    )
    reference_rates = rates[-1]

    def read_threshold(rates_per_score: NDArray[np.float64], target: float) -> tuple[float, float]:
        return threshold_for_rate(
            grid,
            rates_per_score,
            target,
            method=config.method,
            min_alarms_per_point=5.0,
            days=steps * paths,
        )

    rows = dict(zip(np.flatnonzero(usable).tolist(), range(len(scores)), strict=True))
    thresholds = np.full(n_series, config.default_threshold)
    estimated = np.full(n_series, np.nan)
    for s in np.flatnonzero(n_scored > 0).tolist():  # never scored: keeps the default
        per_score = false_alarms_per_day / scores_per_day[s]
        normal_h, normal_est = read_threshold(reference_rates, per_score)
        h, est = normal_h, normal_est
        if s in rows:
            own_h, own_est = read_threshold(rates[rows[s]], per_score)
            if own_h > normal_h:
                h, est = own_h, own_est
        thresholds[s] = h
        estimated[s] = est * scores_per_day[s]
    return _calibrated(
        bank, config, thresholds, estimated, false_alarms_per_day, history, daily, weekly
    )
