"""Multiplicity adjustments: statsmodels parity, levels, Dunnett vs scipy, FWER by simulation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from statsmodels.stats.multitest import multipletests

from tripwire.stats import (
    adjust_p_values,
    benjamini_hochberg_adjust,
    bonferroni_adjust,
    dunnett_adjust,
    holm_adjust,
    rejection_levels,
)

p_lists = st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=25)


def test_adjustments_match_statsmodels():
    rng = np.random.default_rng(4)
    cases = [rng.uniform(0, 1, k) for k in (1, 3, 12)] + [
        [0.0, 0.01, 0.01, 1.0, 0.04],
        rng.uniform(0, 0.05, 8),
    ]
    for (
        p
    ) in cases:  # multipletests costs ~0.2 s a call, so a few varied cases rather than hypothesis
        for ours, theirs in (
            (bonferroni_adjust, "bonferroni"),
            (holm_adjust, "holm"),
            (benjamini_hochberg_adjust, "fdr_bh"),
        ):
            np.testing.assert_allclose(
                ours(p), multipletests(p, method=theirs)[1], rtol=1e-12, atol=1e-15
            )


@settings(max_examples=40, deadline=None)
@given(p_lists, st.sampled_from(["bonferroni", "holm", "benjamini_hochberg"]))
def test_levels_agree_with_adjusted_p_for_single_step_and_first_rank(p, method):
    levels = rejection_levels(p, method, 0.05)
    adjusted = adjust_p_values(p, method)
    if method == "bonferroni":
        np.testing.assert_array_equal(np.asarray(p) <= levels, adjusted <= 0.05)
    # The smallest p-value is always judged at the first level of the procedure.
    i = int(np.argmin(p))
    assert levels[i] == pytest.approx(0.05 / len(p))


def test_holm_step_down_stops_at_first_failure():
    # Holm: 0.01 <= 0.05/3, 0.04 > 0.05/2 -> stop; 0.045 cannot be rejected though < 0.05.
    adjusted = holm_adjust([0.01, 0.04, 0.045])
    assert list(adjusted <= 0.05) == [True, False, False]


@pytest.mark.parametrize("bad", [[0.2, float("nan")], [1.2], [-0.1], [[0.1, 0.2]]])
def test_bad_p_values_rejected(bad):
    with pytest.raises(ValueError, match="p-value|1-d"):
        holm_adjust(bad)


def test_unknown_method_rejected():
    with pytest.raises(ValueError, match="unknown adjustment"):
        adjust_p_values([0.1], "sidak")  # type: ignore[arg-type]


def test_dunnett_matches_scipy_on_raw_data():
    rng = np.random.default_rng(5)
    control = rng.normal(10, 2, 60)
    arms = [rng.normal(10.6, 2, 50), rng.normal(10.1, 2, 55), rng.normal(11.2, 2, 45)]
    ref = stats.dunnett(*arms, control=control, random_state=1)
    # Dunnett's classic test pools the variance over all groups (df = N - k - 1).
    groups = [control, *arms]
    df = sum(g.size for g in groups) - len(groups)
    s2 = sum(((g - g.mean()) ** 2).sum() for g in groups) / df
    est = np.array([a.mean() - control.mean() for a in arms])
    se = np.array([np.sqrt(s2 * (1 / a.size + 1 / control.size)) for a in arms])
    p, _, crit = dunnett_adjust(est, se, s2 / control.size, df=df)
    np.testing.assert_allclose(p, ref.pvalue, atol=2e-3)
    ci = ref.confidence_interval(0.95)
    np.testing.assert_allclose(est - crit * se, ci.low, atol=5e-3)


def test_dunnett_critical_value_table():
    # Dunnett (1955) two-sided, k = 2 arms, equal n, df = inf: 2.21 (corr 0.5).
    _, _, crit = dunnett_adjust([0.0, 0.0], [1.0, 1.0], 0.5)
    assert crit == pytest.approx(2.212, abs=2e-3)


def test_holm_controls_family_wise_error_by_simulation():
    rng = np.random.default_rng(8)
    sims, m = 4000, 4
    z = rng.standard_normal((sims, m))
    p = 2 * stats.norm.sf(np.abs(z))
    any_rejection = np.array([np.any(holm_adjust(row) <= 0.05) for row in p])
    naive = np.mean(np.any(p <= 0.05, axis=1))
    assert 0.04 <= any_rejection.mean() <= 0.06  # independent tests: Holm is near-exact
    assert naive > 0.15  # 1 - 0.95^4 = 0.185 without adjustment


def test_dunnett_quadrature_matches_scipy_multivariate_normal():
    rng = np.random.default_rng(9)
    for k in (2, 4):
        se = rng.uniform(0.5, 2.0, k)
        vc = 0.2
        est = rng.normal(0, 2, k)
        p, _, _ = dunnett_adjust(est, se, vc)
        corr = vc / np.outer(se, se)
        np.fill_diagonal(corr, 1.0)
        for i in range(k):
            c = abs(est[i] / se[i])
            inside = stats.multivariate_normal.cdf(
                np.full(k, c),
                mean=np.zeros(k),
                cov=corr,
                lower_limit=np.full(k, -c),
                abseps=1e-8,
                releps=1e-8,
            )
            assert p[i] == pytest.approx(1 - inside, abs=1e-5)
