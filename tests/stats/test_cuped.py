"""CUPED for means and ratios: reference parity, OLS parity, simulations, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from tripwire.stats import (
    CupedMeanStats,
    CupedRatioStats,
    Status,
    cuped_mean_test,
    cuped_ratio_test,
    welch_t_test,
)

from .reference_results import arms_of, assert_close

ALPHA = 0.05


def _revenue(a: dict) -> CupedMeanStats:
    return CupedMeanStats(a["n"], a["sum_revenue"], a["sumsq_revenue"], a["sum_pre_revenue"],
                          a["sumsq_pre_revenue"], a["sumprod_revenue_pre_revenue"])  # fmt: skip


@pytest.mark.parametrize("fixture", ["revenue", "aa_revenue"])
def test_cuped_mean_matches_gbstats_and_tea_tasting(reference, fixture):
    arms = arms_of(reference, fixture)
    result = cuped_mean_test(_revenue(arms["control"]), _revenue(arms["treatment"]))
    gb = reference["results"][fixture]["gbstats"]["cuped_regression_adjusted"]
    for ours, theirs in ((result.absolute, gb["absolute"]), (result.relative, gb["relative"])):
        assert_close(ours.estimate, theirs["estimate"])
        assert_close(ours.se, theirs["se"])
        assert_close(ours.ci, theirs["ci"])
        assert_close(ours.p_value, theirs["p_value"])
    assert_close(result.df, gb["absolute"]["dof"])
    own = reference["results"][fixture]["scipy_statsmodels"]["cuped_theta_total"]["absolute"]
    assert_close(result.theta, own["theta"])
    tea = reference["results"][fixture]["tea-tasting"]["mean_cuped"]["absolute"]
    assert_close(result.absolute.p_value, tea["p_value"])


@pytest.mark.parametrize("fixture", ["revenue", "aa_revenue"])
def test_within_theta_equals_ols_estimate(reference, fixture):
    arms = arms_of(reference, fixture)
    result = cuped_mean_test(
        _revenue(arms["control"]), _revenue(arms["treatment"]), theta_estimator="within"
    )
    ref = reference["results"][fixture]["scipy_statsmodels"]
    assert_close(
        result.absolute.estimate, ref["ols_y_T_x_nonrobust"]["absolute"]["estimate"], rtol=1e-9
    )
    assert_close(result.theta, ref["cuped_theta_within"]["absolute"]["theta"])
    assert_close(result.absolute.se, ref["cuped_theta_within"]["absolute"]["se"])


def test_regression_adjustment_matches_statsmodels_ols_on_random_inputs():
    rng = np.random.default_rng(21)
    for _ in range(30):
        n_c, n_t = rng.integers(20, 3000, size=2)
        x = rng.normal(rng.normal(0, 5), rng.uniform(0.5, 3), n_c + n_t)
        treat = np.r_[np.zeros(n_c), np.ones(n_t)]
        y = rng.normal(0, 1) + rng.uniform(-2, 2) * x + 0.3 * treat + rng.standard_t(5, n_c + n_t)
        fit = sm.OLS(y, np.column_stack([np.ones_like(x), treat, x])).fit()
        result = cuped_mean_test(
            CupedMeanStats.from_values(y[:n_c], x[:n_c]),
            CupedMeanStats.from_values(y[n_c:], x[n_c:]),
            theta_estimator="within",
        )
        np.testing.assert_allclose(result.absolute.estimate, fit.params[1], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(result.theta, fit.params[2], rtol=1e-8)


def _ratio(a: dict) -> CupedRatioStats:
    return CupedRatioStats(
        a["n"], a["sum_clicks"], a["sumsq_clicks"], a["sum_sessions"], a["sumsq_sessions"],
        a["sumprod_clicks_sessions"], a["sum_pre_clicks"], a["sumsq_pre_clicks"], a["sum_pre_sessions"],
        a["sumsq_pre_sessions"], a["sumprod_pre_clicks_pre_sessions"], a["sumprod_clicks_pre_clicks"],
        a["sumprod_clicks_pre_sessions"], a["sumprod_sessions_pre_clicks"], a["sumprod_sessions_pre_sessions"],
    )  # fmt: skip


def test_cuped_ratio_matches_tea_tasting(reference):
    arms = arms_of(reference, "ratio")
    result = cuped_ratio_test(_ratio(arms["control"]), _ratio(arms["treatment"]))
    tea = reference["results"]["ratio"]["tea-tasting"]["ratio_of_means_cuped"]["absolute"]
    own = reference["results"]["ratio"]["scipy_statsmodels"]["ratio_cuped_delta"]["absolute"]
    for ref in (tea, own):
        assert_close(result.absolute.estimate, ref["estimate"])
        assert_close(result.absolute.ci, ref["ci"])
        assert_close(result.absolute.p_value, ref["p_value"])
    assert_close(result.absolute.se, own["se"])
    assert_close(result.df, own["dof"])
    assert_close(result.theta, own["theta"])
    assert 0 < result.variance_reduction < 1


# ----------------------------------------------------------------- simulations

N_SIM = 5000
RHO = 0.6


def _cupedarms(rng, n, lift, sims=N_SIM):
    """y = c + e with Corr(y, c) = RHO; treatment adds ``lift``."""
    arms = []
    for effect in (0.0, lift):
        c = rng.normal(10, 1, (sims, n))
        y = c + rng.normal(0, np.sqrt(1 / RHO**2 - 1), (sims, n)) + effect
        arms.append(
            CupedMeanStats(
                np.full(sims, float(n)),
                y.sum(1),
                (y * y).sum(1),
                c.sum(1),
                (c * c).sum(1),
                (y * c).sum(1),
            )
        )
    return arms


def test_aa_false_positive_rate_cuped():
    control, treatment = _cupedarms(np.random.default_rng(200), 200, 0.0)
    result = cuped_mean_test(control, treatment)
    assert 0.04 <= np.mean(result.absolute.p_value < ALPHA) <= 0.06


def test_cuped_coverage_and_variance_reduction_is_rho_squared():
    control, treatment = _cupedarms(np.random.default_rng(201), 200, 0.2)
    result = cuped_mean_test(control, treatment)
    assert (
        0.94 <= np.mean((result.absolute.ci_low <= 0.2) & (result.absolute.ci_high >= 0.2)) <= 0.96
    )
    truth_rel = 0.2 / 10.0
    assert (
        0.94
        <= np.mean((result.relative.ci_low <= truth_rel) & (truth_rel <= result.relative.ci_high))
        <= 0.96
    )
    # Reported reduction ≈ ρ², and the realised spread of the estimates agrees.
    assert np.median(result.variance_reduction) == pytest.approx(RHO**2, abs=0.02)
    raw = welch_t_test(control.outcome, treatment.outcome)
    realised = 1 - np.var(result.absolute.estimate) / np.var(raw.absolute.estimate)
    assert realised == pytest.approx(RHO**2, abs=0.03)


def test_cuped_ratio_aa_false_positive_rate():
    rng = np.random.default_rng(202)
    sims, n = 4000, 200
    arms = []
    for _ in range(2):
        lam = rng.gamma(2.0, 2.5, (sims, n))
        q = rng.beta(3, 7, (sims, n))
        d, cd = rng.poisson(lam), rng.poisson(lam)
        y, cy = rng.binomial(d, q), rng.binomial(cd, q)
        arms.append(
            CupedRatioStats(
                np.full(sims, float(n)),
                y.sum(1),
                (y * y).sum(1),
                d.sum(1),
                (d * d).sum(1),
                (y * d).sum(1),
                cy.sum(1),
                (cy * cy).sum(1),
                cd.sum(1),
                (cd * cd).sum(1),
                (cy * cd).sum(1),
                (y * cy).sum(1),
                (y * cd).sum(1),
                (d * cy).sum(1),
                (d * cd).sum(1),
            )  # fmt: skip
        )
    result = cuped_ratio_test(*arms)
    assert 0.04 <= np.mean(result.absolute.p_value < ALPHA) <= 0.06
    assert np.median(result.variance_reduction) > 0.05


# ----------------------------------------------------------------- edge cases


def test_constant_covariate_gives_plain_welch():
    y_c, y_t = np.array([1.0, 2.0, 4.0]), np.array([2.0, 3.0, 7.0])
    result = cuped_mean_test(
        CupedMeanStats.from_values(y_c, np.ones(3)), CupedMeanStats.from_values(y_t, np.ones(3))
    )
    assert result.theta == 0.0
    plain = welch_t_test(
        CupedMeanStats.from_values(y_c, np.ones(3)).outcome,
        CupedMeanStats.from_values(y_t, np.ones(3)).outcome,
    )
    assert result.absolute.p_value == pytest.approx(plain.absolute.p_value, rel=1e-12)
    assert result.variance_reduction == pytest.approx(0.0, abs=1e-12)


def test_perfectly_predictive_covariate_is_insufficient_not_nan():
    c = np.array([1.0, 2.0, 3.0, 4.0])
    result = cuped_mean_test(
        CupedMeanStats.from_values(2 * c, c), CupedMeanStats.from_values(2 * c + 1, c)
    )
    assert result.status == Status.INSUFFICIENT_DATA
    assert "zero variance" in result.message


def test_single_unit_arms_are_insufficient():
    one = CupedMeanStats.from_values([1.0], [2.0])
    assert cuped_mean_test(one, one).status == Status.INSUFFICIENT_DATA
    r = CupedRatioStats.from_values([1], [2], [1], [2])
    assert cuped_ratio_test(r, r).status == Status.INSUFFICIENT_DATA


def test_unknown_theta_estimator_rejected():
    s = CupedMeanStats.from_values([1.0, 2.0], [1.0, 3.0])
    with pytest.raises(ValueError, match="theta_estimator"):
        cuped_mean_test(s, s, theta_estimator="per-arm")  # type: ignore[arg-type]
