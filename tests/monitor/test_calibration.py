"""Calibration: bootstrap alarm rates against Siegmund's ARL, thresholds meeting the target."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tripwire.monitor.calibration import (
    bootstrap_alarm_rates,
    calibrate,
    threshold_for_rate,
    threshold_grid,
)
from tripwire.monitor.detectors import DetectorConfig

START = 1_767_225_600


def siegmund_two_sided_arl(h: float, k: float) -> float:
    """Siegmund's (1985) approximation for N(0,1) scores: one side, then 1/ARL = 2/ARL⁺."""
    delta = -k
    b = h + 1.166
    one = (math.exp(-2 * delta * b) + 2 * delta * b - 1) / (2 * delta * delta)
    return one / 2


def test_bootstrap_rates_match_siegmund_on_normal_scores():
    rng = np.random.default_rng(0)
    config = DetectorConfig(k=0.5)
    grid = np.array([3.0, 4.0, 5.0])
    rates = bootstrap_alarm_rates(
        [rng.standard_normal(50_000)],
        config,
        grid,
        points_per_day=1440,
        replay_days=20,
        paths=4,
        block=60,
        rng=rng,
    )[0]
    expected = np.array([1440 / siegmund_two_sided_arl(h, 0.5) for h in grid])
    assert rates == pytest.approx(expected, rel=0.2)


def test_threshold_for_rate_extrapolates_log_linear_rates():
    grid = np.linspace(1, 20, 20)
    rates = np.exp(3.0 - 0.8 * grid)  # exact log-linear law
    h, est = threshold_for_rate(
        grid, rates, math.exp(3.0 - 0.8 * 15.5), method="cusum", min_alarms_per_point=1e-9, days=1.0
    )
    assert h == pytest.approx(15.5, abs=1e-6)
    assert est == pytest.approx(math.exp(3.0 - 0.8 * 15.5))


def test_thresholds_grow_with_stricter_targets_and_meet_them():
    """Calibrated on 3 days of null data, 40 series then run 4 more days under the null."""
    rng = np.random.default_rng(3)
    series, days = 40, 7
    steps = days * 288
    ts = START + np.arange(steps) * 300
    tod = (ts % 86400) / 86400
    values = 100 + 20 * np.sin(2 * np.pi * tod)[:, None] + rng.standard_t(5, (steps, series))
    config = DetectorConfig(baseline=DetectorConfig().baseline.__class__(step_seconds=300))
    cut = 3 * 288
    loose = calibrate(
        config,
        ts[:cut],
        values[:cut],
        false_alarms_per_day=1.0,
        replay_days=10,
        seasonality="config",
    )
    strict = calibrate(
        config,
        ts[:cut],
        values[:cut],
        false_alarms_per_day=0.1,
        replay_days=10,
        seasonality="config",
    )
    assert np.all(strict.calibration.thresholds > loose.calibration.thresholds)
    live = strict.bank.run_batch(ts[cut:], values[cut:])
    false_per_day = live.fired.sum() / (series * (days - 3))
    # target 0.1 per series-day (16 expected); allow for estimation noise, not for 3× misses
    assert false_per_day <= 0.25
    live_loose = loose.bank.run_batch(ts[cut:], values[cut:])
    assert live_loose.fired.sum() > live.fired.sum()


def test_calibration_errors_are_clear():
    ts = START + np.arange(30) * 60
    with pytest.raises(ValueError, match="give a longer history"):
        calibrate(DetectorConfig(daily=False), ts, np.ones(30), seasonality="config")
    with pytest.raises(ValueError, match="false_alarms_per_day must be > 0"):
        calibrate(DetectorConfig(), ts, np.ones(30), false_alarms_per_day=0)


def test_grid_is_increasing():
    for method in ("cusum", "ewma"):
        grid = threshold_grid(DetectorConfig(method=method))
        assert np.all(np.diff(grid) > 0)


def test_series_too_thin_to_calibrate_keeps_the_default_threshold():
    rng = np.random.default_rng(1)
    steps = 2 * 1440
    ts = START + np.arange(steps) * 60
    values = rng.normal(10, 1, (steps, 2))
    values[:, 1] = np.nan
    values[::200, 1] = 10.0  # a handful of points only
    run = calibrate(
        DetectorConfig(daily=False, warmup_seconds=3600),
        ts,
        values,
        seasonality="config",
        replay_days=5,
    )
    assert np.isfinite(run.calibration.estimated_false_alarms_per_day[0])
    assert run.calibration.thresholds[1] == DetectorConfig().h
    assert np.isnan(run.calibration.estimated_false_alarms_per_day[1])
