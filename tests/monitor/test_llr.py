"""The LLR CUSUM bank: hand-computed increments, the vectorised replay, calibration and power."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tripwire.monitor.baselines import BaselineSettings
from tripwire.monitor.calibration import calibrate
from tripwire.monitor.detectors import DetectorBank, DetectorConfig
from tripwire.monitor.llr import (
    binomial_increments,
    binomial_information,
    detection_delay_bound,
    gaussian_increments,
    run_maxima,
)

MINUTE = BaselineSettings(step_seconds=60)


def test_binomial_increments_by_hand() -> None:
    inc = binomial_increments(np.array([3.0]), np.array([10.0]), np.array([0.1]), (3.0,))
    # θ = 3 at p₀ = 0.1: p₁ = 0.3/1.2 = 0.25; llr = 3·log(2.5) + 7·log(0.75/0.9)
    assert inc[0, 0] == pytest.approx(3 * math.log(2.5) + 7 * math.log(0.75 / 0.9))
    # θ = 1/3: p₁ = (0.1/3)/(0.9 + 0.1/3) = 1/28
    p1 = 1 / 28
    assert inc[1, 0] == pytest.approx(3 * math.log(p1 / 0.1) + 7 * math.log((1 - p1) / 0.9))
    # no traffic, no evidence; over-dispersion 2 quarters it
    assert binomial_increments(
        np.array([0.0]), np.array([0.0]), np.array([0.1]), (3.0,)
    ).tolist() == [
        [0.0],
        [0.0],
    ]
    halved = binomial_increments(np.array([3.0]), np.array([10.0]), np.array([0.1]), (3.0,), 2.0)
    assert halved[0, 0] == pytest.approx(inc[0, 0] / 4)


def test_gaussian_increments_by_hand() -> None:
    inc = gaussian_increments(np.array([1.0]), np.array([10.0]), np.array([4.0]), (0.1,))
    # Δ = ±1: (Δ·r − Δ²/2)/v
    assert inc[:, 0].tolist() == pytest.approx([(1 - 0.5) / 4, (-1 - 0.5) / 4])


def test_run_maxima_matches_the_recursion() -> None:
    rng = np.random.default_rng(3)
    inc = rng.normal(-0.3, 1.0, size=(2000, 3))
    expected = []
    for j in range(3):
        s, peak = 0.0, 0.0
        for v in inc[:, j]:
            s = max(0.0, s + v)
            if s > 0:
                peak = max(peak, s)
            elif peak > 0:
                expected.append(peak)
                peak = 0.0
        if peak > 0:
            expected.append(peak)
    assert sorted(run_maxima(inc).tolist()) == pytest.approx(sorted(expected))


def test_delay_bound() -> None:
    assert detection_delay_bound(0.5, math.exp(10)) == pytest.approx(20.0)
    assert detection_delay_bound(0.0, 1e6) == math.inf
    assert binomial_information(0.3, 0.3) == pytest.approx(0.0)


def _thin_share(rng: np.random.Generator, minutes: int, series: int, p: float):
    n = rng.poisson(1.0, size=(minutes, series)).astype(float)
    return n, rng.binomial(n.astype(int), p).astype(float)


@pytest.mark.slow
def test_calibrated_llr_bank_is_quiet_on_null_data_and_fast_on_a_collapse() -> None:
    """1 turn a minute at 82% resolved: thresholds near log(γ), no false alarms in 30 days
    of six series at 1 per 420 days each, and a collapse to 36% caught within twice
    Lorden's bound."""
    rng = np.random.default_rng(1)
    history_n, history_x = _thin_share(rng, 4 * 1440, 6, 0.82)
    config = DetectorConfig(
        method="llr", kind="proportion", effects=(3.0, 10.0), daily=False, baseline=MINUTE
    )
    rate = 1 / 420
    run = calibrate(
        config,
        np.arange(4 * 1440) * 60,
        None,
        history_x,
        history_n,
        false_alarms_per_day=rate,
        seasonality="config",
    )
    gamma = 1440 / rate
    assert np.all(run.calibration.thresholds > 0.75 * math.log(gamma))
    assert np.all(run.calibration.thresholds < 1.25 * math.log(gamma))
    bank = run.bank
    t0 = 4 * 1440
    n, x = _thin_share(rng, 30 * 1440, 6, 0.82)
    null = bank.run_batch(np.arange(t0, t0 + 30 * 1440) * 60, None, x, n, fields=["fired"])
    assert null.fired.sum() == 0
    # the collapse
    t1 = t0 + 30 * 1440
    n, x = _thin_share(rng, 240, 6, 0.36)
    hit = bank.run_batch(np.arange(t1, t1 + 240) * 60, None, x, n, fields=["fired", "direction"])
    delays = [int(np.argmax(hit.fired[:, s])) + 1 for s in range(6)]
    assert all(hit.fired[:, s].any() for s in range(6))
    assert set(hit.direction[hit.fired].tolist()) == {-1}
    bound = detection_delay_bound(binomial_information(0.36, 0.82), gamma)
    assert np.median(delays) <= 2 * bound


def test_llr_streaming_equals_batch() -> None:
    rng = np.random.default_rng(5)
    n, x = _thin_share(rng, 3000, 3, 0.2)
    x[2000:2100, 1] = n[2000:2100, 1]  # a burst that fires
    config = DetectorConfig(
        method="llr", kind="proportion", daily=False, warmup_seconds=600, baseline=MINUTE, h=6.0
    )
    batch = DetectorBank(config, 3).run_batch(np.arange(3000) * 60, None, x, n)
    stream = DetectorBank(config, 3)
    for t in range(3000):
        tick = stream.update(t * 60, None, x[t], n[t])
        assert np.array_equal(tick.statistic, batch.statistic[t], equal_nan=True)
        assert np.array_equal(tick.fired, batch.fired[t])
    assert batch.fired[:, 1].any()


def test_llr_effects_are_validated() -> None:
    with pytest.raises(ValueError, match="odds ratios"):
        DetectorConfig(method="llr", kind="proportion", effects=(0.5,))
    with pytest.raises(ValueError, match="relative shifts"):
        DetectorConfig(method="llr", kind="ratio", effects=(2.0,))
