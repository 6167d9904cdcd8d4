"""Sample-ratio mismatch and sample-size adequacy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from tripwire.stats import (
    SRM_THRESHOLD,
    Status,
    normal_approximation_adequate,
    sample_ratio_mismatch,
)


def test_chi_square_matches_scipy():
    observed, weights = [10_120, 9_880, 20_300], [1, 1, 2]
    r = sample_ratio_mismatch(observed, weights)
    expected = np.array(weights) / 4 * sum(observed)
    ref = stats.chisquare(observed, expected)
    assert r.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert r.df == 2 and r.method == "chi_square" and r.status == Status.OK


def test_default_threshold_is_one_in_a_thousand():
    assert SRM_THRESHOLD == 0.001
    assert not sample_ratio_mismatch([50_000, 51_000], [0.5, 0.5]).mismatch  # p ≈ 0.0017
    assert sample_ratio_mismatch([50_000, 51_000], [0.5, 0.5], threshold=0.01).mismatch
    assert sample_ratio_mismatch([50_000, 52_000], [0.5, 0.5]).mismatch


def test_false_alarm_rate_under_correct_split_by_simulation():
    rng = np.random.default_rng(40)
    sims = 20_000
    counts = rng.multinomial(30_000, [0.25, 0.25, 0.5], sims)
    expected = 30_000 * np.array([0.25, 0.25, 0.5])
    chi2 = ((counts - expected) ** 2 / expected).sum(1)
    rate = np.mean(stats.chi2.sf(chi2, 2) < SRM_THRESHOLD)
    assert rate < 0.003  # ≈ 0.001
    assert sample_ratio_mismatch(counts[0], [1, 1, 2]).p_value == pytest.approx(
        stats.chi2.sf(chi2[0], 2), rel=1e-10
    )


def test_small_counts_use_exact_binomial_or_say_insufficient():
    two = sample_ratio_mismatch([7, 1], [0.5, 0.5])
    assert two.method == "binomial_exact" and two.status == Status.EXACT
    assert two.p_value == pytest.approx(stats.binomtest(7, 8, 0.5).pvalue)
    three = sample_ratio_mismatch([3, 1, 2], [1, 1, 1])
    assert three.status == Status.INSUFFICIENT_DATA and not three.mismatch
    assert "too few units" in three.message
    nothing = sample_ratio_mismatch([0, 0], [1, 1])
    assert nothing.status == Status.INSUFFICIENT_DATA and "no units" in nothing.message


def test_units_in_a_zero_weight_arm_are_a_mismatch():
    r = sample_ratio_mismatch([1000, 1000, 3], [0.5, 0.5, 0.0])
    assert r.mismatch and "weight 0" in r.message
    assert not sample_ratio_mismatch([1000, 1010, 0], [0.5, 0.5, 0.0]).mismatch


@pytest.mark.parametrize(
    ("observed", "weights", "match"),
    [
        ([10, float("nan")], [1, 1], r"observed\[1\]"),
        ([10, 10], [1, -1], r"planned_weights\[1\]"),
        ([10, 10], [0, 0], "must not all be 0"),
        ([10], [1], "length >= 2"),
        ([10, 10, 10], [1, 1], "equal length"),
    ],
)
def test_bad_input(observed, weights, match):
    with pytest.raises(ValueError, match=match):
        sample_ratio_mismatch(observed, weights)


def test_normal_approximation_rule():
    assert normal_approximation_adequate([100, 100], [30, 40]).adequate
    check = normal_approximation_adequate([100, 100], [2, 3])
    assert not check.adequate and "expected count" in check.reason
    assert not normal_approximation_adequate([1, 100]).adequate
    assert normal_approximation_adequate([5, 5]).adequate
