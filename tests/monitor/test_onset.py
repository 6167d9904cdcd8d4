"""Onset localisation on score windows."""

from __future__ import annotations

import numpy as np
import pytest

from tripwire.monitor.onset import locate_onset


@pytest.mark.parametrize("change", [5, 40, 90])
def test_single_shift_found_within_two_points(change):
    rng = np.random.default_rng(change)
    z = rng.standard_normal(120)
    z[change:] -= 2.5
    ts = 1_767_225_600 + 60 * np.arange(120)
    onset = locate_onset(ts, z, run_length=120 - change)
    assert abs((onset.timestamp - ts[change]) / 60) <= 2
    assert onset.shift < -1.5


def test_missing_scores_are_skipped_and_short_windows_fall_back_to_cusum():
    ts = np.arange(10) * 60
    z = np.array([0, np.nan, 0, 0, np.nan, 3, 3, 3, np.nan, 3], dtype=float)
    onset = locate_onset(ts, z, run_length=4)
    assert onset.timestamp == 300
    short = locate_onset(ts[:3], np.array([0.0, 1.0, 2.0]), run_length=2)
    assert short.timestamp == short.cusum_timestamp == 60


def test_bad_windows_are_rejected():
    with pytest.raises(ValueError, match="no finite scores"):
        locate_onset(np.arange(3), np.full(3, np.nan))
    with pytest.raises(ValueError, match="one length"):
        locate_onset(np.arange(3), np.zeros(4))
