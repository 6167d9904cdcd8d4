"""The mechanical decision: one verdict per look, the rule that produced it, in words.

The rules are applied in this order to each treatment arm; the first that fires decides
(every rule was pre-registered by the spec's thresholds, α, power and sequential plan):

1. ``validity`` → **INVALID**: the look has a validity problem (sample-ratio mismatch at
   p < 0.001, an arm with no units, exposures naming unknown arms, more than 2% of units in
   several arms). No effect estimate is trusted, so nothing else is looked at.
2. ``guardrail-breach`` → **VETO** at any look: a guardrail (aggregate or cohort) is
   *significantly worse* than its threshold (the one-sided test of harm at α). Stopping for
   demonstrated harm never raises the false-ship rate, so it is allowed at every look.
3. ``primary-harm`` → **VETO**: the primary crossed the efficacy boundary in the harmful
   direction.
4. ``primary-efficacy`` → **SHIP**: the primary crossed the efficacy boundary in the hoped-for
   direction and *every* guardrail check showed non-inferiority at its level (intersection–
   union: the chance of shipping while any guardrail is truly breached is at most α).
   At an interim look with guardrails not yet shown safe: **CONTINUE**.
5. ``guardrail-not-shown`` → **VETO** at the final look: a guardrail check did not show
   non-inferiority (shipping requires every one to).
6. ``futility`` → **STOP-FOR-FUTILITY**: the primary is below the non-binding futility
   boundary at an interim look.
7. ``final-not-significant`` → **INCONCLUSIVE** at the final look: with the MDE this look's
   standard error could actually detect.
8. ``within-boundaries`` → **CONTINUE** with the next look's date.

Overrides replace a verdict only with a reason, and are recorded with who and why
(:func:`override`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date
from enum import StrEnum
from typing import Any

from tripwire.experiments.analysis import (
    ExperimentAnalysis,
    GuardrailCheck,
    LookAnalysis,
    MetricResult,
    SequentialStatus,
)
from tripwire.experiments.registry import Registry, default_author
from tripwire.stats import Decision


class Verdict(StrEnum):
    """The six verdicts a look can produce."""

    SHIP = "SHIP"
    VETO = "VETO"
    CONTINUE = "CONTINUE"
    INCONCLUSIVE = "INCONCLUSIVE"
    STOP_FOR_FUTILITY = "STOP-FOR-FUTILITY"
    INVALID = "INVALID"


#: Rule identifiers, in the order they are applied, with what each means.
RULES: dict[str, str] = {
    "validity": "a validity check failed; no verdict on effects",
    "guardrail-breach": "a guardrail is significantly worse than its threshold",
    "primary-harm": "the primary crossed the efficacy boundary in the harmful direction",
    "primary-efficacy": "the primary crossed the efficacy boundary; every guardrail passed",
    "guardrails-pending": "the primary crossed its boundary; some guardrails not yet shown safe",
    "guardrail-not-shown": "final look: a guardrail did not show non-inferiority",
    "futility": "the primary fell below the futility boundary",
    "final-not-significant": "final look: the primary did not cross the boundary",
    "within-boundaries": "the primary is within the boundaries; wait for the next look",
}


@dataclass(frozen=True)
class ArmDecision:
    """The verdict for one treatment arm against control."""

    treatment: str
    verdict: Verdict
    rule: str
    explanation: str
    vetoes: tuple[str, ...] = ()
    breaches: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExperimentDecision:
    """A look's verdict: what, by which rule, why (in words, with the numbers)."""

    experiment: str
    look_date: date
    look: int
    final: bool
    verdict: Verdict
    rule: str
    explanation: str
    treatment: str | None
    vetoes: tuple[str, ...]
    breaches: tuple[str, ...]
    next_look: date | None
    achievable_mde: float | None
    arms: tuple[ArmDecision, ...]
    override_reason: str | None = None
    override_author: str | None = None
    mechanical_verdict: Verdict | None = None
    mechanical_rule: str | None = None

    @property
    def overridden(self) -> bool:
        return self.override_reason is not None

    def headline(self) -> str:
        """One line: verdict, rule, and the first line of the explanation."""
        first = self.explanation.splitlines()[0] if self.explanation else ""
        return f"{self.verdict.value} ({self.rule}): {first}"


# --------------------------------------------------------------------------- words


def pct(x: float, digits: int = 1) -> str:
    """A signed percentage, e.g. ``+5.2%``; ``n/a`` for NaN.

    >>> pct(0.0523), pct(-0.1), pct(float("nan"))
    ('+5.2%', '-10.0%', 'n/a')
    """
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x * 100:+.{digits}f}%"


def describe_effect(result: MetricResult) -> str:
    """``metric +5.2% [+1.0%, +9.4%], p = 0.012`` (relative effect with its CI)."""
    rel = result.comparison.relative
    return (
        f"{result.metric} {pct(float(rel.estimate))} [{pct(float(rel.ci_low))}, "
        f"{pct(float(rel.ci_high))}], p = {float(rel.p_value):.3g}"
    )


def describe_check(check: GuardrailCheck, alpha: float) -> str:
    """A guardrail check's numbers: effect, one-sided bound, threshold, level."""
    t = check.test
    scale = pct if t.scale == "relative" else (lambda v: f"{v:+.4g}")
    side = ">" if t.harm == "decrease" else "<"
    bound = f"{1 - alpha:.0%} one-sided bound {scale(t.bound)}"
    if check.breached:
        why = f"significantly worse than the threshold (p of harm = {1 - t.p_value:.3g})"
    elif not check.passed:
        why = f"not shown non-inferior (p = {t.p_value:.3g} > level {check.level:.3g})"
    else:
        why = f"non-inferior (p = {t.p_value:.3g} ≤ level {check.level:.3g})"
    return (
        f"{check.name}: {t.scale} effect {scale(t.estimate)} ({bound}; must be {side} "
        f"{scale(t.threshold)}): {why}"
    )


def describe_sequential(status: SequentialStatus) -> str:
    """``z = 2.4 vs boundary ±2.01 at look 3 of 3 (information 97%)``."""
    fut = (
        f", futility {status.futility_boundary:.2f}"
        if status.futility_boundary is not None and not status.final
        else ""
    )
    info = (
        f"information {status.information_fraction:.0%}"
        if math.isfinite(status.information_fraction)
        else "information unknown"
    )
    kind = "final look" if status.final else f"look {status.look} of {status.n_looks}"
    return f"z = {status.z:.2f} vs boundary ±{status.efficacy_boundary:.2f}{fut} at {kind} ({info})"


# --------------------------------------------------------------------------- the rules


def _arm(
    look: LookAnalysis, treatment: str, spec_mde: float, alpha: float, sign: int
) -> ArmDecision:
    primary = look.primary_for(treatment)
    status = look.sequential_for(treatment)
    family = look.guardrails_for(treatment)
    breaches = family.breached
    if breaches:
        lines = [describe_check(c, alpha) for c in breaches]
        return ArmDecision(
            treatment, Verdict.VETO, "guardrail-breach",
            f"guardrail breached ({treatment}): {', '.join(c.name for c in breaches)}\n"
            + "\n".join(lines),
            tuple(c.name for c in family.failed), tuple(c.name for c in breaches),
        )  # fmt: skip
    effect = describe_effect(primary)
    seq = describe_sequential(status)
    crossed = status.decision == Decision.EFFICACY
    if crossed and sign * status.z < 0:
        return ArmDecision(
            treatment, Verdict.VETO, "primary-harm",
            f"the primary moved the wrong way: {effect}; {seq}",
            (primary.metric,), (primary.metric,),
        )  # fmt: skip
    failed = family.failed
    if crossed:
        if not failed:
            n = len(family.checks)
            return ArmDecision(
                treatment, Verdict.SHIP, "primary-efficacy",
                f"{effect}; {seq}; all {n} guardrail check(s) shown non-inferior "
                f"({family.rule.replace('_', '-')})",
            )  # fmt: skip
        if not status.final:
            lines = [describe_check(c, alpha) for c in failed]
            return ArmDecision(
                treatment, Verdict.CONTINUE, "guardrails-pending",
                f"{effect}; {seq}; but guardrails not yet shown safe:\n" + "\n".join(lines),
            )  # fmt: skip
    if status.final and failed:
        lines = [describe_check(c, alpha) for c in failed]
        return ArmDecision(
            treatment, Verdict.VETO, "guardrail-not-shown",
            f"not shown non-inferior at the final look ({treatment}): "
            f"{', '.join(c.name for c in failed)}; shipping needs every guardrail check to pass "
            f"({family.rule.replace('_', '-')})\n" + "\n".join(lines),
            tuple(c.name for c in failed),
        )  # fmt: skip
    if status.decision == Decision.FUTILITY:
        return ArmDecision(
            treatment, Verdict.STOP_FOR_FUTILITY, "futility",
            f"{effect}; {seq}: below the futility boundary, the planned "
            f"{spec_mde:.1%} effect is unlikely to be reached",
        )  # fmt: skip
    if status.final:
        mde = primary.achievable_mde
        achieved = (
            f"; with this data the smallest effect detectable at the planned power was "
            f"{mde:.1%} (planned MDE {spec_mde:.1%})"
            if mde is not None
            else ""
        )
        return ArmDecision(
            treatment, Verdict.INCONCLUSIVE, "final-not-significant",
            f"{effect}; {seq}: not significant{achieved}",
        )  # fmt: skip
    when = f"; next look {status.next_look}" if status.next_look else ""
    if status.look == 0:
        return ArmDecision(
            treatment, Verdict.CONTINUE, "within-boundaries",
            f"{effect}; not yet at the first planned look ({seq}){when}",
        )  # fmt: skip
    return ArmDecision(treatment, Verdict.CONTINUE, "within-boundaries", f"{effect}; {seq}{when}")


def decide(
    look: LookAnalysis, *, mde: float, alpha: float, direction: str = "increase"
) -> ExperimentDecision:
    """The verdict of one look (see the module docstring for the rules, in order)."""
    statuses = {s.treatment: s for s in look.sequential}
    first = next(iter(statuses.values()))
    if not look.validity.ok:
        explanation = "\n".join(look.validity.problems)
        return ExperimentDecision(
            look.experiment, look.look_date, first.look, first.final, Verdict.INVALID,
            "validity", explanation, None, (), (), None, None, (),
        )  # fmt: skip
    sign = 1 if direction == "increase" else -1
    arms = [_arm(look, treatment, mde, alpha, sign) for treatment in look.treatments]
    chosen = _combine(look, arms)
    status = statuses[chosen.treatment]
    return ExperimentDecision(
        experiment=look.experiment,
        look_date=look.look_date,
        look=status.look,
        final=status.final,
        verdict=chosen.verdict,
        rule=chosen.rule,
        explanation=chosen.explanation,
        treatment=chosen.treatment,
        vetoes=chosen.vetoes,
        breaches=chosen.breaches,
        next_look=status.next_look if chosen.verdict == Verdict.CONTINUE else None,
        achievable_mde=look.primary_for(chosen.treatment).achievable_mde,
        arms=tuple(arms),
    )


_PRECEDENCE = (
    Verdict.SHIP,
    Verdict.CONTINUE,
    Verdict.VETO,
    Verdict.STOP_FOR_FUTILITY,
    Verdict.INCONCLUSIVE,
)


def _combine(look: LookAnalysis, arms: list[ArmDecision]) -> ArmDecision:
    """Several treatment arms: ship the best shippable arm, else the most pressing verdict."""
    ships = [a for a in arms if a.verdict == Verdict.SHIP]
    if ships:
        return max(
            ships, key=lambda a: float(look.primary_for(a.treatment).comparison.relative.estimate)
        )
    for verdict in _PRECEDENCE:
        for arm in arms:
            if arm.verdict == verdict:
                return arm
    return arms[0]


def decide_analysis(analysis: ExperimentAnalysis) -> ExperimentDecision:
    """The verdict of the current (latest) look of an analysis."""
    spec = analysis.spec
    return decide(
        analysis.current, mde=spec.primary.mde, alpha=spec.alpha, direction=spec.primary.direction
    )


# --------------------------------------------------------------------------- overrides and the log


def override(
    decision: ExperimentDecision, verdict: str, reason: str, *, author: str | None = None
) -> ExperimentDecision:
    """A human decision replacing the mechanical one: only with a non-empty reason.

    >>> from datetime import date
    >>> d = ExperimentDecision("x", date(2026, 1, 1), 1, True, Verdict.INCONCLUSIVE,
    ...     "final-not-significant", "", "treatment", (), (), None, None, ())
    >>> override(d, "ship", "strategic launch; accepted risk", author="ana").verdict.value
    'SHIP'
    >>> override(d, "ship", "  ")
    Traceback (most recent call last):
    ...
    ValueError: an override needs a reason (--override "why"); none given
    """
    if not reason or not reason.strip():
        raise ValueError('an override needs a reason (--override "why"); none given')
    value = Verdict(str(verdict).strip().upper().replace("_", "-"))
    return replace(
        decision,
        verdict=value,
        rule="override",
        override_reason=reason.strip(),
        override_author=author or default_author(),
        mechanical_verdict=decision.mechanical_verdict or decision.verdict,
        mechanical_rule=decision.mechanical_rule or decision.rule,
    )


def look_summary(look: LookAnalysis) -> dict[str, Any]:
    """The numbers a look saw, for the decision log (JSON-serialisable)."""
    out: dict[str, Any] = {
        "look_date": str(look.look_date),
        "units": look.validity.units_per_arm,
        "multi_arm_units": look.validity.multi_arm_units,
        "srm_p": _finite(look.validity.srm.p_value),
        "problems": list(look.validity.problems),
    }
    for r in look.primary:
        status = look.sequential_for(r.treatment)
        rel = r.comparison.relative
        out[r.treatment] = {
            "metric": r.metric,
            "relative": _finite(float(rel.estimate)),
            "ci": [_finite(float(rel.ci_low)), _finite(float(rel.ci_high))],
            "p_value": _finite(float(r.comparison.absolute.p_value)),
            "z": _finite(status.z),
            "information_fraction": _finite(status.information_fraction),
            "boundary": _finite(status.efficacy_boundary),
            "look": status.look,
        }
    return out


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def record(
    registry: Registry,
    analysis: ExperimentAnalysis,
    decision: ExperimentDecision,
    *,
    author: str | None = None,
) -> int:
    """Write the current look and its verdict (and an override, if any) to the decision
    log; returns the verdict's id. Looks already recorded for the same date are not
    duplicated."""
    look = analysis.current
    recorded = {(x.look, x.data_until.date()) for x in registry.looks(analysis.spec.name)}
    look_id = None
    number = max(decision.look, 1)
    if (number, look.cutoff.date()) not in recorded:
        look_id = registry.record_look(
            analysis.spec.name, number, look.cutoff, analysis.spec_hash, look_summary(look),
            author=author,
        ).id  # fmt: skip
    mechanical = decision.mechanical_verdict or decision.verdict
    details: Mapping[str, Any] = {
        "explanation": decision.explanation,
        "vetoes": list(decision.vetoes),
        "breaches": list(decision.breaches),
        "look": decision.look,
        "final": decision.final,
        "next_look": str(decision.next_look) if decision.next_look else None,
        "achievable_mde": decision.achievable_mde,
    }
    rule = decision.mechanical_rule or decision.rule
    verdict = registry.record_verdict(
        analysis.spec.name, mechanical.value, rule, look_id=look_id, details=details, author=author
    )
    if decision.overridden:
        registry.override(
            analysis.spec.name, decision.verdict.value, decision.override_reason or "",
            verdict_id=verdict.id, author=decision.override_author or author,
        )  # fmt: skip
    return verdict.id
