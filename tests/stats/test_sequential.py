"""Group-sequential boundaries: reference values, independent integration, simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from tripwire.stats.sequential import (
    Decision,
    FutilityPlan,
    crossing_probabilities,
    drift_for_power,
    evaluate_look,
    inflation_factor,
    repeated_confidence_interval,
    sequential_boundaries,
    spending_function,
    update_design,
)

EQUAL4 = [0.25, 0.5, 0.75, 1.0]

# gsDesign 0.1.5 (hupdate) values for K = 4 equally spaced looks, two-sided alpha = 0.05,
# from /work/shared/reference-results/stats/reference.json (independent implementation).
GSDESIGN = {
    "classic_obf": [4.048590983430392, 2.862786138634344, 2.3374550941222285, 2.024295491715196],
    "classic_pocock": [2.361297892363913] * 4,
    "obf": [4.332614451244475, 2.9631315225573682, 2.359044275179075, 2.01409014073647],
    "pocock": [2.3683277041638933, 2.3675242957425016, 2.3581677365256604, 2.3500295393630553],
}


def brownian_z(fractions: list[float], n_paths: int, drift: float, seed: int) -> np.ndarray:
    """Z_k = S(t_k)/√t_k for Brownian motion S with drift θ: (n_paths, K) array."""
    rng = np.random.default_rng(seed)
    t = np.asarray(fractions)
    dt = np.diff(np.concatenate([[0.0], t]))
    incr = rng.standard_normal((n_paths, t.size)) * np.sqrt(dt) + drift * dt
    return np.cumsum(incr, axis=1) / np.sqrt(t)


def first_exit(
    z: np.ndarray, upper: np.ndarray, lower: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per path: look index of first exit (K if none) and +1/-1/0 for upper/lower/none."""
    up = z >= upper
    lo = z <= lower
    hit = up | lo
    k = np.where(hit.any(axis=1), hit.argmax(axis=1), z.shape[1])
    rows = np.arange(z.shape[0])
    kk = np.minimum(k, z.shape[1] - 1)
    side = np.where(k == z.shape[1], 0, np.where(up[rows, kk], 1, -1))
    return k, side


@pytest.mark.parametrize("spending", list(GSDESIGN))
def test_boundaries_match_gsdesign(spending: str) -> None:
    design = sequential_boundaries(EQUAL4, alpha=0.05, spending=spending)  # type: ignore[arg-type]
    # gsDesign's own root-finding tolerance is ~2e-5 at the first OBF look
    assert design.efficacy == pytest.approx(GSDESIGN[spending], abs=2e-5)
    assert design.efficacy[1:] == pytest.approx(GSDESIGN[spending][1:], abs=2e-6)
    assert design.cumulative_alpha[-1] == pytest.approx(0.05, abs=1e-9)


def test_first_look_is_the_closed_form_normal_quantile() -> None:
    for kind in ("obf", "pocock", "hsd", "power"):
        design = sequential_boundaries([0.2, 1.0], spending=kind)  # type: ignore[arg-type]
        spent = 2 * spending_function(kind, 0.2, 0.025, design.spending_parameter)
        assert design.efficacy[0] == pytest.approx(stats.norm.isf(spent / 2), abs=1e-8)


def test_published_four_decimal_values() -> None:
    obf = sequential_boundaries(EQUAL4, spending="classic_obf")
    assert [round(c, 4) for c in obf.efficacy] == [4.0486, 2.8628, 2.3375, 2.0243]
    assert round(obf.efficacy[-1], 3) == 2.024
    assert round(sequential_boundaries(EQUAL4, spending="classic_pocock").efficacy[0], 3) == 2.361
    ld_obf = sequential_boundaries(EQUAL4, spending="obf")
    assert [round(c, 4) for c in ld_obf.efficacy] == [4.3326, 2.9631, 2.3590, 2.0141]
    ld_pocock = sequential_boundaries(EQUAL4, spending="pocock")
    assert [round(c, 4) for c in ld_pocock.efficacy] == [2.3683, 2.3675, 2.3582, 2.3500]


def test_power_family_matches_scipy_mvn_reference() -> None:
    # alpha t^2 spending, two-sided total 0.05 (reference.json, own scipy MVN route)
    design = sequential_boundaries(EQUAL4, spending="power", spending_parameter=2.0)
    expected = [2.955166847497845, 2.559350156125919, 2.300855771474144, 2.0919672164788685]
    assert design.efficacy == pytest.approx(expected, abs=2e-5)


def test_spending_designs_spend_their_target_at_every_look() -> None:
    t = [0.1, 0.3, 0.35, 0.8, 1.0]
    for kind in ("obf", "pocock", "hsd", "power"):
        design = sequential_boundaries(t, spending=kind)  # type: ignore[arg-type]
        target = [2 * spending_function(kind, x, 0.025, design.spending_parameter) for x in t]
        assert design.cumulative_alpha == pytest.approx(target, abs=1e-8)


def test_naive_peeking_inflates_type_one_error_to_0_1262() -> None:
    cp = crossing_probabilities(EQUAL4, [1.96] * 4, [-1.96] * 4)
    assert cp.total == pytest.approx(0.12617, abs=2e-5)
    # and by simulation
    z = brownian_z(EQUAL4, 40_000, 0.0, seed=3)
    assert np.mean((np.abs(z) >= 1.96).any(axis=1)) == pytest.approx(cp.total, abs=0.006)


def test_crossing_probabilities_agree_with_multivariate_normal_cdf() -> None:
    """Independent route: P(no exit) from scipy's MVN CDF for unequal looks under drift."""
    t = np.array([0.3, 0.55, 1.0])
    upper = np.array([2.8, 2.4, 2.0])
    lower = np.array([-0.5, 0.2, 2.0])
    drift = 1.7
    cov = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    mvn = stats.multivariate_normal(mean=drift * np.sqrt(t), cov=cov)
    # P(continue at looks 1 and 2, then exit above at 3) with lower[2] = upper[2]
    lo = np.array([lower[0], lower[1], upper[2]])
    hi = np.array([upper[0], upper[1], np.inf])
    expected = mvn.cdf(hi, lower_limit=lo, rng=np.random.default_rng(0))
    cp = crossing_probabilities(t, upper, lower, drift=drift)
    assert cp.upper[2] == pytest.approx(expected, abs=2e-4)
    assert cp.total == pytest.approx(1.0, abs=1e-6)  # the final look closes the region


def test_simulated_spending_matches_planned_alpha_with_unequal_looks() -> None:
    t = [0.2, 0.45, 0.7, 1.0]
    z = brownian_z(t, 60_000, 0.0, seed=11)
    for kind in ("obf", "pocock"):
        design = sequential_boundaries(t, spending=kind)  # type: ignore[arg-type]
        c = np.array(design.efficacy)
        k, side = first_exit(z, c, -c)
        crossed_by = np.array([np.mean((side != 0) & (k <= j)) for j in range(4)])
        se = np.sqrt(np.array(design.cumulative_alpha) / z.shape[0])
        assert np.all(np.abs(crossed_by - design.cumulative_alpha) < 4 * se + 1e-4)


def test_four_look_obf_aa_false_positive_rate_is_about_alpha() -> None:
    design = sequential_boundaries(EQUAL4, spending="obf")
    z = brownian_z(EQUAL4, 8_000, 0.0, seed=5)
    c = np.array(design.efficacy)
    fpr = np.mean((np.abs(z) >= c).any(axis=1))
    assert 0.04 <= fpr <= 0.06


def test_inflation_factors_match_jennison_turnbull_tables() -> None:
    # J&T (2000) Table 2.2 (Pocock) and 2.4 (O'Brien-Fleming): K = 4, alpha 0.05, power 0.8
    pocock = sequential_boundaries(EQUAL4, spending="classic_pocock")
    obf = sequential_boundaries(EQUAL4, spending="classic_obf")
    assert inflation_factor(pocock, 0.8) == pytest.approx(1.202, abs=1e-3)
    assert inflation_factor(obf, 0.8) == pytest.approx(1.024, abs=1e-3)
    single = sequential_boundaries([1.0])
    assert inflation_factor(single, 0.8) == pytest.approx(1.0, abs=1e-6)


def test_drift_for_power_gives_that_power_by_simulation() -> None:
    design = sequential_boundaries([0.3, 0.6, 1.0], spending="obf")
    theta = drift_for_power(design, 0.9)
    z = brownian_z([0.3, 0.6, 1.0], 20_000, theta, seed=8)
    c = np.array(design.efficacy)
    _, side = first_exit(z, c, -c)
    assert np.mean(side == 1) == pytest.approx(0.9, abs=0.008)


def test_non_binding_futility_keeps_alpha_and_delivers_power() -> None:
    plan = FutilityPlan(beta=0.2)
    design = sequential_boundaries(EQUAL4, spending="obf", futility=plan)
    assert design.futility is not None and design.futility_drift is not None
    assert design.futility[-1] == design.efficacy[-1]
    assert all(b < c for b, c in zip(design.futility[:-1], design.efficacy[:-1], strict=True))
    # efficacy boundaries are those of the design without futility (non-binding)
    assert design.efficacy == sequential_boundaries(EQUAL4, spending="obf").efficacy
    # at the solved drift: power 1 - beta with futility applied, and futility spends beta(t)
    cp = design.crossing_probabilities(design.futility_drift)
    assert cp.total_upper == pytest.approx(0.8, abs=1e-6)
    z = brownian_z(EQUAL4, 30_000, design.futility_drift, seed=2)
    k, side = first_exit(z, np.array(design.efficacy), np.array(design.lower_boundaries()))
    assert np.mean(side == 1) == pytest.approx(0.8, abs=0.01)
    fut_by = [np.mean((side == -1) & (k <= j)) for j in range(4)]
    target = [spending_function("obf", x, 0.2) for x in EQUAL4]
    assert fut_by == pytest.approx(target, abs=0.01)
    # under H0, applying futility can only lower the type-I error
    assert design.crossing_probabilities(0.0, apply_futility=True).total_upper < 0.025
    # and the futility plan costs sample size relative to efficacy-only
    assert inflation_factor(design) > inflation_factor(sequential_boundaries(EQUAL4))


def test_one_sided_design_spends_all_alpha_on_one_side() -> None:
    design = sequential_boundaries(EQUAL4, alpha=0.025, sides=1, spending="obf")
    assert design.cumulative_alpha[-1] == pytest.approx(0.025, abs=1e-9)
    two = sequential_boundaries(EQUAL4, alpha=0.05, sides=2, spending="obf")
    assert design.efficacy == pytest.approx(two.efficacy, abs=1e-4)
    assert design.nominal_alpha[-1] == pytest.approx(two.nominal_alpha[-1] / 2, rel=1e-3)


def test_evaluate_look_decisions() -> None:
    design = sequential_boundaries(EQUAL4, spending="obf", futility=FutilityPlan())
    assert design.futility is not None
    r = evaluate_look(design, 1, 4.5)
    assert (r.decision, r.direction) == (Decision.EFFICACY, 1)
    assert r.alpha_spent == pytest.approx(design.cumulative_alpha[0])
    assert r.nominal_alpha == pytest.approx(2 * stats.norm.sf(design.efficacy[0]))
    assert evaluate_look(design, 2, -3.5).direction == -1
    assert evaluate_look(design, 2, design.futility[1] - 0.01).decision is Decision.FUTILITY
    assert evaluate_look(design, 2, design.futility[1] + 0.01).decision is Decision.CONTINUE
    assert evaluate_look(design, 4, 2.0).decision is Decision.FUTILITY  # b_K = c_K
    plain = sequential_boundaries(EQUAL4)
    assert evaluate_look(plain, 4, 1.9).decision is Decision.NOT_SIGNIFICANT
    assert evaluate_look(plain, 3, 0.0).decision is Decision.CONTINUE
    assert evaluate_look(plain, 4, 1.9).p_nominal == pytest.approx(2 * stats.norm.sf(1.9))


def test_update_design_keeps_past_boundaries_and_spends_all_at_final() -> None:
    planned = sequential_boundaries(EQUAL4, spending="obf")
    moved = update_design(planned, [0.25, 0.6])
    assert moved.information_fractions == (0.25, 0.6, 0.75, 1.0)
    assert moved.efficacy[0] == pytest.approx(planned.efficacy[0], abs=1e-12)
    skipped = update_design(planned, [0.5, 0.9], final=True)
    assert skipped.n_looks == 2
    assert skipped.cumulative_alpha[-1] == pytest.approx(0.05, abs=1e-9)
    with pytest.raises(ValueError, match="cannot be re-planned"):
        update_design(sequential_boundaries(EQUAL4, spending="classic_obf"), [0.3])


def test_evaluate_look_at_the_actual_information_fraction() -> None:
    planned = sequential_boundaries(EQUAL4, spending="obf")
    late = evaluate_look(planned, 2, 2.5, information_fraction=0.6)
    assert late.information_fraction == 0.6
    assert late.efficacy_boundary == pytest.approx(update_design(planned, [0.25, 0.6]).efficacy[1])
    assert late.alpha_spent == pytest.approx(2 * spending_function("obf", 0.6, 0.025), abs=1e-9)
    # a final look that under-runs the planned information still spends all of alpha
    short = evaluate_look(planned, 4, 2.0, information_fraction=0.9)
    assert short.alpha_spent == pytest.approx(0.05, abs=1e-9)
    assert short.efficacy_boundary < planned.efficacy[3]
    # reaching full information early makes that look the final one
    early = evaluate_look(planned, 3, 1.0, information_fraction=1.0)
    assert early.decision is Decision.NOT_SIGNIFICANT
    with pytest.raises(ValueError, match="cannot be re-planned"):
        evaluate_look(sequential_boundaries(EQUAL4, spending="classic_obf"), 2, 1.0, 0.55)


def test_repeated_confidence_intervals_cover_simultaneously() -> None:
    design = sequential_boundaries(EQUAL4, spending="obf")
    theta = 1.3  # effect in units of the final standard error
    z = brownian_z(EQUAL4, 20_000, theta, seed=4)
    se = 1.0 / np.sqrt(EQUAL4)  # se of the estimate at each look, final se = 1
    estimates = z * se
    covered = np.ones(z.shape[0], dtype=bool)
    for k in range(4):
        lo, hi = repeated_confidence_interval(design, k + 1, 0.0, float(se[k]))
        covered &= (estimates[:, k] + lo <= theta) & (theta <= estimates[:, k] + hi)
    assert covered.mean() == pytest.approx(0.95, abs=0.006)


@settings(max_examples=15, deadline=None)
@given(
    st.lists(st.floats(0.05, 1.0), min_size=1, max_size=8, unique=True),
    st.sampled_from(["obf", "pocock", "hsd", "power", "classic_pocock"]),
    st.sampled_from([1, 2]),
)
def test_any_look_schedule_spends_exactly_alpha(
    fractions: list[float], spending: str, sides: int
) -> None:
    t = sorted(fractions)
    if any(b - a < 1e-3 for a, b in zip(t, t[1:], strict=False)):
        return
    design = sequential_boundaries(t, alpha=0.05, spending=spending, sides=sides)  # type: ignore[arg-type]
    assert design.cumulative_alpha[-1] == pytest.approx(0.05, abs=1e-7)
    assert all(np.diff(design.cumulative_alpha) >= -1e-12)
    assert all(math.isfinite(c) or c == math.inf for c in design.efficacy)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"information_fractions": []}, "at least one look"),
        ({"information_fractions": [0.5, 0.5]}, "increase strictly"),
        ({"information_fractions": [0.0, 1.0]}, r"\[0\] must be finite and > 0"),
        ({"information_fractions": [0.5, 1.0], "alpha": 0.7}, "alpha must be"),
        ({"information_fractions": [0.5, 1.0], "sides": 3}, "sides must be"),
        ({"information_fractions": [0.5, 1.0], "spending": "magic"}, "unknown spending"),
        (
            {"information_fractions": [0.5, 1.0], "spending": "obf", "spending_parameter": 2.0},
            "spending_parameter applies",
        ),
    ],
)
def test_bad_design_input(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sequential_boundaries(**kwargs)  # type: ignore[arg-type]


def test_bad_look_input() -> None:
    design = sequential_boundaries(EQUAL4)
    with pytest.raises(ValueError, match="look must be between 1 and 4"):
        evaluate_look(design, 5, 1.0)
    with pytest.raises(ValueError, match="z must be finite"):
        evaluate_look(design, 1, math.nan)
    with pytest.raises(ValueError, match="one boundary per look"):
        crossing_probabilities(EQUAL4, [2.0] * 3)
    with pytest.raises(ValueError, match="beta must be"):
        FutilityPlan(beta=0.7)


def test_futility_with_very_early_looks_whose_efficacy_bound_is_infinite():
    """Early OBF-type looks spend ~no alpha (bound = inf); the futility search must still converge."""
    design = sequential_boundaries(
        [0.0419, 0.0635, 0.3, 0.6, 1.0], spending="obf", futility=FutilityPlan(beta=0.2)
    )
    assert math.isinf(design.efficacy[0]) and math.isinf(design.efficacy[1])
    assert all(math.isfinite(b) for b in design.futility)
    assert design.futility[-1] == pytest.approx(design.efficacy[-1])
