"""Guardrails: one-sided non-inferiority tests and the family rules (IUT by default)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from tripwire.stats import (
    MeanStats,
    Status,
    evaluate_guardrails,
    non_inferiority_test,
    two_proportion_z_test,
    welch_t_test,
)


def _z(n, x_c, x_t):
    return two_proportion_z_test(
        MeanStats.from_proportion(n, x_c), MeanStats.from_proportion(n, x_t)
    )


def test_one_sided_p_value_and_bound_formulas():
    result = _z(40_000, 4000, 3960)
    g = non_inferiority_test(result, -0.05, harm="decrease", relative=True, name="conv")
    est, se = result.relative.estimate, result.relative.se
    assert g.p_value == pytest.approx(stats.norm.sf((est + 0.05) / se), rel=1e-12)
    assert g.bound == pytest.approx(est - stats.norm.ppf(0.95) * se, rel=1e-12)
    assert g.passed == (g.bound > -0.05)


def test_lower_is_better_direction_uses_absolute_scale():
    rng = np.random.default_rng(0)
    control = MeanStats.from_values(rng.normal(800, 100, 2000))  # latency ms
    slower = MeanStats.from_values(rng.normal(830, 100, 2000))
    result = welch_t_test(control, slower)
    g = non_inferiority_test(result, 50.0, harm="increase", relative=False, name="latency")
    assert g.scale == "absolute"
    assert g.p_value == pytest.approx(
        stats.t.cdf((result.absolute.estimate - 50.0) / result.absolute.se, result.df)
    )
    assert g.passed and g.bound < 50.0
    strict = non_inferiority_test(result, 10.0, harm="increase", relative=False, name="latency")
    assert not strict.passed


def test_non_inferiority_size_at_the_margin_by_simulation():
    """True relative effect exactly at the threshold: pass rate must be ~α (one-sided)."""
    rng = np.random.default_rng(30)
    sims, n, p = 6000, 20_000, 0.10
    control = MeanStats.from_proportion(np.full(sims, n), rng.binomial(n, p, sims))
    treatment = MeanStats.from_proportion(np.full(sims, n), rng.binomial(n, p * 0.97, sims))
    result = two_proportion_z_test(control, treatment)
    # Vectorised: the same formula as non_inferiority_test, on every simulated experiment.
    est, se = np.asarray(result.relative.estimate), np.asarray(result.relative.se)
    passed = stats.norm.sf((est + 0.03) / se) <= 0.05
    assert 0.04 <= passed.mean() <= 0.06
    one = non_inferiority_test(
        two_proportion_z_test(
            MeanStats.from_proportion(n, int(control.sum[0])),
            MeanStats.from_proportion(n, int(treatment.sum[0])),
        ),
        -0.03,
    )
    assert one.passed == bool(passed[0])


def test_intersection_union_ship_rate_is_alpha_by_simulation():
    """Guardrail A truly at its margin (−3%), guardrail B clearly safe: IUT ships ≤ α."""
    rng = np.random.default_rng(31)
    sims, n, p = 1200, 20_000, 0.10  # scalar API in a loop: kept small; MC SE 0.6 pp
    a_c, a_t = rng.binomial(n, p, sims), rng.binomial(n, p * 0.97, sims)
    b_c, b_t = rng.binomial(n, p, sims), rng.binomial(n, p * 1.10, sims)
    shipped = 0
    for i in range(sims):
        verdict = evaluate_guardrails(
            [
                non_inferiority_test(_z(n, a_c[i], a_t[i]), -0.03, name="a"),
                non_inferiority_test(_z(n, b_c[i], b_t[i]), -0.03, name="b"),
            ]
        )
        shipped += verdict.passed
    assert 0.03 <= shipped / sims <= 0.07


def test_veto_names_guardrail_and_level():
    ok = _z(50_000, 5000, 5010)
    bad = _z(50_000, 5000, 4700)
    guardrails = [
        non_inferiority_test(ok, -0.05, name="conversion"),
        non_inferiority_test(bad, -0.05, name="retention"),
    ]
    iut = evaluate_guardrails(guardrails)
    assert iut.vetoes == ("retention",)
    assert iut.levels == (0.05, 0.05)
    assert "VETO retention" in iut.explain() and "pass conversion" in iut.explain()
    bonf = evaluate_guardrails(guardrails, rule="bonferroni")
    assert bonf.levels == (0.025, 0.025)
    holm = evaluate_guardrails(guardrails, rule="holm")
    assert sorted(holm.levels) == [0.025, 0.05]
    assert evaluate_guardrails(guardrails[:1], rule="benjamini_hochberg").passed


def test_adjusted_rules_are_never_easier_than_iut():
    rng = np.random.default_rng(2)
    for _ in range(50):
        gs = [
            non_inferiority_test(_z(50_000, 5000, 5000 + int(k)), -0.03, name=f"g{i}")
            for i, k in enumerate(rng.integers(-150, 150, 4))
        ]
        iut = evaluate_guardrails(gs)
        for rule in ("bonferroni", "holm", "benjamini_hochberg"):
            other = evaluate_guardrails(gs, rule=rule)
            assert set(iut.vetoes) <= set(other.vetoes)


def test_insufficient_data_vetoes():
    empty = two_proportion_z_test(MeanStats.from_proportion(0, 0), MeanStats.from_proportion(10, 1))
    g = non_inferiority_test(empty, -0.05, name="errors")
    assert g.status == Status.INSUFFICIENT_DATA and not g.passed
    assert evaluate_guardrails([g]).vetoes == ("errors",)


def test_bad_arguments():
    r = _z(1000, 100, 100)
    with pytest.raises(ValueError, match="harm"):
        non_inferiority_test(r, -0.1, harm="up")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold"):
        non_inferiority_test(r, float("nan"))
    g = non_inferiority_test(r, -0.1, name="same")
    with pytest.raises(ValueError, match="unique"):
        evaluate_guardrails([g, g])
    with pytest.raises(ValueError, match="unknown guardrail rule"):
        evaluate_guardrails([g], rule="sidak")  # type: ignore[arg-type]
