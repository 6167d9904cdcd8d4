"""Calibration meets its false-alarm target on thin proportion series (pooled scoring).

Segments at a few sessions an hour score a few times a day; before thresholds were read per
score with a normal-reference floor, a bootstrap of a few hundred such scores gave some of
them thresholds that paged weekly.
"""

from __future__ import annotations

import numpy as np
import pytest

from tripwire.monitor.baselines import BaselineSettings
from tripwire.monitor.calibration import calibrate
from tripwire.monitor.detectors import DetectorConfig

DAY = 86_400
START = 1_700_006_400 - 1_700_006_400 % DAY


def thin_world(seed: int, series: int, days: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minute ticks of ``series`` binomial segments at 0.02–3 sessions a minute (diurnal ±60%),
    error rate 17%: the shape of the demo's checkout segments."""
    rng = np.random.default_rng(seed)
    rates = np.geomspace(0.02, 3.0, series)
    ts = START + np.arange(days * 1440) * 60
    diurnal = 1 + 0.6 * np.sin(2 * np.pi * (ts % DAY) / DAY)
    n = rng.poisson(rates[None, :] * diurnal[:, None])
    x = rng.binomial(n, 0.17)
    return ts, x.astype(float), n.astype(float)


@pytest.mark.slow
def test_thin_series_meet_their_target_on_fresh_null_data() -> None:
    series, hist_days, live_days = 16, 3, 11
    ts, x, n = thin_world(0, series, hist_days + live_days)
    cut = hist_days * 1440
    config = DetectorConfig(
        kind="proportion",
        baseline=BaselineSettings(step_seconds=60, daily_bins=288),
        warmup_seconds=DAY,
    )
    target = 1 / 30 / series  # one false page per metric per 30 days
    run = calibrate(
        config, ts[:cut], numerators=x[:cut], denominators=n[:cut], false_alarms_per_day=target
    )
    thresholds = run.calibration.thresholds
    # the estimated rates meet the target for every series that scored
    est = run.calibration.estimated_false_alarms_per_day
    assert np.all(est[np.isfinite(est)] <= target * 1.01)
    # busier series score more often, so they need higher thresholds per score
    assert thresholds[-1] > thresholds[0]
    live = run.bank.run_batch(ts[cut:], None, x[cut:], n[cut:])
    # expected 11/30 ≈ 0.37 false alarms for the whole metric; Poisson(0.37) ≥ 3 has p ≈ 0.6%
    assert live.fired.sum() <= 2
