"""Analysis of one look: validity, primary (CUPED), secondaries, guardrails, cohorts,
sequential status; checked against scipy on the unit-level arrays and against the lake."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import date, timedelta

import numpy as np
import pyarrow.compute as pc
import pytest
from scipy import stats as sps

from tripwire.experiments.analysis import (
    AnalysisError,
    analyze,
    analyze_stats,
    compare,
    look_dates_until,
)
from tripwire.metrics.exposures import ExposureSummary
from tripwire.stats import MeanStats, RatioStats, Status
from tripwire.store.engine import connect_lake, events_table

from . import planted as P

LOOK = date(2026, 3, 20)


def _look(units: P.Units, spec=None, **kwargs):  # type: ignore[no-untyped-def]
    stats = P.unit_stats_of(units, cuped=bool(spec and spec.cuped), **kwargs)
    return analyze_stats(spec or P.spec(), stats, P.METRIC_TYPES, look_date=LOOK)


def test_compare_picks_the_test_from_the_statistics_and_the_spec() -> None:
    c, t = MeanStats.from_proportion(500, 50), MeanStats.from_proportion(500, 70)
    assert compare(c, t, test="two_proportion_z", alpha=0.05).method == "two_proportion_z"
    assert compare(c, t, test="welch", alpha=0.05).method == "welch_t"
    counts = MeanStats.from_values([0, 1, 2, 3])
    assert compare(counts, counts, test="two_proportion_z", alpha=0.05).method == "welch_t"
    r = RatioStats.from_values([1, 2, 0], [2, 3, 1])
    assert compare(r, r, test="delta_method", alpha=0.05).method.startswith("delta")
    with pytest.raises(AnalysisError, match="unit-level data"):
        compare(c, t, test="mann_whitney", alpha=0.05)
    with pytest.raises(AnalysisError, match="differ in kind"):
        compare(c, r, test="welch", alpha=0.05)


def test_primary_matches_scipy_welch_on_the_unit_values() -> None:
    units = P.simulate(3000, P.Planted.uniform(0.1), seed=3)
    look = _look(units)
    primary = look.primary_for("treatment")
    x_c, x_t = units.adds[units.arm == 0], units.adds[units.arm == 1]
    expected = sps.ttest_ind(x_t, x_c, equal_var=False)
    assert primary.comparison.method == "welch_t"
    assert float(primary.comparison.absolute.estimate) == pytest.approx(x_t.mean() - x_c.mean())
    assert float(primary.comparison.absolute.p_value) == pytest.approx(expected.pvalue, rel=1e-9)
    assert primary.z == pytest.approx(expected.statistic, rel=1e-9)
    assert primary.achievable_mde is not None and 0 < primary.achievable_mde < 1


def test_cuped_reduces_the_variance_of_the_primary() -> None:
    units = P.simulate(3000, P.Planted.uniform(0.0), seed=4)
    plain = _look(units).primary_for("treatment").comparison
    cuped = _look(units, P.spec(cuped={"pre_period": "7d"})).primary_for("treatment")
    assert cuped.cuped and cuped.comparison.method == "cuped_mean"
    assert float(cuped.comparison.variance_reduction) > 0.1
    assert float(cuped.comparison.absolute.se) < float(plain.absolute.se)


def test_cohorts_match_the_subsets_and_flag_heterogeneity() -> None:
    units = P.simulate(6000, P.Planted(adds={"en-US": 0.2, "de-DE": 0.2, "ja-JP": -0.4}), seed=5)
    look = _look(units)
    breakdown = next(b for b in look.cohorts if b.metric == "adds" and b.dimension == "locale")
    assert breakdown.values[0] == "en-US"  # largest first
    j = breakdown.values.index("ja-JP")
    ja = units.locale == P.LOCALES.index("ja-JP")
    x_c, x_t = units.adds[ja & (units.arm == 0)], units.adds[ja & (units.arm == 1)]
    rel = breakdown.comparison.relative
    assert float(rel.estimate[j]) == pytest.approx(x_t.mean() / x_c.mean() - 1, rel=1e-9)
    assert breakdown.units[j] == int(ja.sum())
    assert breakdown.analysis is not None
    assert breakdown.analysis.heterogeneity.p_value < 0.01
    pooled = breakdown.analysis.pooling
    # partial pooling moves every cohort toward the aggregate, never past it
    overall = pooled.overall
    for raw, shrunk in zip(pooled.raw, pooled.pooled, strict=True):
        assert abs(shrunk - overall) <= abs(raw - overall) + 1e-12


def test_guardrails_cover_the_aggregate_and_every_cohort_value() -> None:
    units = P.simulate(8000, P.Planted(adds={"en-US": 0.1, "de-DE": 0.1, "ja-JP": -0.5}), seed=6)
    family = _look(units).guardrails_for("treatment")
    names = [c.name for c in family.checks]
    assert names == [
        "errored",
        "adds_by_locale",
        "adds_by_locale [locale=en-US]",
        "adds_by_locale [locale=de-DE]",
        "adds_by_locale [locale=ja-JP]",
    ]
    ja = next(c for c in family.checks if c.value == "ja-JP")
    assert ja.breached and not ja.passed and ja.dimension == "locale"
    assert [c.name for c in family.breached] == ["adds_by_locale [locale=ja-JP]"]
    assert all(c.level == 0.05 for c in family.checks)  # intersection-union: unadjusted


def test_bonferroni_rule_lowers_every_level() -> None:
    units = P.simulate(2000, P.Planted.uniform(0.0), seed=7)
    family = _look(units, P.spec(guardrail_rule="bonferroni")).guardrails_for("treatment")
    assert all(c.level == pytest.approx(0.05 / len(family.checks)) for c in family.checks)


def test_secondaries_are_holm_adjusted() -> None:
    units = P.simulate(2000, P.Planted.uniform(0.05), seed=8)
    look = _look(units, P.spec(secondary=["errored", "adds"], guardrails=[]))
    raw = sorted(float(r.comparison.absolute.p_value) for r in look.secondary)
    adjusted = sorted(r.adjusted_p_value for r in look.secondary)
    assert adjusted[0] == pytest.approx(min(1.0, 2 * raw[0]))
    assert all(a >= r for a, r in zip(adjusted, raw, strict=True))


def test_sample_ratio_mismatch_is_a_validity_problem() -> None:
    units = P.simulate(4000, P.Planted(treatment_share=0.56), seed=9)
    look = _look(units)
    assert look.validity.srm.mismatch
    assert any("sample-ratio mismatch" in p for p in look.validity.problems)


def test_multi_arm_units_beyond_two_percent_are_a_problem_and_counted() -> None:
    units = P.simulate(2000, P.Planted(), seed=10)
    ok = _look(units, multi_arm=10)
    assert ok.validity.ok and ok.validity.multi_arm_units == 10
    broken = _look(units, multi_arm=60)
    assert any("several arms" in p for p in broken.validity.problems)


def test_unknown_and_empty_arms_are_problems() -> None:
    units = P.simulate(1000, P.Planted(), seed=11)
    stats = P.unit_stats_of(units)
    odd = replace(
        stats,
        exposures=ExposureSummary(
            "planted", {"control": 500, "treatment": 480, "typo": 20}, 0, None, None
        ),
    )
    look = analyze_stats(P.spec(), odd, P.METRIC_TYPES, look_date=LOOK)
    assert any("typo" in p for p in look.validity.problems)
    control_only = stats.table.filter(pc.equal(stats.table["arm"], "control"))
    empty = replace(
        stats,
        table=control_only,
        exposures=ExposureSummary("planted", {"control": 500}, 0, None, None),
    )
    look = analyze_stats(P.spec(), empty, P.METRIC_TYPES, look_date=LOOK)
    assert any("no units in arm(s) treatment" in p for p in look.validity.problems)
    assert look.primary[0].comparison.status == Status.INSUFFICIENT_DATA


def test_no_exposures_is_an_analysis_error() -> None:
    units = P.simulate(100, P.Planted(), seed=12)
    stats = replace(P.unit_stats_of(units), exposures=ExposureSummary("planted", {}, 0, None, None))
    with pytest.raises(AnalysisError, match="no exposures"):
        analyze_stats(P.spec(), stats, P.METRIC_TYPES, look_date=LOOK)


def test_information_fraction_is_observed_over_maximum_information() -> None:
    units = P.simulate(4000, P.Planted.uniform(0.0), seed=13)
    look = _look(units)
    status = look.sequential_for("treatment")
    primary = look.primary_for("treatment").comparison
    delta = 0.05 * float(primary.control.mean)
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)
    i_max = (z / delta) ** 2
    assert status.max_information == pytest.approx(i_max, rel=1e-6)
    assert status.information_fraction == pytest.approx(
        float(primary.absolute.se) ** -2 / i_max, rel=1e-6
    )
    assert status.final and status.plan == "fixed" and status.look == 1


def test_calendar_looks_decide_look_number_final_and_next_look() -> None:
    spec = P.spec(
        start="2026-03-09T00:00:00Z",
        sequential={"looks": ["2026-03-12", "2026-03-16", "2026-03-20"]},
    )
    units = P.simulate(4000, P.Planted.uniform(0.0), seed=14)
    stats = P.unit_stats_of(units)
    interim = analyze_stats(spec, stats, P.METRIC_TYPES, look_date=date(2026, 3, 16))
    status = interim.sequential_for("treatment")
    assert (status.look, status.n_looks, status.final) == (2, 3, False)
    assert status.next_look == date(2026, 3, 20)
    assert status.efficacy_boundary > 2.0  # stricter than 1.96 before the end
    final = analyze_stats(spec, stats, P.METRIC_TYPES, look_date=date(2026, 3, 20))
    assert final.sequential_for("treatment").final
    before = analyze_stats(spec, stats, P.METRIC_TYPES, look_date=date(2026, 3, 10))
    assert before.sequential_for("treatment").look == 0
    assert look_dates_until(spec, date(2026, 3, 17)) == [date(2026, 3, 12), date(2026, 3, 16)]


def test_missing_metric_type_is_an_error() -> None:
    units = P.simulate(100, P.Planted(), seed=15)
    with pytest.raises(AnalysisError, match="no metric type"):
        analyze_stats(P.spec(), P.unit_stats_of(units), {"adds": "mean"}, look_date=LOOK)


def test_the_lake_path_equals_the_sufficient_statistics_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    units = P.simulate(1500, P.Planted(adds={"en-US": 0.1, "de-DE": 0.0, "ja-JP": -0.2}), seed=16)
    last = P.write_lake(tmp_path, units)
    spec = P.spec(cuped={"pre_period": "7d"})
    backend = connect_lake(tmp_path)
    analysis = analyze(events_table(backend), spec, P.METRICS, at=last)
    assert len(analysis.looks) == 1
    lake = analysis.current
    direct = analyze_stats(spec, P.unit_stats_of(units, cuped=True), P.METRIC_TYPES, look_date=last)
    assert lake.validity.units_per_arm == direct.validity.units_per_arm
    for a, b in zip(
        lake.primary + lake.guardrail_metrics,
        direct.primary + direct.guardrail_metrics,
        strict=True,
    ):
        for field in ("estimate", "se", "p_value"):
            x, y = (
                float(getattr(a.comparison.relative, field)),
                float(getattr(b.comparison.relative, field)),
            )
            assert x == pytest.approx(y, rel=1e-9, abs=1e-12)
    assert [c.name for c in lake.guardrails[0].checks] == [
        c.name for c in direct.guardrails[0].checks
    ]
    # an earlier cut-off sees fewer units: the looks differ only by the data they see
    early = analyze(events_table(backend), spec, P.METRICS, at=last - timedelta(days=6))
    assert sum(early.current.validity.units_per_arm.values()) < 1500
    assert math.isfinite(early.current.primary[0].z)
    assert np.all(
        np.asarray(early.current.primary[0].comparison.status) != Status.INSUFFICIENT_DATA.value
    )
