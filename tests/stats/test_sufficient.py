"""Sufficient-statistics types: combination, moments, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tripwire.stats import CupedMeanStats, CupedRatioStats, MeanStats, RatioStats

values = arrays(np.float64, st.integers(1, 40), elements=st.floats(-1e4, 1e4, allow_nan=False))


@settings(max_examples=60, deadline=None)
@given(values, values)
def test_sum_of_segments_is_the_whole(a, b):
    whole = MeanStats.from_values(np.r_[a, b])
    combined = MeanStats.from_values(a) + MeanStats.from_values(b)
    assert combined.n == whole.n
    assert combined.sum == pytest.approx(whole.sum, rel=1e-9, abs=1e-6)
    assert combined.mean == pytest.approx(np.r_[a, b].mean(), rel=1e-9, abs=1e-6)
    if whole.n >= 2:
        assert combined.variance == pytest.approx(np.var(np.r_[a, b], ddof=1), rel=1e-6, abs=1e-3)


def test_all_types_combine_like_their_union():
    rng = np.random.default_rng(0)
    cols = rng.poisson(3, (4, 50)).astype(float)
    first, second = cols[:, :20], cols[:, 20:]
    assert RatioStats.from_values(*first[:2]) + RatioStats.from_values(
        *second[:2]
    ) == RatioStats.from_values(*cols[:2])
    assert CupedMeanStats.from_values(*first[:2]) + CupedMeanStats.from_values(
        *second[:2]
    ) == CupedMeanStats.from_values(*cols[:2])
    assert CupedRatioStats.from_values(*first) + CupedRatioStats.from_values(
        *second
    ) == CupedRatioStats.from_values(*cols)


def test_ratio_moments():
    x, y = np.array([1.0, 0.0, 2.0, 5.0]), np.array([3.0, 1.0, 4.0, 6.0])
    s = RatioStats.from_values(x, y)
    assert s.ratio == pytest.approx(x.sum() / y.sum())
    assert s.covariance == pytest.approx(np.cov(x, y)[0, 1])
    assert s.numerator.variance == pytest.approx(np.var(x, ddof=1))


def test_array_fields_are_elementwise():
    s = MeanStats(n=[2, 3], sum=[2.0, 6.0], sum_sq=[2.0, 14.0])
    np.testing.assert_allclose(s.mean, [1.0, 2.0])
    np.testing.assert_allclose(s.variance, [0.0, 1.0])
    both = s + s
    np.testing.assert_allclose(both.n, [4, 6])


def test_proportion_constructor():
    s = MeanStats.from_proportion(10, 3)
    assert (s.n, s.sum, s.sum_sq) == (10.0, 3.0, 3.0)
    assert s.is_binary_compatible
    with pytest.raises(ValueError, match="successes must be <= n"):
        MeanStats.from_proportion(3, 4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": float("nan"), "sum": 1.0, "sum_sq": 1.0}, r"MeanStats\.n must be finite"),
        ({"n": 3, "sum": float("inf"), "sum_sq": 1.0}, r"MeanStats\.sum must be finite \(got inf"),
        ({"n": -2, "sum": 0.0, "sum_sq": 0.0}, r"MeanStats\.n must be >= 0"),
        ({"n": 3, "sum": 1.0, "sum_sq": -1.0}, r"MeanStats\.sum_sq must be >= 0"),
        ({"n": 2, "sum": 10.0, "sum_sq": 1.0}, r"negative variance"),
        ({"n": [1, 2], "sum": [1.0], "sum_sq": [1.0, 1.0]}, r"MeanStats\.sum has shape"),
        ({"n": "ten", "sum": 1.0, "sum_sq": 1.0}, r"MeanStats\.n must be numeric"),
    ],
)
def test_bad_input_is_rejected_with_the_field_name(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        MeanStats(**kwargs)


def test_nan_in_an_array_names_the_index():
    with pytest.raises(
        ValueError, match=r"RatioStats\.sum_den must be finite \(got nan at index \(2,\)\)"
    ):
        RatioStats(n=[3, 3, 3], sum_num=[1, 1, 1], sum_num_sq=[1, 1, 1], sum_den=[1, 1, np.nan],
                   sum_den_sq=[1, 1, 1], sum_num_den=[1, 1, 1])  # fmt: skip


def test_huge_counts_stay_finite():
    n = 10**20  # beyond int64: converted exactly enough to float64
    s = MeanStats(n=n, sum=3 * n, sum_sq=10 * n)
    assert s.mean == pytest.approx(3.0)
    assert s.variance == pytest.approx(1.0)
    assert math.isfinite((s + s).sum)


def test_frozen():
    s = MeanStats.from_values([1.0, 2.0])
    with pytest.raises(AttributeError):
        s.n = 5  # type: ignore[misc]


any_float = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**25), 10**25)
)


@pytest.mark.filterwarnings("error::RuntimeWarning")
@settings(max_examples=150, deadline=None)
@given(any_float, any_float, any_float)
def test_arbitrary_input_is_either_valid_or_a_clear_error(n, total, squares):
    try:
        s = MeanStats(n=n, sum=total, sum_sq=squares)
    except ValueError as error:
        assert str(error).startswith("MeanStats")
        return
    assert s.n >= 0 and s.sum_sq >= 0
    assert math.isfinite(s.variance) and s.variance >= 0
