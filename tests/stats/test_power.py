"""Power and sample size: reference values, statsmodels parity, simulated power."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.power import NormalIndPower, TTestIndPower
from statsmodels.stats.proportion import samplesize_proportions_2indep_onetail

from tripwire.stats.power import (
    cohort_mde,
    mde_from_variance,
    mde_proportions,
    runtime_days,
    sample_size_means,
    sample_size_proportions,
    sample_size_ratio,
)
from tripwire.stats.sequential import sequential_boundaries


def test_reference_sample_sizes() -> None:
    means = sample_size_means(0.142, 0.03, mean=0.183, relative=True)
    assert means.n_per_arm == (10_503, 10_503)
    props = sample_size_proportions(0.05, 0.005)
    assert props.n_per_arm == (31_234, 31_234)
    assert props.n_total == 62_468


@pytest.mark.parametrize(("ratio", "sides"), [(1.0, 2), (2.0, 2), (0.5, 1)])
def test_means_match_statsmodels_t_test_power(ratio: float, sides: int) -> None:
    plan = sample_size_means(1.0, 0.2, ratio=ratio, sides=sides, alpha=0.05, power=0.85)
    expected = TTestIndPower().solve_power(
        effect_size=0.2,
        alpha=0.05,
        power=0.85,
        ratio=ratio,
        alternative="two-sided" if sides == 2 else "larger",
    )
    assert plan.fixed_n_control == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("ratio", [1.0, 3.0])
def test_proportions_match_statsmodels(ratio: float) -> None:
    plan = sample_size_proportions(0.2, -0.03, ratio=ratio, power=0.9)
    # statsmodels: sample 1 is the treatment, prop2 the control, ratio = n_control / n_treatment,
    # and it returns the treatment size
    expected = samplesize_proportions_2indep_onetail(
        diff=-0.03, prop2=0.2, power=0.9, ratio=1 / ratio, alpha=0.05, alternative="two-sided"
    )
    assert plan.fixed_n_control * ratio == pytest.approx(expected, rel=1e-9)
    assert plan.n_per_arm[1] == math.ceil(plan.fixed_n_control * ratio)


def test_ratio_matches_normal_power() -> None:
    plan = sample_size_ratio(4.0, 0.05, ratio_value=2.5, relative=True)
    d = 0.125 / 2.0  # effect over the unit standard deviation
    expected = NormalIndPower().solve_power(effect_size=d, alpha=0.05, power=0.8, ratio=1.0)
    # statsmodels also counts the (negligible) power of the opposite tail
    assert plan.fixed_n_control == pytest.approx(expected, rel=1e-5)
    assert plan.relative_effect == pytest.approx(0.05)


def test_mde_is_the_inverse_of_sample_size() -> None:
    plan = sample_size_ratio(2.0, 0.07)
    mde = mde_from_variance(plan.fixed_n_control, 2.0)
    assert mde.absolute == pytest.approx(0.07, rel=1e-9)
    props = sample_size_proportions(0.1, 0.01)
    assert mde_proportions(props.fixed_n_control, 0.1).absolute == pytest.approx(0.01, rel=1e-7)


def test_cuped_multiarm_and_allocation_adjustments() -> None:
    base = sample_size_ratio(1.0, 0.1)
    cuped = sample_size_ratio(1.0, 0.1, cuped_correlation=0.6)
    assert cuped.fixed_n_control == pytest.approx(base.fixed_n_control * 0.64)
    assert cuped.variance_factor == pytest.approx(0.64)
    three = sample_size_ratio(1.0, 0.1, n_treatment_arms=3)
    assert three.alpha_per_comparison == pytest.approx(0.05 / 3)
    assert len(three.n_per_arm) == 4 and three.n_per_arm[1] == three.n_per_arm[3]
    assert three.fixed_n_control > base.fixed_n_control
    none = sample_size_ratio(1.0, 0.1, n_treatment_arms=3, multiplicity="none")
    assert none.fixed_n_control == pytest.approx(base.fixed_n_control)
    uneven = sample_size_ratio(1.0, 0.1, ratio=2.0)
    # n_c (1 + 1/r) fixed: halving the treatment variance term with r = 2
    assert uneven.fixed_n_control == pytest.approx(base.fixed_n_control * 0.75)


def test_sequential_inflation_comes_from_the_design() -> None:
    obf = sequential_boundaries([0.25, 0.5, 0.75, 1.0], spending="classic_obf")
    pocock = sequential_boundaries([0.25, 0.5, 0.75, 1.0], spending="classic_pocock")
    fixed = sample_size_proportions(0.05, 0.005)
    a = sample_size_proportions(0.05, 0.005, design=obf)
    b = sample_size_proportions(0.05, 0.005, design=pocock)
    assert a.sequential_inflation == pytest.approx(1.024, abs=1e-3)
    assert b.sequential_inflation == pytest.approx(1.202, abs=1e-3)
    assert a.n_per_arm[0] == math.ceil(fixed.fixed_n_control * a.sequential_inflation)
    with pytest.raises(ValueError, match="per-comparison level"):
        sample_size_proportions(0.05, 0.005, n_treatment_arms=2, design=obf)


def test_cohort_mde_scales_with_the_square_root_of_its_share() -> None:
    overall = mde_from_variance(20_000, 0.25, baseline=0.5)
    cohort = cohort_mde(20_000, 0.1, 0.25, baseline=0.5)
    assert cohort.absolute == pytest.approx(overall.absolute * math.sqrt(10))
    assert cohort.relative == pytest.approx(cohort.absolute / 0.5)
    assert cohort.n_control == pytest.approx(2_000)


def test_runtime_days() -> None:
    r = runtime_days((10_503, 10_503), 3_000, traffic_fraction=0.5)
    assert r.days == 15 and r.daily_units_per_arm == (750.0, 750.0)
    skew = runtime_days((1_000, 1_000), 100, weights=(3, 1))
    assert skew.limiting_arm == 1 and skew.days == 40


def test_planned_n_gives_planned_power_by_simulation() -> None:
    rng = np.random.default_rng(4)
    sims = 4_000
    plan = sample_size_proportions(0.05, 0.005)
    n = plan.n_per_arm[0]
    xc = rng.binomial(n, 0.05, sims)
    xt = rng.binomial(n, 0.055, sims)
    pooled = (xc + xt) / (2 * n)
    z = (xt - xc) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
    assert np.mean(np.abs(z) > 1.959964) == pytest.approx(0.8, abs=0.03)
    # means: exact normal-data simulation through sufficient statistics (mean, variance)
    mplan = sample_size_means(0.142, 0.00549)
    m = mplan.n_per_arm[0]
    diff = rng.normal(0.00549, 0.142 * math.sqrt(2 / m), sims)
    s2 = 0.142**2 * rng.chisquare(2 * m - 2, sims) / (2 * m - 2)
    t = diff / np.sqrt(s2 * 2 / m)
    assert np.mean(np.abs(t) > 1.96) == pytest.approx(0.8, abs=0.03)


def test_sequential_plan_has_planned_power_by_simulation() -> None:
    design = sequential_boundaries([0.25, 0.5, 0.75, 1.0], spending="obf")
    plan = sample_size_proportions(0.05, 0.005, design=design)
    rng = np.random.default_rng(9)
    sims, n_look = 4_000, plan.n_per_arm[0] / 4
    xc = np.cumsum(rng.binomial(round(n_look), 0.05, (sims, 4)), axis=1)
    xt = np.cumsum(rng.binomial(round(n_look), 0.055, (sims, 4)), axis=1)
    n = round(n_look) * np.arange(1, 5)
    pooled = (xc + xt) / (2 * n)
    z = (xt - xc) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
    crossed = (z >= np.array(design.efficacy)).any(axis=1)
    assert np.mean(crossed) == pytest.approx(0.8, abs=0.03)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sample_size_means(0.0, 0.1), "sd must be > 0"),
        (lambda: sample_size_means(1.0, 0.1, relative=True), "relative mde needs"),
        (lambda: sample_size_means(1.0, 0.1, alpha=1.5), "alpha must be"),
        (lambda: sample_size_means(1.0, 0.1, power=1.0), "power must be"),
        (lambda: sample_size_means(1.0, 0.1, ratio=0.0), "allocation ratio"),
        (
            lambda: sample_size_proportions(0.95, 0.1),
            r"treatment proportion .* must be in \(0, 1\)",
        ),
        (lambda: sample_size_ratio(1.0, 0.1, cuped_correlation=1.0), "cuped_correlation"),
        (lambda: sample_size_ratio(1.0, 0.1, multiplicity="holm"), "multiplicity"),  # type: ignore[arg-type]
        (lambda: cohort_mde(100, 0.0, 1.0), "cohort_share"),
        (lambda: runtime_days((100,), 0), "daily_eligible_units"),
        (lambda: runtime_days((100, 100), 10, weights=(1,)), "weights must be 2"),
        (lambda: mde_proportions(5, 0.5, power=0.99), "too small"),
    ],
)
def test_bad_input(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        call()


@settings(max_examples=40, deadline=None)
@given(
    st.floats(0.01, 3.0),
    st.floats(0.001, 2.0),
    st.floats(0.5, 0.99),
    st.floats(0.2, 5.0),
    st.sampled_from([1, 2]),
)
def test_sample_size_is_monotone_and_mde_inverts_it(
    sd: float, mde: float, power: float, ratio: float, sides: int
) -> None:
    plan = sample_size_means(sd, mde, power=power, ratio=ratio, sides=sides)
    assert all(n >= 2 for n in plan.n_per_arm)
    bigger = sample_size_means(sd, mde * 1.5, power=power, ratio=ratio, sides=sides)
    assert bigger.fixed_n_control <= plan.fixed_n_control
    ratio_plan = sample_size_ratio(sd**2, mde, power=power, ratio=ratio, sides=sides)
    back = mde_from_variance(
        ratio_plan.fixed_n_control, sd**2, power=power, ratio=ratio, sides=sides
    )
    assert back.absolute == pytest.approx(mde, rel=1e-9)
