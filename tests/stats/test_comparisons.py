"""Two-arm tests: parity with the reference engines and scipy/statsmodels, simulations, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from tripwire.stats import (
    MeanStats,
    RatioStats,
    Status,
    delta_method_ratio_test,
    two_proportion_z_test,
    welch_t_test,
)

from .reference_results import arms_of, assert_close

ALPHA = 0.05


def _proportion(row: dict) -> MeanStats:
    return MeanStats.from_proportion(row["n"], row["sum_converted"])


def _check(effect, ref: dict, *, se=True, p=True) -> None:
    assert_close(effect.estimate, ref["estimate"])
    assert_close(effect.ci, ref["ci"])
    if se:
        assert_close(effect.se, ref["se"])
    if p:
        assert_close(effect.p_value, ref["p_value"])


# ----------------------------------------------------------------- reference parity


@pytest.mark.parametrize("fixture", ["binary", "aa_binary"])
def test_z_test_matches_statsmodels_reference(reference, fixture):
    arms = arms_of(reference, fixture)
    result = two_proportion_z_test(_proportion(arms["control"]), _proportion(arms["treatment"]))
    ref = reference["results"][fixture]["scipy_statsmodels"]
    absolute = ref["ztest_pooled_p_wald_ci"]["absolute"]
    _check(result.absolute, absolute, se=False)
    assert_close(result.absolute.se, absolute["se_unpooled"])
    assert_close(result.statistic, absolute["z"])
    _check(result.relative, ref["relative_intervals"]["relative"]["delta_z"])
    assert result.status == Status.OK


@pytest.mark.parametrize("fixture", ["binary", "aa_binary", "cohort"])
def test_fieller_relative_interval_matches_reference(reference, fixture):
    arms = arms_of(reference, fixture)
    if fixture == "cohort":
        arms = {
            arm: {"n": sum(r["n"] for r in reference["fixtures"]["cohort"]["sufficient_stats"] if r["arm"] == arm),
                  "sum_converted": sum(r["sum_converted"] for r in reference["fixtures"]["cohort"]["sufficient_stats"] if r["arm"] == arm)}
            for arm in ("control", "treatment")
        }  # fmt: skip
        ref = reference["results"]["cohort"]["overall"]["scipy_statsmodels"]
    else:
        ref = reference["results"][fixture]["scipy_statsmodels"]
    result = two_proportion_z_test(
        _proportion(arms["control"]), _proportion(arms["treatment"]), relative_ci="fieller"
    )
    fieller = ref["relative_intervals"]["relative"]["fieller_z"]
    assert_close(result.relative.ci, fieller["ci"])
    assert_close(result.relative.estimate, fieller["estimate"], rtol=1e-12)
    # Fieller's test of ratio = 1 is the unpooled z test of the difference.
    assert_close(result.relative.p_value, ref["ztest_unpooled"]["absolute"]["p_value"])


@pytest.mark.parametrize("fixture", ["revenue", "aa_revenue"])
def test_welch_matches_scipy_and_gbstats_reference(reference, fixture):
    arms = arms_of(reference, fixture)
    control, treatment = (
        MeanStats(a["n"], a["sum_revenue"], a["sumsq_revenue"])
        for a in (arms["control"], arms["treatment"])
    )
    result = welch_t_test(control, treatment)
    ref = reference["results"][fixture]["scipy_statsmodels"]["welch_t"]
    _check(result.absolute, ref["absolute"])
    assert_close(result.df, ref["absolute"]["dof"])
    _check(result.relative, ref["relative"]["delta_t_welch_df"])
    fieller = welch_t_test(control, treatment, relative_ci="fieller")
    assert_close(
        fieller.relative.ci, ref["relative"]["fieller_z"]["ci"], rtol=2e-4
    )  # z vs t quantile


@pytest.mark.parametrize("fixture", ["revenue", "aa_revenue"])
def test_welch_matches_gbstats_engine(reference, fixture):
    arms = arms_of(reference, fixture)
    engine = reference["results"][fixture]["gbstats"]["ttest_mean"]
    result = welch_t_test(
        *(
            MeanStats(a["n"], a["sum_revenue"], a["sumsq_revenue"])
            for a in (arms["control"], arms["treatment"])
        )
    )
    if not np.isclose(result.absolute.estimate, engine["absolute"]["estimate"], rtol=1e-12):
        pytest.skip("gbstats entry computed on a different draw of this fixture")
    _check(result.absolute, engine["absolute"])
    _check(result.relative, engine["relative"])


def test_delta_ratio_matches_gbstats_and_tea_tasting(reference):
    arms = arms_of(reference, "ratio")

    def ratio(a: dict) -> RatioStats:
        return RatioStats(a["n"], a["sum_clicks"], a["sumsq_clicks"], a["sum_sessions"], a["sumsq_sessions"],
                          a["sumprod_clicks_sessions"])  # fmt: skip

    result = delta_method_ratio_test(ratio(arms["control"]), ratio(arms["treatment"]))
    gb = reference["results"]["ratio"]["gbstats"]["ttest_ratio_delta"]
    _check(result.absolute, gb["absolute"])
    assert_close(result.df, gb["absolute"]["dof"])
    _check(result.relative, gb["relative"])
    tea = reference["results"]["ratio"]["tea-tasting"]["ratio_of_means_delta"]
    _check(result.absolute, tea["absolute"], se=False)
    # The naive session-level test is not what we do: its SE is far too small.
    naive = reference["results"]["ratio"]["scipy_statsmodels"]["naive_session_level"]["absolute"][
        "se"
    ]
    assert result.absolute.se > 1.2 * naive


def test_per_cohort_vectorised_z_matches_reference(reference):
    rows = reference["fixtures"]["cohort"]["sufficient_stats"]
    locales = ["EN", "JP", "mixed"]
    by = {(r["arm"], r["locale"]): r for r in rows}
    control = MeanStats.from_proportion([by["control", loc]["n"] for loc in locales],
                                        [by["control", loc]["sum_converted"] for loc in locales])  # fmt: skip
    treatment = MeanStats.from_proportion([by["treatment", loc]["n"] for loc in locales],
                                          [by["treatment", loc]["sum_converted"] for loc in locales])  # fmt: skip
    result = two_proportion_z_test(control, treatment, pooled=False)
    ref = reference["results"]["cohort"]["per_locale_scipy"]
    assert_close(result.absolute.estimate, [ref[loc]["estimate"] for loc in locales])
    assert_close(result.absolute.se, [ref[loc]["se"] for loc in locales])
    assert_close(result.absolute.p_value, [ref[loc]["p_value"] for loc in locales])
    assert_close(result.relative.estimate, [ref[loc]["rel"] for loc in locales])


# ----------------------------------------------------------------- scipy / statsmodels parity


def test_welch_matches_scipy_on_random_inputs():
    rng = np.random.default_rng(11)
    for _ in range(200):
        nc, nt = rng.integers(2, 5000, size=2)
        xc = rng.lognormal(rng.normal(), rng.uniform(0.1, 2), nc) * rng.choice([-1, 1])
        xt = rng.normal(rng.normal(0, 10), rng.uniform(0.01, 50), nt)
        c, t = MeanStats.from_values(xc), MeanStats.from_values(xt)
        result = welch_t_test(c, t, alpha=0.1)
        ref = stats.ttest_ind_from_stats(
            xt.mean(), xt.std(ddof=1), nt, xc.mean(), xc.std(ddof=1), nc, equal_var=False
        )
        np.testing.assert_allclose(result.statistic, ref.statistic, rtol=1e-8)
        np.testing.assert_allclose(result.absolute.p_value, ref.pvalue, rtol=1e-8, atol=1e-300)
        raw = stats.ttest_ind(xt, xc, equal_var=False)
        ci = raw.confidence_interval(0.9)
        np.testing.assert_allclose(result.absolute.ci, (ci.low, ci.high), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(result.df, raw.df, rtol=1e-8)


def test_z_test_matches_statsmodels_on_random_inputs():
    rng = np.random.default_rng(12)
    for _ in range(200):
        nc, nt = rng.integers(200, 10**6, size=2)
        p = rng.uniform(0.02, 0.98)
        xc, xt = rng.binomial(nc, p), rng.binomial(nt, min(p * rng.uniform(0.9, 1.1), 0.99))
        result = two_proportion_z_test(
            MeanStats.from_proportion(nc, xc), MeanStats.from_proportion(nt, xt)
        )
        z, pval = proportions_ztest([xt, xc], [nt, nc])
        low, high = confint_proportions_2indep(xt, nt, xc, nc, method="wald")
        np.testing.assert_allclose(result.statistic, z, rtol=1e-8)
        np.testing.assert_allclose(result.absolute.p_value, pval, rtol=1e-8, atol=1e-300)
        np.testing.assert_allclose(result.absolute.ci, (low, high), rtol=1e-8, atol=1e-12)


def test_exact_fallback_matches_fisher_and_newcombe():
    from statsmodels.stats.proportion import confint_proportions_2indep as ci2

    for xc, nc, xt, nt in [(0, 12, 3, 12), (1, 30, 6, 25), (0, 500, 0, 480), (2, 40, 2, 41)]:
        result = two_proportion_z_test(
            MeanStats.from_proportion(nc, xc), MeanStats.from_proportion(nt, xt)
        )
        assert result.status == Status.EXACT
        assert "fisher_exact" in result.method
        assert result.absolute.p_value == pytest.approx(
            stats.fisher_exact([[xt, nt - xt], [xc, nc - xc]]).pvalue, rel=1e-12
        )
        low, high = ci2(xt, nt, xc, nc, method="newcomb", compare="diff")
        np.testing.assert_allclose(result.absolute.ci, (low, high), rtol=1e-9, atol=1e-12)


def test_vectorised_equals_scalar_loop():
    rng = np.random.default_rng(3)
    n = rng.integers(50, 400, size=(2, 30)).astype(float)
    x = rng.normal(1, 2, size=(2, 30)) * n
    ss = x**2 / n + rng.uniform(10, 200, size=(2, 30)) * (n - 1)
    vec = welch_t_test(MeanStats(n[0], x[0], ss[0]), MeanStats(n[1], x[1], ss[1]))
    for i in range(30):
        one = welch_t_test(
            MeanStats(n[0, i], x[0, i], ss[0, i]), MeanStats(n[1, i], x[1, i], ss[1, i])
        )
        assert one.absolute.p_value == pytest.approx(vec.absolute.p_value[i], rel=1e-12)
        assert one.relative.ci_high == pytest.approx(vec.relative.ci_high[i], rel=1e-12)


# ----------------------------------------------------------------- simulations

N_SIM = 6000


def _binaryarms(rng, n_c, n_t, p_c, p_t, sims=N_SIM):
    return (
        MeanStats.from_proportion(np.full(sims, n_c), rng.binomial(n_c, p_c, sims)),
        MeanStats.from_proportion(np.full(sims, n_t), rng.binomial(n_t, p_t, sims)),
    )


def _meanarms(rng, draw, n, sims=N_SIM):
    arms = []
    for arm in (0, 1):
        x = draw(rng, arm, (sims, n))
        arms.append(MeanStats(np.full(sims, float(n)), x.sum(axis=1), (x * x).sum(axis=1)))
    return arms


def _ratioarms(rng, n, lift, sims=N_SIM):
    arms = []
    for multiplier in (1.0, 1.0 + lift):
        lam = rng.gamma(2.0, 2.5, (sims, n))
        sessions = rng.poisson(lam)
        clicks = rng.binomial(sessions, np.minimum(rng.beta(3, 7, (sims, n)) * multiplier, 1))
        arms.append(
            RatioStats(np.full(sims, float(n)), clicks.sum(1), (clicks**2).sum(1), sessions.sum(1),
                       (sessions**2).sum(1), (clicks * sessions).sum(1))
        )  # fmt: skip
    return arms


def _lognormal(scale_t):
    def draw(rng, arm, shape):
        return rng.lognormal(1.0, 1.0, shape) * (scale_t if arm else 1.0)

    return draw


def test_aa_false_positive_rate_z():
    control, treatment = _binaryarms(np.random.default_rng(100), 4000, 4000, 0.1, 0.1)
    rate = np.mean(two_proportion_z_test(control, treatment).absolute.p_value < ALPHA)
    assert 0.04 <= rate <= 0.06


def test_aa_false_positive_rate_welch():
    control, treatment = _meanarms(np.random.default_rng(101), _lognormal(1.0), 400)
    result = welch_t_test(control, treatment)
    assert 0.04 <= np.mean(result.absolute.p_value < ALPHA) <= 0.06
    assert 0.04 <= np.mean(result.relative.p_value < ALPHA) <= 0.06


def test_aa_false_positive_rate_delta_ratio():
    control, treatment = _ratioarms(np.random.default_rng(102), 300, 0.0)
    result = delta_method_ratio_test(control, treatment)
    assert 0.04 <= np.mean(result.absolute.p_value < ALPHA) <= 0.06


def _covers(effect, truth):
    return np.mean((effect.ci_low <= truth) & (truth <= effect.ci_high))


def test_ci_coverage_z_absolute_and_relative():
    control, treatment = _binaryarms(np.random.default_rng(103), 5000, 5000, 0.10, 0.11)
    result = two_proportion_z_test(control, treatment)
    assert 0.94 <= _covers(result.absolute, 0.01) <= 0.96
    assert 0.94 <= _covers(result.relative, 0.1) <= 0.96
    fieller = two_proportion_z_test(control, treatment, relative_ci="fieller")
    assert 0.94 <= _covers(fieller.relative, 0.1) <= 0.96


def test_ci_coverage_welch_absolute_and_relative():
    mean = np.exp(1.5)  # lognormal(1, 1) mean
    control, treatment = _meanarms(np.random.default_rng(104), _lognormal(1.05), 400)
    result = welch_t_test(control, treatment)
    assert 0.94 <= _covers(result.absolute, 0.05 * mean) <= 0.96
    assert 0.94 <= _covers(result.relative, 0.05) <= 0.96


def test_ci_coverage_delta_ratio():
    rng = np.random.default_rng(105)
    control, treatment = _ratioarms(rng, 300, 0.1)
    # True ratios: E[clicks]/E[sessions] = E[q]·mult (q independent of sessions).
    truth_abs, truth_rel = 0.3 * 0.1, 0.1
    result = delta_method_ratio_test(control, treatment)
    assert 0.94 <= _covers(result.absolute, truth_abs) <= 0.96
    assert 0.94 <= _covers(result.relative, truth_rel) <= 0.96


def test_delta_ratio_variance_matches_bootstrap():
    rng = np.random.default_rng(106)
    n = 2000
    lam = rng.gamma(2.0, 2.5, n)
    sessions = rng.poisson(lam)
    clicks = rng.binomial(sessions, rng.beta(3, 7, n))
    stats_ = RatioStats.from_values(clicks, sessions)
    result = delta_method_ratio_test(stats_, stats_)
    var_delta = float(result.control.variance_of_mean)
    # Poisson bootstrap (weights ~ Poisson(1)), 10,000 replicates in blocks.
    reps = []
    for _ in range(10):
        w = rng.poisson(1.0, (1000, n)).astype(np.float64)
        reps.append((w @ clicks) / (w @ sessions))
    var_boot = np.var(np.concatenate(reps), ddof=1)
    assert abs(var_delta / var_boot - 1) < 0.05


def test_power_at_planned_n_is_80_percent():
    p_c, p_t = 0.10, 0.11
    try:
        from tripwire.stats.power import sample_size_proportions

        n = sample_size_proportions(p_c, p_t - p_c).n_per_arm[0]
    except ImportError:  # the planner module is optional for this test
        z_a, z_b = stats.norm.ppf(1 - ALPHA / 2), stats.norm.ppf(0.8)
        pbar = (p_c + p_t) / 2
        n = int(
            np.ceil(
                (
                    z_a * np.sqrt(2 * pbar * (1 - pbar))
                    + z_b * np.sqrt(p_c * (1 - p_c) + p_t * (1 - p_t))
                )
                ** 2
                / (p_t - p_c) ** 2
            )
        )
    control, treatment = _binaryarms(np.random.default_rng(107), n, n, p_c, p_t)
    power = np.mean(two_proportion_z_test(control, treatment).absolute.p_value < ALPHA)
    assert 0.77 <= power <= 0.83


# ----------------------------------------------------------------- edge cases


def test_zero_variance_in_both_arms_is_insufficient_not_nan():
    result = welch_t_test(MeanStats.from_values([3.0] * 10), MeanStats.from_values([3.0] * 12))
    assert result.status == Status.INSUFFICIENT_DATA
    assert "zero variance" in result.message
    assert result.absolute.estimate == 0.0


def test_zero_variance_in_one_arm_still_tests():
    result = welch_t_test(
        MeanStats.from_values([3.0] * 10), MeanStats.from_values([1.0, 2.0, 3.0, 4.0])
    )
    assert result.status == Status.OK
    assert np.isfinite(result.absolute.p_value)


def test_all_zero_conversions_use_exact_test():
    result = two_proportion_z_test(
        MeanStats.from_proportion(10_000, 0), MeanStats.from_proportion(10_000, 0)
    )
    assert result.status == Status.EXACT
    assert result.absolute.p_value == 1.0
    assert result.absolute.ci_low <= 0.0 <= result.absolute.ci_high
    assert np.isnan(result.relative.estimate)
    assert "control mean is 0" in result.message


@pytest.mark.parametrize("test", [welch_t_test, two_proportion_z_test])
def test_empty_arm_is_insufficient(test):
    result = test(MeanStats.from_proportion(0, 0), MeanStats.from_proportion(100, 10))
    assert result.status == Status.INSUFFICIENT_DATA
    assert "insufficient data" in result.message
    assert not result.ok


def test_one_unit_per_arm_is_insufficient():
    result = welch_t_test(MeanStats.from_values([1.0]), MeanStats.from_values([2.0]))
    assert result.status == Status.INSUFFICIENT_DATA
    assert "fewer than 2 units" in result.message
    ratio = delta_method_ratio_test(
        RatioStats.from_values([1], [2]), RatioStats.from_values([1, 2], [2, 2])
    )
    assert ratio.status == Status.INSUFFICIENT_DATA


def test_zero_denominator_ratio_is_insufficient():
    result = delta_method_ratio_test(
        RatioStats.from_values([0, 0], [0, 0]), RatioStats.from_values([1, 2], [2, 3])
    )
    assert result.status == Status.INSUFFICIENT_DATA
    assert "denominator" in result.message


def test_extreme_imbalance():
    rng = np.random.default_rng(4)
    small, large = rng.normal(0, 1, 5), rng.normal(0, 1, 1_000_000)
    result = welch_t_test(MeanStats.from_values(small), MeanStats.from_values(large))
    ref = stats.ttest_ind(large, small, equal_var=False)
    assert result.absolute.p_value == pytest.approx(ref.pvalue, rel=1e-8)
    assert 4.0 <= result.df <= 4.1  # Satterthwaite df follows the small arm
    z = two_proportion_z_test(
        MeanStats.from_proportion(20, 2), MeanStats.from_proportion(2_000_000, 200_000)
    )
    assert z.status == Status.EXACT  # expected successes in the small arm < 5


def test_huge_n_does_not_overflow():
    n = 10**13  # Python ints: exact; float64 sums keep 15-16 significant digits
    c = MeanStats.from_proportion(n, n // 10)
    t = MeanStats.from_proportion(n, n // 10 + 10**7)
    result = two_proportion_z_test(c, t)
    assert result.status == Status.OK
    assert result.absolute.estimate == pytest.approx(1e-6, rel=1e-6)
    assert 0 < result.absolute.p_value < 1e-10
    w = welch_t_test(MeanStats(n, 5.0 * n, 30.0 * n), MeanStats(n, 5.0 * n, 30.0 * n))
    assert w.absolute.p_value == pytest.approx(1.0) and np.isfinite(w.df)


def test_non_binary_stats_rejected_by_z_test():
    with pytest.raises(ValueError, match="not from 0/1 values"):
        two_proportion_z_test(MeanStats(10, 5.0, 9.0), MeanStats.from_proportion(10, 5))


def test_bad_alpha_rejected():
    with pytest.raises(ValueError, match="alpha"):
        welch_t_test(MeanStats.from_values([1, 2]), MeanStats.from_values([1, 3]), alpha=1.5)
