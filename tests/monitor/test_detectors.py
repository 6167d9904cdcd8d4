"""Detectors: hand-computed recursions, streaming == batch, and behaviour on simulated series.

Traffic level used for the proportion tests: a site with 2,000 sessions/min, a segment with
5% of it = 100 sessions/min on average (±60% over the day), conversion 22%.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from tripwire.monitor.baselines import BaselineSettings, mad_scale
from tripwire.monitor.detectors import (
    Detector,
    DetectorBank,
    DetectorConfig,
    cusum_update,
    ewma_update,
)

START = 1_767_225_600  # 2026-01-01 00:00 UTC
DAY = 1440


def proportion_world(
    rng: np.random.Generator,
    n_series: int,
    days: float,
    *,
    sessions: float = 100.0,
    drop_at: int | None = None,
    drop: float = 0.25,
    step: int = 60,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sessions per minute ``sessions`` (±60% over the day); conversion 22%, maybe dropping."""
    steps = int(days * 86400 / step)
    ts = START + np.arange(steps) * step
    minute = (ts % 86400) / 60
    traffic = sessions * step / 60 * (1 + 0.6 * np.sin(2 * np.pi * (minute - 420) / DAY))
    n = rng.poisson(traffic[:, None], size=(steps, n_series)).astype(float)
    p = np.full(steps, 0.22)
    if drop_at is not None:
        p[drop_at:] *= 1 - drop
    x = rng.binomial(n.astype(np.int64), p[:, None]).astype(float)
    return ts, x, n


# -- the recursions by hand ------------------------------------------------------------------


def test_cusum_recursion_by_hand():
    z = [0.2, 1.5, 2.0, -0.3, 3.0, -4.0, -1.0]
    pos, neg = np.zeros(1), np.zeros(1)
    seen = []
    for value in z:
        pos, neg = cusum_update(pos, neg, np.array([value]), 0.5)
        seen.append((round(float(pos[0]), 10), round(float(neg[0]), 10)))
    # S+ = max(0, S+ + z - 0.5); S- = max(0, S- - z - 0.5)
    assert seen == [
        (0.0, 0.0),
        (1.0, 0.0),
        (2.5, 0.0),
        (1.7, 0.0),
        (4.2, 0.0),
        (0.0, 3.5),
        (0.0, 4.0),
    ]


def test_ewma_recursion_by_hand():
    lam = 0.2
    e, n = np.zeros(1), np.zeros(1)
    stats = []
    for value in [1.0, 2.0, -1.0]:
        e, n, stat = ewma_update(e, n, np.array([value]), lam)
        stats.append(float(stat[0]))
    # E: 0.2, 0.56, 0.248; var_i = 0.2/1.8 * (1 - 0.8^(2i)): 0.04, 0.0655..., 0.08022...
    assert e[0] == pytest.approx(0.248)
    assert stats[0] == pytest.approx(0.2 / np.sqrt(0.2 / 1.8 * (1 - 0.64)))
    assert stats[1] == pytest.approx(0.56 / np.sqrt(0.2 / 1.8 * (1 - 0.8**4)))
    assert stats[2] == pytest.approx(0.248 / np.sqrt(0.2 / 1.8 * (1 - 0.8**6)))


def test_bank_score_is_residual_over_scale_and_binomial_weight():
    rng = np.random.default_rng(0)
    ts, x, n = proportion_world(rng, 1, 1.2)
    bank = DetectorBank(DetectorConfig(kind="proportion", daily=False, warmup_seconds=3600), 1)
    bank.run_batch(ts[:-1], numerators=x[:-1], denominators=n[:-1])
    scale = max(float(bank.baseline.scale()[0]), 1.0)
    tick = bank.update(int(ts[-1]), numerators=x[-1], denominators=n[-1])
    p = tick.expected[0]
    expected_z = (x[-1, 0] / n[-1, 0] - p) / (scale * np.sqrt(p * (1 - p) / n[-1, 0]))
    assert tick.score[0] == pytest.approx(expected_z, rel=1e-12)
    assert tick.lower[0] < p < tick.upper[0]


# -- streaming == batch ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["cusum", "ewma"])
def test_streaming_and_batch_agree_exactly(method):
    rng = np.random.default_rng(7)
    ts, x, n = proportion_world(rng, 3, 3, drop_at=int(2.2 * 288), drop=0.4, step=300)
    x[100:130, 1] = np.nan  # missing points
    config = DetectorConfig(
        method=method, kind="proportion", baseline=BaselineSettings(step_seconds=300)
    )
    batch = DetectorBank(config, 3).run_batch(ts, numerators=x, denominators=n)
    for s in range(3):
        single = Detector(config)
        verdicts = [
            single.update(int(t), numerator=x[i, s], denominator=n[i, s]) for i, t in enumerate(ts)
        ]
        for field in ("score", "expected", "statistic", "lower", "upper", "threshold"):
            got = np.array([getattr(v, field) for v in verdicts])
            assert np.array_equal(got, getattr(batch, field)[:, s], equal_nan=True), field
        assert [v.fired for v in verdicts] == batch.fired[:, s].tolist()
    assert batch.fired.any()  # the drop was seen, so the comparison covered alarms and holds


def test_datetime_and_int_timestamps_agree():
    values = 10 + np.sin(np.arange(200) / 5.0)
    a, b = Detector(DetectorConfig(daily=False)), Detector(DetectorConfig(daily=False))
    for i, v in enumerate(values):
        va = a.update(START + 60 * i, v)
        vb = b.update(datetime.fromtimestamp(START + 60 * i, UTC), v)
        assert np.array_equal(
            [getattr(va, f) for f in ("score", "expected", "lower", "statistic")],
            [getattr(vb, f) for f in ("score", "expected", "lower", "statistic")],
            equal_nan=True,
        )
        assert (va.timestamp, va.fired) == (vb.timestamp, vb.fired)


# -- behaviour on simulated series ------------------------------------------------------------


@pytest.mark.parametrize("method", ["cusum", "ewma"])
def test_level_drops_are_detected_quickly_over_many_seeds(method):
    rng = np.random.default_rng(11)
    seeds, steps, onset = 30, 2 * DAY, int(1.5 * DAY)
    ts = START + np.arange(steps) * 60
    tod = (ts % 86400) / 86400
    sigma = 5.0
    values = 200 + 40 * np.sin(2 * np.pi * tod)[:, None] + rng.normal(0, sigma, (steps, seeds))
    values[onset:] -= 4 * sigma
    bank = DetectorBank(DetectorConfig(method=method), seeds)
    out = bank.run_batch(ts, values)
    delays = [np.flatnonzero(out.fired[onset:, s]) for s in range(seeds)]
    assert all(d.size for d in delays)
    assert np.median([d[0] for d in delays]) <= 5
    # a level shift fires once, then the series is re-baselined rather than firing forever
    assert np.mean([d.size for d in delays]) <= 1.5


def test_proportion_drop_delay_at_segment_traffic():
    """25% relative drop, segment of 100 sessions/min: median delay ≤ 15 min over 40 seeds."""
    rng = np.random.default_rng(5)
    onset = int(2 * DAY + 10 * 60)  # 10:00 UTC on day 3
    ts, x, n = proportion_world(rng, 40, 2.6, drop_at=onset)
    bank = DetectorBank(DetectorConfig(kind="proportion", daily=False), 40, thresholds=9.0)
    out = bank.run_batch(ts, numerators=x, denominators=n)
    first = [np.flatnonzero(out.fired[onset:, s]) for s in range(40)]
    delays = [f[0] for f in first if f.size]
    assert len(delays) == 40
    assert np.median(delays) <= 15
    assert np.all(out.direction[onset:][out.fired[onset:]] == -1)


def test_low_traffic_does_not_fire():
    """A segment at ~1 session/min with large swings in its raw rate never pages."""
    rng = np.random.default_rng(9)
    ts, x, n = proportion_world(rng, 25, 2.5, sessions=1.0)
    bank = DetectorBank(DetectorConfig(kind="proportion", daily=False), 25, thresholds=9.0)
    out = bank.run_batch(ts, numerators=x, denominators=n)
    raw = np.where(n > 0, x / np.maximum(n, 1), np.nan)
    assert np.nanmax(np.abs(np.diff(raw, axis=0))) == 1.0  # raw swings are 0% ↔ 100%
    assert out.fired.sum() == 0


def test_spike_fires_once_and_leaves_the_level_alone():
    rng = np.random.default_rng(2)
    steps = 2 * DAY
    ts = START + np.arange(steps) * 60
    values = 50 + rng.normal(0, 1, steps)
    values[int(1.5 * DAY)] += 15
    det = Detector(DetectorConfig(daily=False))
    out = det.run_batch(ts, values)
    fired = np.flatnonzero(out.fired[:, 0])
    assert fired.tolist() == [int(1.5 * DAY)]
    assert abs(out.expected[-1, 0] - 50) < 0.5


def test_missing_points_leave_state_unchanged():
    det = Detector(DetectorConfig(daily=False, warmup_seconds=0))
    for i in range(50):
        det.update(START + 60 * i, 5.0 + 0.1 * (i % 2))
    before = (det.bank.baseline.level.copy(), det.bank.pos.copy(), det.bank.baseline.abs_dev.copy())
    v = det.update(START + 60 * 50, float("nan"))
    assert np.isnan(v.score) and not v.fired
    after = (det.bank.baseline.level, det.bank.pos, det.bank.baseline.abs_dev)
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_daily_profile_is_learnt():
    rng = np.random.default_rng(4)
    steps = 4 * 288  # 5-minute data
    ts = START + np.arange(steps) * 300
    shape = 30 * np.sin(2 * np.pi * (ts % 86400) / 86400)
    values = 100 + shape + rng.normal(0, 2, steps)
    config = DetectorConfig(baseline=BaselineSettings(step_seconds=300))
    out = Detector(config).run_batch(ts, values)
    resid = values[3 * 288 :] - out.expected[3 * 288 :, 0]
    assert abs(float(np.mean(resid))) < 0.3
    assert mad_scale(resid) < 2.6  # noise σ = 2; the 30-unit daily swing is gone


def test_onset_located_within_minutes():
    """Ten segments, each dropping at its own minute; onset from the bank right at the alarm."""
    rng = np.random.default_rng(8)
    seeds = 10
    steps = int(2.6 * DAY)
    ts = START + np.arange(steps) * 60
    onsets = 2 * DAY + 10 * 60 + rng.integers(0, 120, seeds)
    n = rng.poisson(100.0, (steps, seeds)).astype(float)
    p = np.where(np.arange(steps)[:, None] >= onsets[None, :], 0.22 * 0.75, 0.22)
    x = rng.binomial(n.astype(np.int64), p).astype(float)
    bank = DetectorBank(DetectorConfig(kind="proportion", daily=False), seeds, thresholds=9.0)
    errors: dict[int, float] = {}
    for i in range(steps):
        tick = bank.update(int(ts[i]), numerators=x[i], denominators=n[i])
        for s in np.flatnonzero(tick.fired):
            if i >= onsets[s] and s not in errors:
                errors[int(s)] = (bank.locate_onset(int(s)).timestamp - int(ts[onsets[s]])) / 60
    assert len(errors) == seeds
    assert np.median(np.abs(list(errors.values()))) <= 3
    assert np.max(np.abs(list(errors.values()))) <= 10


def test_bad_input_is_rejected_clearly():
    det = Detector(DetectorConfig(kind="proportion"))
    with pytest.raises(ValueError, match="numerators and denominators"):
        det.update(START, 0.5)
    with pytest.raises(ValueError, match="numerator 5.0 exceeds denominator 3.0"):
        det.update(START, numerator=5, denominator=3)
    det.update(START, numerator=1, denominator=3)
    with pytest.raises(ValueError, match="timestamps must increase"):
        det.update(START, numerator=1, denominator=3)
    with pytest.raises(ValueError, match="naive datetime"):
        det.update(datetime(2026, 1, 2), numerator=1, denominator=3)
    with pytest.raises(ValueError, match="method must be one of"):
        DetectorConfig(method="zscore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="daily_bins must divide"):
        BaselineSettings(daily_bins=7)
    with pytest.raises(ValueError, match="thresholds must all be > 0"):
        DetectorBank(DetectorConfig(), 2, thresholds=[1.0, 0.0])
