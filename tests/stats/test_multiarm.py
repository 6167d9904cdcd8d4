"""Multi-arm against control: reference parity (spotify-confidence / statsmodels) and behaviour."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from tripwire.stats import MeanStats, compare_to_control, two_proportion_z_test, welch_t_test


@pytest.fixture(scope="module")
def three_arm(reference: dict) -> tuple[dict, dict]:
    data = reference
    stats_ = {
        r["arm"]: MeanStats.from_proportion(r["n"], r["sum_converted"])
        for r in data["fixtures"]["three_arm"]["sufficient_stats"]
    }
    return stats_, data["results"]["three_arm"]


unpooled_z = functools.partial(two_proportion_z_test, pooled=False)


@pytest.mark.parametrize("adjustment", ["holm", "bonferroni"])
def test_matches_reference_adjusted_p_values(three_arm, adjustment):
    arms, ref = three_arm
    result = compare_to_control(
        arms["control"],
        {k: arms[k] for k in ("treatment_a", "treatment_b")},
        test=unpooled_z,
        adjustment=adjustment,
    )
    for name in ("treatment_a", "treatment_b"):
        own = ref["scipy_statsmodels"][f"control_vs_{name}"]["absolute"]
        assert result[name].result.absolute.p_value == pytest.approx(own["p_value"], rel=1e-10)
        assert result[name].adjusted_p_value == pytest.approx(
            own["adjusted_p"][adjustment], rel=1e-10
        )
        spotify = ref["spotify-confidence"][f"ztest_multiple_difference_{adjustment}"]["absolute"][
            f"control_vs_{name}"
        ]
        assert result[name].adjusted_p_value == pytest.approx(spotify["adjusted_p"], rel=1e-10)
        if adjustment == "bonferroni":
            np.testing.assert_allclose(
                (result[name].adjusted_ci_low, result[name].adjusted_ci_high),
                own["bonferroni_ci"],
                rtol=1e-10,
            )
        else:
            assert np.isnan(result[name].adjusted_ci_low)  # Holm has no simultaneous intervals


def test_dunnett_is_between_unadjusted_and_bonferroni(three_arm):
    arms, _ = three_arm
    treatments = {k: arms[k] for k in ("treatment_a", "treatment_b")}
    runs = {
        adj: compare_to_control(arms["control"], treatments, test=unpooled_z, adjustment=adj)
        for adj in ("none", "dunnett", "bonferroni")
    }
    for name in treatments:
        none, dunnett, bonf = (
            runs[a][name].adjusted_p_value for a in ("none", "dunnett", "bonferroni")
        )
        assert none < dunnett < bonf
        width = runs["dunnett"][name].adjusted_ci_high - runs["dunnett"][name].adjusted_ci_low
        bonf_width = (
            runs["bonferroni"][name].adjusted_ci_high - runs["bonferroni"][name].adjusted_ci_low
        )
        assert width < bonf_width


def test_welch_default_and_lookup():
    rng = np.random.default_rng(1)
    control = MeanStats.from_values(rng.normal(0, 1, 300))
    arms = {
        "a": MeanStats.from_values(rng.normal(0.4, 1, 300)),
        "b": MeanStats.from_values(rng.normal(0, 1, 300)),
    }
    result = compare_to_control(control, arms, test=welch_t_test, adjustment="dunnett")
    assert result["a"].significant and not result["b"].significant
    with pytest.raises(KeyError, match="no arm named 'c'"):
        result["c"]


def test_bad_arguments():
    control = MeanStats.from_values([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at least one treatment"):
        compare_to_control(control, {})
    with pytest.raises(ValueError, match="unknown adjustment"):
        compare_to_control(control, {"a": control}, adjustment="sidak")  # type: ignore[arg-type]
