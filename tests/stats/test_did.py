"""Difference-in-differences: statsmodels parity, planted effect and coverage by simulation."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from tripwire.stats.did import difference_in_differences, pre_trend_test


def panel(units: int, periods: int, effect: float, rho: float, rng: np.random.Generator):
    """Balanced panel with unit and period effects and AR(1) errors within each unit."""
    unit = np.repeat(np.arange(units), periods)
    period = np.tile(np.arange(periods), units)
    treated = (unit < units // 2).astype(float)
    post = (period >= periods // 2).astype(float)
    shocks = rng.standard_normal((units, periods))
    e = np.empty_like(shocks)
    e[:, 0] = shocks[:, 0]
    for t in range(1, periods):
        e[:, t] = rho * e[:, t - 1] + np.sqrt(1 - rho**2) * shocks[:, t]
    y = rng.normal(0, 1, units)[unit] + 0.2 * period + effect * treated * post + e.ravel()
    return y, treated, post, unit, period


@pytest.mark.parametrize("fixed_effects", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_statsmodels_cluster_robust(fixed_effects: bool, weighted: bool) -> None:
    rng = np.random.default_rng(3)
    y, treated, post, unit, period = panel(16, 6, 0.4, 0.5, rng)
    labels = np.array([f"seg-{u}" for u in unit])  # string cluster ids work too
    w = rng.integers(20, 500, y.size).astype(float) if weighted else None
    got = difference_in_differences(
        y, treated, post, labels, period=period, weights=w, fixed_effects=fixed_effects
    )
    if fixed_effects:
        x = np.column_stack([treated * post, np.eye(16)[unit], np.eye(6)[period][:, 1:]])
        col = 0
    else:
        x = np.column_stack([np.ones(y.size), treated, post, treated * post])
        col = 3
    model = sm.WLS(y, x, weights=w) if weighted else sm.OLS(y, x)
    fit = model.fit(cov_type="cluster", cov_kwds={"groups": unit}, use_t=True)
    assert got.effect == pytest.approx(fit.params[col], abs=1e-10)
    assert got.se == pytest.approx(fit.bse[col], rel=1e-9)
    assert got.p_value == pytest.approx(fit.pvalues[col], rel=1e-7)
    assert (got.ci_lower, got.ci_upper) == pytest.approx(tuple(fit.conf_int()[col]), rel=1e-9)
    assert got.df == 15 and got.n_clusters == 16 and got.n_obs == 96


def test_recovers_planted_effect_with_nominal_coverage() -> None:
    """Serially correlated errors (BDM 2004): clustered CIs keep ~95% coverage."""
    rng = np.random.default_rng(12)
    effect, reps = 0.5, 400
    estimates, covered = [], 0
    for _ in range(reps):
        y, treated, post, unit, period = panel(40, 10, effect, 0.8, rng)
        r = difference_in_differences(y, treated, post, unit, period=period)
        estimates.append(r.effect)
        covered += r.ci_lower <= effect <= r.ci_upper
    assert np.mean(estimates) == pytest.approx(effect, abs=0.03)
    assert 0.92 <= covered / reps <= 0.98


def test_two_by_two_without_fixed_effects_equals_mean_differences() -> None:
    rng = np.random.default_rng(1)
    y, treated, post, unit, _ = panel(10, 4, 1.0, 0.0, rng)
    r = difference_in_differences(y, treated, post, unit, fixed_effects=False)

    def cell(tr: float, po: float) -> float:
        return float(y[(treated == tr) & (post == po)].mean())

    expected = (cell(1, 1) - cell(1, 0)) - (cell(0, 1) - cell(0, 0))
    assert r.effect == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"treated": [0, 1, 2, 1]}, r"treated\[2\] must be 0/1"),
        ({"post": [0, 1]}, "post must have shape"),
        ({"cluster": [0, 0, 0, 0]}, "at least 2 clusters"),
        ({"outcome": [1.0, np.nan, 2.0, 3.0]}, r"outcome\[1\] is not finite"),
        ({"treated": [0, 0, 0, 0]}, "treated·post must take both values"),
        ({"weights": [1.0, -1.0, 1.0, 1.0]}, "weights must be"),
    ],
)
def test_bad_input(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "outcome": [1.0, 2.0, 1.5, 3.0],
        "treated": [0, 0, 1, 1],
        "post": [0, 1, 0, 1],
        "cluster": [0, 0, 1, 1],
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        difference_in_differences(**args)  # type: ignore[arg-type]


def test_unidentified_design_is_reported() -> None:
    # every treated cell is post and every post cell is treated: D equals the period effect
    with pytest.raises(ValueError, match="collinear"):
        difference_in_differences([1.0, 2.0, 1.5, 3.0], [0, 1, 0, 1], [0, 1, 0, 1], [0, 0, 1, 1])


def test_unbalanced_panel_matches_statsmodels_dummies() -> None:
    """Absorbing fixed effects by alternating projections equals explicit dummies."""
    rng = np.random.default_rng(8)
    y, treated, post, unit, period = panel(12, 8, 0.3, 0.4, rng)
    keep = rng.random(y.size) > 0.2
    y, treated, post, unit, period = y[keep], treated[keep], post[keep], unit[keep], period[keep]
    w = rng.integers(5, 50, y.size).astype(float)
    got = difference_in_differences(y, treated, post, unit, period=period, weights=w)
    x = np.column_stack([treated * post, np.eye(12)[unit], np.eye(8)[period][:, 1:]])
    fit = sm.WLS(y, x, weights=w).fit(cov_type="cluster", cov_kwds={"groups": unit}, use_t=True)
    assert got.effect == pytest.approx(fit.params[0], abs=1e-9)
    assert got.se == pytest.approx(fit.bse[0], rel=1e-7)


def test_pre_trend_test_matches_statsmodels_event_study() -> None:
    rng = np.random.default_rng(2)
    y, treated, post, unit, period = panel(20, 8, 0.5, 0.3, rng)
    w = rng.integers(10, 90, y.size).astype(float)
    got = pre_trend_test(y, treated, post, unit, period, weights=w)
    assert got.reference_period == "3" and got.n_pre_tested == 3
    others = [j for j in range(8) if j != 3]
    x = np.column_stack(
        [treated * (period == j) for j in others] + [np.eye(20)[unit], np.eye(8)[period][:, 1:]]
    )
    fit = sm.WLS(y, x, weights=w).fit(cov_type="cluster", cov_kwds={"groups": unit}, use_t=True)
    assert got.estimates == pytest.approx(fit.params[:7], abs=1e-9)
    assert got.ses == pytest.approx(fit.bse[:7], rel=1e-7)
    ftest = fit.f_test(np.eye(x.shape[1])[:3])
    assert got.f_stat == pytest.approx(float(ftest.fvalue), rel=1e-7)
    assert got.p_value == pytest.approx(float(ftest.pvalue), rel=1e-6)


def test_pre_trend_test_size_and_power() -> None:
    rng = np.random.default_rng(6)
    parallel = diverging = 0
    reps = 300
    for _ in range(reps):
        y, treated, post, unit, period = panel(30, 8, 0.5, 0.5, rng)
        parallel += pre_trend_test(y, treated, post, unit, period).p_value <= 0.05
        drift = 0.8 * treated * period  # treated units were already pulling away
        diverging += pre_trend_test(y + drift, treated, post, unit, period).p_value <= 0.05
    # CR1 Wald tests with ~30 clusters are slightly conservative (about 3-4% at 5%)
    assert 0.01 <= parallel / reps <= 0.08
    assert diverging / reps >= 0.8


def test_pre_trend_test_bad_input() -> None:
    y, treated, post, unit, period = panel(6, 4, 0.0, 0.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="at least 2 pre-treatment periods"):
        pre_trend_test(y, treated, (period >= 1).astype(float), unit, period)
    mixed = post.copy()
    mixed[0] = 1.0
    with pytest.raises(ValueError, match="constant within a period"):
        pre_trend_test(y, treated, mixed, unit, period)
    with pytest.raises(ValueError, match="time order"):
        pre_trend_test(y, treated, (period % 2).astype(float), unit, period)
