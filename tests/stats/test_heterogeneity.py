"""Heterogeneity: Cochran's Q / I² vs statsmodels, partial pooling, Simpson flag, cohort analysis."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.meta_analysis import combine_effects

from tripwire.stats import (
    MeanStats,
    analyze_cohorts,
    cochran_q,
    partial_pooling,
    simpson_paradox,
    two_proportion_z_test,
)


def test_cochran_q_and_tau2_match_statsmodels():
    rng = np.random.default_rng(50)
    for k in (2, 5, 30):
        est = rng.normal(0.02, 0.03, k)
        se = rng.uniform(0.01, 0.05, k)
        ours = cochran_q(est, se)
        with np.errstate(invalid="ignore"):
            ref = combine_effects(est, se**2, method_re="dl")
        assert ours.q == pytest.approx(ref.q, rel=1e-10)
        assert ours.tau_squared == pytest.approx(
            max(0.0, ref.tau2), rel=1e-10, abs=1e-15
        )  # DL truncates at 0
        assert ours.fixed_effect == pytest.approx(ref.mean_effect_fe, rel=1e-10)
        assert ours.p_value == pytest.approx(stats.chi2.sf(ref.q, k - 1), rel=1e-10)
        assert ours.i_squared == pytest.approx(max(0.0, (ref.q - (k - 1)) / ref.q), rel=1e-10)


def test_q_is_calibrated_under_homogeneity_by_simulation():
    rng = np.random.default_rng(51)
    sims, k = 4000, 6
    se = np.linspace(0.01, 0.04, k)
    p = np.array([cochran_q(0.01 + rng.standard_normal(k) * se, se).p_value for _ in range(sims)])
    assert 0.04 <= np.mean(p < 0.05) <= 0.06


def test_partial_pooling_formula_and_limits():
    est, se = np.array([0.20, -0.03, -0.08, 0.05]), np.array([0.05, 0.06, 0.08, 0.02])
    r = partial_pooling(est, se)
    tau2 = cochran_q(est, se).tau_squared
    b = se**2 / (se**2 + tau2)
    np.testing.assert_allclose(r.shrinkage, b)
    np.testing.assert_allclose(r.pooled, r.overall + (1 - b) * (est - r.overall))
    assert np.all(r.pooled_se <= se + 1e-12)  # pooling never adds uncertainty here
    # Noisier cohorts move further toward the overall effect.
    assert r.shrinkage[2] > r.shrinkage[0] > r.shrinkage[3]
    # No heterogeneity: every cohort pools to the overall effect.
    flat = partial_pooling([0.010, 0.011, 0.009], [0.05, 0.05, 0.05])
    assert flat.tau_squared == 0.0
    np.testing.assert_allclose(flat.pooled, flat.overall)
    toward = partial_pooling(est, se, overall=0.0, overall_se=0.01)
    assert toward.overall == 0.0 and np.all(np.abs(toward.pooled) <= np.abs(est) + 1e-12)


def test_partial_pooling_reduces_error_by_simulation():
    """Empirical Bayes beats the raw cohort effects in mean squared error (Efron–Morris)."""
    rng = np.random.default_rng(52)
    k, sims = 12, 1500
    se = rng.uniform(0.01, 0.05, k)
    raw_err = pooled_err = 0.0
    for _ in range(sims):
        truth = rng.normal(0.02, 0.015, k)
        est = truth + rng.standard_normal(k) * se
        pooled = partial_pooling(est, se).pooled
        raw_err += np.sum((est - truth) ** 2)
        pooled_err += np.sum((pooled - truth) ** 2)
    assert pooled_err < 0.8 * raw_err


def test_simpson_flag():
    assert simpson_paradox(0.01, [-0.02, -0.01, 0.08], [0.4, 0.3, 0.3]).flag
    r = simpson_paradox(0.01, [0.02, -0.01, 0.08], [0.4, 0.3, 0.3])
    assert not r.flag and r.majority_sign == 1
    split = simpson_paradox(0.01, [0.02, -0.01], [0.5, 0.5])
    assert not split.flag and split.majority_sign == 0
    with pytest.raises(ValueError, match="same length"):
        simpson_paradox(0.0, [0.1], [0.5, 0.5])


def test_classic_simpson_reversal_from_counts():
    # Treatment better in both cohorts, worse in aggregate (allocation differs by cohort).
    ctl = MeanStats.from_proportion([100, 900], [10, 450])
    trt = MeanStats.from_proportion([900, 100], [108, 55])
    per = two_proportion_z_test(ctl, trt)
    agg = two_proportion_z_test(
        MeanStats.from_proportion(1000, 460), MeanStats.from_proportion(1000, 163)
    )
    assert np.all(np.asarray(per.absolute.estimate) > 0) and agg.absolute.estimate < 0
    assert analyze_cohorts(["small", "big"], per, agg, relative=False).simpson.flag


def test_cohort_analysis_on_reference_fixture(reference):
    rows = reference["fixtures"]["cohort"]["sufficient_stats"]
    locales = ["EN", "JP", "mixed"]
    by = {(r["arm"], r["locale"]): r for r in rows}

    def arm(name: str) -> MeanStats:
        return MeanStats.from_proportion(
            [by[name, loc]["n"] for loc in locales],
            [by[name, loc]["sum_converted"] for loc in locales],
        )

    per = two_proportion_z_test(arm("control"), arm("treatment"))
    agg = two_proportion_z_test(
        MeanStats.from_proportion(sum(by["control", loc]["n"] for loc in locales),
                                  sum(by["control", loc]["sum_converted"] for loc in locales)),
        MeanStats.from_proportion(sum(by["treatment", loc]["n"] for loc in locales),
                                  sum(by["treatment", loc]["sum_converted"] for loc in locales)),
    )  # fmt: skip
    analysis = analyze_cohorts(locales, per, agg, relative=True)
    # The fixture plants +15% in EN and −15% in JP: the cohorts differ.
    assert analysis.heterogeneity.p_value < 0.01
    assert analysis.heterogeneity.i_squared > 0.5
    np.testing.assert_allclose(analysis.raw, [
        reference["results"]["cohort"]["per_locale_scipy"][loc]["rel"] for loc in locales
    ], rtol=1e-10)  # fmt: skip
    # Pooled effects lie between the raw effect and the aggregate.
    lo = np.minimum(analysis.raw, analysis.pooling.overall)
    hi = np.maximum(analysis.raw, analysis.pooling.overall)
    assert np.all((lo - 1e-12 <= analysis.pooling.pooled) & (analysis.pooling.pooled <= hi + 1e-12))
    assert not analysis.simpson.flag  # EN (55% of traffic) agrees with the positive aggregate


def test_cohorts_without_data_are_left_out():
    ctl = MeanStats.from_proportion([0, 5000, 5000], [0, 500, 520])
    trt = MeanStats.from_proportion([10, 5000, 5000], [1, 530, 510])
    per = two_proportion_z_test(ctl, trt)
    agg = two_proportion_z_test(
        MeanStats.from_proportion(10000, 1020), MeanStats.from_proportion(10010, 1041)
    )
    analysis = analyze_cohorts(["empty", "a", "b"], per, agg, relative=False)
    assert list(analysis.usable) == [False, True, True]
    assert np.isnan(analysis.pooling.pooled[0]) and np.all(np.isfinite(analysis.pooling.pooled[1:]))
    with pytest.raises(ValueError, match="cohort names"):
        analyze_cohorts(["a"], per, agg)


def test_bad_effects_rejected():
    with pytest.raises(ValueError, match="cohort 1"):
        cochran_q([0.1, 0.2], [0.1, 0.0])
    with pytest.raises(ValueError, match="equal length"):
        partial_pooling([0.1, 0.2], [0.1])
