"""The mechanical decision: each rule fires on the situation it is for, with its numbers,
and overrides need a reason and land in the decision log."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from tripwire.experiments.analysis import ExperimentAnalysis, LookAnalysis, analyze_stats
from tripwire.experiments.decision import (
    RULES,
    Verdict,
    decide,
    decide_analysis,
    override,
    record,
)
from tripwire.experiments.registry import Registry
from tripwire.store.workspace import init_workspace

from . import planted as P

FINAL = date(2026, 3, 20)
CALENDAR = {
    "start": "2026-03-09T00:00:00Z",
    "sequential": {"looks": ["2026-03-12", "2026-03-16", "2026-03-20"]},
}
SAFE_GUARDRAILS = [
    {"metric": "errored", "harm": "increase", "threshold": "25%"},
    {"metric": "adds", "name": "adds_by_locale", "harm": "decrease", "threshold": "-5%",
     "cohorts": ["locale"]},
]  # fmt: skip


def _look(n: int, planted: Any, seed: int, day: date = FINAL, **spec: Any) -> LookAnalysis:
    s = P.spec(**spec)
    return analyze_stats(
        s, P.unit_stats_of(P.simulate(n, planted, seed)), P.METRIC_TYPES, look_date=day
    )


def _decide(look: LookAnalysis, mde: float = 0.05) -> Any:
    return decide(look, mde=mde, alpha=0.05)


def test_sample_ratio_mismatch_is_invalid_whatever_the_effects() -> None:
    look = _look(6000, P.Planted(P.Planted.uniform(0.3).adds, treatment_share=0.55), seed=1)
    d = _decide(look)
    assert (d.verdict, d.rule) == (Verdict.INVALID, "validity")
    assert "sample-ratio mismatch" in d.explanation and "p = " in d.explanation


def test_a_breached_cohort_guardrail_vetoes_although_the_aggregate_is_positive() -> None:
    planted = P.Planted(adds={"en-US": 0.25, "de-DE": 0.25, "ja-JP": -0.4})
    look = _look(12_000, planted, seed=2, guardrails=SAFE_GUARDRAILS)
    assert float(look.primary_for("treatment").comparison.relative.estimate) > 0
    d = _decide(look)
    assert (d.verdict, d.rule) == (Verdict.VETO, "guardrail-breach")
    assert d.breaches == ("adds_by_locale [locale=ja-JP]",)
    assert "must be > -5.0%" in d.explanation and "ja-JP" in d.headline()


def test_a_harmful_primary_is_vetoed() -> None:
    d = _decide(_look(8000, P.Planted.uniform(-0.2), seed=3, guardrails=[]))
    assert (d.verdict, d.rule) == (Verdict.VETO, "primary-harm")
    assert "wrong way" in d.explanation


def test_a_significant_primary_with_safe_guardrails_ships() -> None:
    d = _decide(_look(12_000, P.Planted.uniform(0.2), seed=4, guardrails=SAFE_GUARDRAILS))
    assert (d.verdict, d.rule) == (Verdict.SHIP, "primary-efficacy")
    assert "5 guardrail check(s) shown non-inferior" in d.explanation
    assert d.treatment == "treatment" and d.next_look is None


def test_interim_win_with_unproven_guardrails_continues_and_the_final_look_vetoes() -> None:
    strict = [{"metric": "errored", "harm": "increase", "threshold": "2%"}]
    interim = _look(8000, P.Planted.uniform(0.4), seed=5, day=date(2026, 3, 16),
                    guardrails=strict, **CALENDAR)  # fmt: skip
    d = _decide(interim)
    assert (d.verdict, d.rule) == (Verdict.CONTINUE, "guardrails-pending")
    assert d.next_look == date(2026, 3, 20)
    final = _look(8000, P.Planted.uniform(0.4), seed=5, guardrails=strict, **CALENDAR)
    d = _decide(final)
    assert (d.verdict, d.rule) == (Verdict.VETO, "guardrail-not-shown")
    assert d.vetoes == ("errored",) and d.breaches == ()
    assert "not shown non-inferior" in d.explanation


def test_below_the_futility_boundary_stops_for_futility() -> None:
    plan = {"information_fractions": [0.5, 1.0], "futility": {"beta": 0.2}}
    look = _look(14_000, P.Planted.uniform(-0.03), seed=6, guardrails=[], sequential=plan)
    status = look.sequential_for("treatment")
    assert status.look == 1 and not status.final and 0.5 <= status.information_fraction < 1
    d = _decide(look)
    assert (d.verdict, d.rule) == (Verdict.STOP_FOR_FUTILITY, "futility")
    assert "futility" in d.explanation


def test_final_look_without_significance_is_inconclusive_with_the_achievable_mde() -> None:
    d = _decide(_look(3000, P.Planted.uniform(0.0), seed=7, guardrails=[]))
    assert (d.verdict, d.rule) == (Verdict.INCONCLUSIVE, "final-not-significant")
    assert d.achievable_mde is not None and d.achievable_mde > 0.05
    assert f"{d.achievable_mde:.1%}" in d.explanation


def test_interim_within_boundaries_continues_with_the_next_look_date() -> None:
    d = _decide(_look(3000, P.Planted.uniform(0.0), seed=8, day=date(2026, 3, 12),
                      guardrails=[], **CALENDAR))  # fmt: skip
    assert (d.verdict, d.rule) == (Verdict.CONTINUE, "within-boundaries")
    assert d.next_look == date(2026, 3, 16) and "next look 2026-03-16" in d.explanation


def test_a_decrease_primary_ships_when_it_decreases() -> None:
    d = _decide(_look(8000, P.Planted.uniform(-0.2), seed=9, guardrails=[],
                      primary={"metric": "adds", "mde": "5%", "direction": "decrease"}))  # fmt: skip
    assert d.verdict == Verdict.VETO  # decide() was told "increase"
    look = _look(8000, P.Planted.uniform(-0.2), seed=9, guardrails=[],
                 primary={"metric": "adds", "mde": "5%", "direction": "decrease"})  # fmt: skip
    assert decide(look, mde=0.05, alpha=0.05, direction="decrease").verdict == Verdict.SHIP


def test_every_rule_is_documented() -> None:
    assert set(RULES) >= {
        "validity", "guardrail-breach", "primary-harm", "primary-efficacy", "guardrails-pending",
        "guardrail-not-shown", "futility", "final-not-significant", "within-boundaries",
    }  # fmt: skip


def test_override_needs_a_reason_and_keeps_the_mechanical_verdict() -> None:
    d = _decide(_look(3000, P.Planted.uniform(0.0), seed=10, guardrails=[]))
    with pytest.raises(ValueError, match="needs a reason"):
        override(d, "SHIP", "")
    with pytest.raises(ValueError):
        override(d, "LAUNCH", "why not")
    o = override(d, "ship", "strategic launch, risk accepted by the VP", author="ana")
    assert o.verdict == Verdict.SHIP and o.rule == "override" and o.overridden
    assert o.mechanical_verdict == Verdict.INCONCLUSIVE
    assert o.mechanical_rule == "final-not-significant" and o.override_author == "ana"


def test_record_writes_the_look_the_verdict_and_the_override(tmp_path: Path) -> None:
    spec = P.spec()
    look = _look(3000, P.Planted.uniform(0.0), seed=11, guardrails=[])
    analysis = ExperimentAnalysis(spec, "ab" * 32, (look,))
    decision = override(decide_analysis(analysis), "SHIP", "board decision", author="ana")
    with Registry.open(init_workspace(tmp_path)) as registry:
        record(registry, analysis, decision, author="bot")
        record(registry, analysis, decision, author="bot")  # same look: not duplicated
        looks = registry.looks("planted")
        verdicts = registry.verdicts("planted")
        overrides = registry.overrides("planted")
        final = registry.final_decision("planted")
        kinds = [d.kind for d in registry.decisions("planted")]
    assert len(looks) == 1 and looks[0].summary["treatment"]["metric"] == "adds"
    assert verdicts[0].verdict == "INCONCLUSIVE" and verdicts[0].rule == "final-not-significant"
    assert overrides[0].to_verdict == "SHIP" and overrides[0].author == "ana"
    assert overrides[0].reason == "board decision"
    assert final == "SHIP"
    assert kinds[:3] == ["look", "verdict", "override"]
