"""Noise floors that keep thin and near-deterministic series from paging (demo regressions).

* a thin ratio series whose first residual is zero must not trap its scale near zero
  (which made a 1-in-3 error hour read as a 9σ jump and page on the demo);
* a ratio of counts that sits at exactly 1.0 (telemetry orders per ledger order) must not
  page on the odd order straddling an hour, and must page on a real loss;
* shares of distinct units are binomial, with numerators capped at denominators.
"""

from __future__ import annotations

import numpy as np

from tripwire.metrics.definitions import parse_metric
from tripwire.monitor.baselines import BaselineSettings
from tripwire.monitor.calibration import calibrate
from tripwire.monitor.detectors import DetectorBank, DetectorConfig
from tripwire.monitor.series import Ticks, clip_shares, counts_numerator, detector_kind

START = 1_767_225_600
HOUR = 3600
HOURLY = BaselineSettings(step_seconds=HOUR, daily_bins=24)


def test_thin_ratio_scale_is_not_trapped_by_a_zero_start() -> None:
    rng = np.random.default_rng(4)
    hours, series, p = 4 * 24, 40, 0.15
    n = rng.poisson(4.0, (hours, series)).astype(float)
    n[0] = 3.0
    x = rng.binomial(n.astype(int), p).astype(float)
    x[0] = 0.0  # every series starts with a zero: its first residual is tiny
    config = DetectorConfig(kind="ratio", daily=False, baseline=HOURLY, warmup_seconds=0)
    bank = DetectorBank(config, series)
    bank.run_batch(START + HOUR * np.arange(hours), None, x, n)
    scale = bank.baseline.scale()  # of (y − ŷ)·√n, whose sd is √(p(1−p)) ≈ 0.36
    assert np.all(scale > 0.5 * np.sqrt(p * (1 - p))), scale.min()
    assert np.all(scale < 2.0 * np.sqrt(p * (1 - p))), scale.max()


def _ledger_world(rng: np.random.Generator, hours: int) -> tuple[np.ndarray, np.ndarray]:
    ledger = rng.poisson(50.0, (hours, 1)).astype(float)
    telemetry = ledger.copy()
    straddle = rng.random((hours, 1)) < 0.1  # an order whose events fall in two hours
    telemetry[straddle] -= 1
    telemetry[np.roll(straddle, 1, axis=0)] += 1
    return telemetry, ledger


def test_a_ratio_of_counts_at_one_pages_on_a_loss_not_on_a_straddling_order() -> None:
    rng = np.random.default_rng(8)
    history, live = 4 * 24, 10 * 24
    telemetry, ledger = _ledger_world(rng, history + live)
    loss = history + 7 * 24 + 20  # day 8, 20:00: 12% of orders stop reporting for 3 hours
    telemetry[loss : loss + 3] = np.floor(telemetry[loss : loss + 3] * 0.88)
    ts = START + HOUR * np.arange(history + live)
    config = DetectorConfig(kind="ratio", baseline=HOURLY, resolution=1.0)
    run = calibrate(
        config,
        ts[:history],
        None,
        telemetry[:history],
        ledger[:history],
        false_alarms_per_day=1 / 30,
    )
    bank = run.bank
    fired = [
        t
        for t in range(history, history + live)
        if bank.update(int(ts[t]), None, telemetry[t], ledger[t]).fired[0]
    ]
    assert fired, "the loss was not detected"
    assert loss <= fired[0] <= loss + 2, (fired, loss)
    assert all(loss <= t < loss + 6 for t in fired), fired  # no page on a straddling order


def test_distinct_unit_shares_are_binomial_and_capped() -> None:
    conversion = parse_metric(
        {
            "name": "conv",
            "type": "ratio",
            "numerator": {"events": ["Order Completed"], "agg": "distinct", "value": "session_id"},
            "denominator": {
                "events": ["Voice Utterance"],
                "agg": "distinct",
                "value": "session_id",
            },
        }
    )
    per_order = parse_metric(
        {
            "name": "ratio",
            "type": "ratio",
            "numerator": {"events": ["Order Completed"]},
            "denominator": {"events": ["Ledger Order Recorded"]},
        }
    )
    assert detector_kind(conversion) == "proportion"
    assert detector_kind(per_order) == "ratio" and counts_numerator(per_order)
    ticks = Ticks(
        np.array([0, 3600]),
        np.array([[3.0], [1.0]]),
        np.array([[2.0], [4.0]]),
        np.array([[1.5], [0.25]]),
        np.array([[2.0], [4.0]]),
    )
    capped = clip_shares(ticks)
    np.testing.assert_array_equal(capped.numerators[:, 0], [2.0, 1.0])
    np.testing.assert_array_equal(capped.values[:, 0], [1.0, 0.25])
