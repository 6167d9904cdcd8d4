"""Experiment analysis: everything one look of an experiment shows, from sufficient statistics.

For each look (a date of the spec's sequential plan, or the analysis date), in this order:

1. **Validity first.** Units per arm against the planned split (sample-ratio mismatch,
   chi-square at p < 0.001), units exposed to several arms (excluded from every comparison,
   counted), exposures naming arms the spec does not have, arms with no units. Any of these
   is a *problem*; a look with problems cannot produce a verdict (see
   :mod:`tripwire.experiments.decision`) and says why.
2. **Primary metric** of every treatment arm against control, with CUPED when the spec
   configures it (each metric's own pre-period value as covariate).
3. **Secondary metrics**, with Holm-adjusted p-values across the secondaries (declaring
   *any* secondary a win is a multiple claim).
4. **Guardrails**: a one-sided non-inferiority test per guardrail, and per cohort value for
   cohort guardrails, decided as a family under the spec's rule (intersection–union by
   default: each at level α, Berger 1982); every check carries the level it had to reach.
5. **Cohorts**: every analysed metric by every cohort dimension, raw and partially pooled
   toward the aggregate, Cochran's Q heterogeneity, and the Simpson's-paradox flag.
6. **Sequential status** of the primary at the *actual* information fraction
   I_k / I_max, where I_k = 1/se_k² is the observed information and
   I_max = (θ_R / δ)² the information at which the plan has the requested power for the
   MDE δ (θ_R: the drift of the design that gives that power, ``drift_for_power``; Jennison &
   Turnbull 2000, ch. 7, "information-based monitoring").

Every formula comes from :mod:`tripwire.stats`; every number from the engine comes through
:func:`tripwire.metrics.unit_stats.unit_stats` (per arm × cohort sums, never unit rows).
:func:`analyze_stats` is the pure part (a :class:`~tripwire.metrics.unit_stats.UnitStats`
in, a :class:`LookAnalysis` out); :func:`analyze` runs it at each look against the lake.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

import numpy as np

from tripwire.experiments.planner import information_fractions
from tripwire.experiments.spec import ExperimentSpec, Guardrail
from tripwire.metrics.exposures import ExposureSource, ExposureSummary
from tripwire.metrics.incremental import IncrementalSpec, IncrementalStats
from tripwire.metrics.unit_stats import ALL, UnitStats, to_stats, unit_stats
from tripwire.stats import (
    CohortAnalysis,
    ComparisonResult,
    CupedMeanStats,
    CupedRatioStats,
    Decision,
    GuardrailVerdict,
    MeanStats,
    NonInferiorityResult,
    RatioStats,
    SampleRatioResult,
    SequentialDesign,
    Status,
    adjust_p_values,
    analyze_cohorts,
    cuped_mean_test,
    cuped_ratio_test,
    delta_method_ratio_test,
    drift_for_power,
    evaluate_guardrails,
    evaluate_look,
    mde_from_variance,
    non_inferiority_test,
    sample_ratio_mismatch,
    sequential_boundaries,
    two_proportion_z_test,
    update_design,
    welch_t_test,
)
from tripwire.stats.sequential import FutilityPlan

ArmStats = MeanStats | RatioStats | CupedMeanStats | CupedRatioStats
Role = Literal["primary", "secondary", "guardrail"]

#: Share of exposed units seen in several arms above which exposure logging is called broken
#: (a few units legitimately switch: shared devices, logged-out then logged-in sessions).
MAX_MULTI_ARM_SHARE = 0.02
#: Tests that need unit-level data; the analysis works from sufficient statistics only.
_UNIT_LEVEL_TESTS = ("bootstrap_quantile", "mann_whitney")


class AnalysisError(ValueError):
    """The experiment cannot be analysed as asked (no exposures, unsupported test, …)."""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class MetricResult:
    """One metric of one treatment arm against control.

    ``adjusted_p_value`` is Holm-adjusted across the secondaries (the raw p-value for the
    primary and guardrails). ``achievable_mde`` (relative, primary only) is the smallest
    effect this look's standard error detects with the spec's power at its α.
    """

    metric: str
    role: Role
    metric_type: str
    treatment: str
    comparison: ComparisonResult
    cuped: bool
    adjusted_p_value: float
    achievable_mde: float | None = None

    @property
    def z(self) -> float:
        """Absolute effect over its standard error (NaN without one)."""
        effect = self.comparison.absolute
        se = float(effect.se)
        return float(effect.estimate) / se if se > 0 and math.isfinite(se) else math.nan


@dataclass(frozen=True)
class CohortBreakdown:
    """One metric × treatment × cohort dimension: per-value effects (a vectorised
    comparison, one element per value), their units, and the heterogeneity analysis
    (``None`` with a ``note`` when fewer than two cohorts have data)."""

    metric: str
    role: Role
    treatment: str
    dimension: str
    values: tuple[str, ...]
    units: tuple[int, ...]
    comparison: ComparisonResult
    analysis: CohortAnalysis | None
    note: str = ""


@dataclass(frozen=True)
class GuardrailCheck:
    """One non-inferiority check: a guardrail on the aggregate or on one cohort value.

    ``passed``: non-inferiority shown at ``level`` (the level the family rule assigns);
    ``breached``: the effect is *significantly worse* than the threshold (the opposite
    one-sided test at α), i.e. harm is demonstrated, not merely safety undemonstrated.
    """

    name: str
    guardrail: str
    metric: str
    treatment: str
    dimension: str | None
    value: str | None
    test: NonInferiorityResult
    level: float
    passed: bool
    breached: bool


@dataclass(frozen=True)
class GuardrailFamily:
    """All guardrail checks of one treatment arm and the family verdict under the rule."""

    treatment: str
    rule: str
    alpha: float
    checks: tuple[GuardrailCheck, ...]
    verdict: GuardrailVerdict

    @property
    def failed(self) -> tuple[GuardrailCheck, ...]:
        return tuple(c for c in self.checks if not c.passed)

    @property
    def breached(self) -> tuple[GuardrailCheck, ...]:
        return tuple(c for c in self.checks if c.breached)

    @property
    def passed(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class Validity:
    """Checks that gate a verdict. ``problems`` is empty when the look can be trusted."""

    units_per_arm: dict[str, int]
    planned_weights: dict[str, float]
    srm: SampleRatioResult
    multi_arm_units: int
    unknown_arms: dict[str, int]
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def multi_arm_share(self) -> float:
        total = sum(self.units_per_arm.values()) + self.multi_arm_units
        return self.multi_arm_units / total if total else 0.0


@dataclass(frozen=True)
class SequentialStatus:
    """Where the primary stands against the plan's boundaries at this look.

    ``look`` is 1-based (0: before the first planned look, no decision possible);
    ``information_fraction`` is the actual one (observed / maximum information);
    ``decision`` is the stats engine's verdict of the look for the primary alone.
    """

    treatment: str
    plan: Literal["fixed", "group_sequential"]
    look: int
    n_looks: int
    information_fraction: float
    max_information: float
    z: float
    efficacy_boundary: float
    futility_boundary: float | None
    nominal_alpha: float
    alpha_spent: float
    decision: Decision
    final: bool
    next_look: date | None
    design: SequentialDesign


@dataclass(frozen=True)
class LookAnalysis:
    """Everything one look shows, for every treatment arm against control."""

    experiment: str
    spec_hash: str
    look_date: date
    cutoff: datetime
    exposures: ExposureSummary
    validity: Validity
    control: str
    treatments: tuple[str, ...]
    primary: tuple[MetricResult, ...]
    secondary: tuple[MetricResult, ...]
    guardrails: tuple[GuardrailFamily, ...]
    guardrail_metrics: tuple[MetricResult, ...]
    cohorts: tuple[CohortBreakdown, ...]
    sequential: tuple[SequentialStatus, ...]

    def primary_for(self, treatment: str) -> MetricResult:
        return next(r for r in self.primary if r.treatment == treatment)

    def guardrails_for(self, treatment: str) -> GuardrailFamily:
        return next(g for g in self.guardrails if g.treatment == treatment)

    def sequential_for(self, treatment: str) -> SequentialStatus:
        return next(s for s in self.sequential if s.treatment == treatment)


@dataclass(frozen=True)
class ExperimentAnalysis:
    """The looks analysed so far (oldest first); ``current`` is the one that decides."""

    spec: ExperimentSpec
    spec_hash: str
    looks: tuple[LookAnalysis, ...]

    @property
    def current(self) -> LookAnalysis:
        return self.looks[-1]


# --------------------------------------------------------------------------- statistics


def compare(control: ArmStats, treatment: ArmStats, *, test: str, alpha: float) -> ComparisonResult:
    """The comparison for one metric: the stats type decides the family, the spec's test
    (or the metric type's default) the variant.

    CUPED statistics get the CUPED test of their kind; ratio statistics the delta method;
    means Welch's t, or the two-proportion z test when asked for and the sums are binary.

    >>> c, t = MeanStats.from_proportion(1000, 100), MeanStats.from_proportion(1000, 130)
    >>> compare(c, t, test="two_proportion_z", alpha=0.05).method
    'two_proportion_z'
    >>> compare(c, t, test="welch", alpha=0.05).method
    'welch_t'
    """
    if test in _UNIT_LEVEL_TESTS:
        raise AnalysisError(
            f"test {test!r} needs unit-level data; experiment analysis runs on sufficient "
            "statistics (use welch, two_proportion_z or delta_method)"
        )
    if isinstance(control, CupedMeanStats) and isinstance(treatment, CupedMeanStats):
        return cuped_mean_test(control, treatment, alpha=alpha)
    if isinstance(control, CupedRatioStats) and isinstance(treatment, CupedRatioStats):
        return cuped_ratio_test(control, treatment, alpha=alpha)
    if isinstance(control, RatioStats) and isinstance(treatment, RatioStats):
        return delta_method_ratio_test(control, treatment, alpha=alpha)
    if isinstance(control, MeanStats) and isinstance(treatment, MeanStats):
        binary = control.is_binary_compatible and treatment.is_binary_compatible
        if test == "two_proportion_z" and binary:
            return two_proportion_z_test(control, treatment, alpha=alpha)
        return welch_t_test(control, treatment, alpha=alpha)
    raise AnalysisError(
        f"control and treatment statistics differ in kind: {type(control).__name__} vs "
        f"{type(treatment).__name__}"
    )


class _StatsIndex:
    """UnitStats rows grouped by (metric, arm, dimension), as array-valued statistics."""

    def __init__(self, stats: UnitStats) -> None:
        self.rows: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
        for row in stats.table.to_pylist():
            self.rows[(row["metric"], row["arm"], row["dimension"])][row["value"]] = row

    def _template(self, metric: str) -> dict[str, Any]:
        """Any row of ``metric`` (its kind and which sums exist)."""
        for (m, _, dimension), rows in self.rows.items():
            if m == metric and dimension == ALL:
                return next(iter(rows.values()))
        raise AnalysisError(f"no statistics for metric {metric!r} in any arm")

    def _zeros(self, metric: str) -> dict[str, Any]:
        """The row of an arm without units: every sum 0 (tests then say insufficient data)."""
        template = self._template(metric)
        return {
            k: (v if k in ("metric", "arm", "dimension", "value", "kind") or v is None else 0)
            for k, v in template.items()
        }

    def total(self, metric: str, arm: str) -> ArmStats:
        row = self.rows.get((metric, arm, ALL), {}).get(ALL)
        return to_stats(row if row is not None else self._zeros(metric))

    def values(self, metric: str, dimension: str, arms: Sequence[str]) -> list[str]:
        """Cohort values of a dimension present in any of ``arms``, largest first."""
        counts: dict[str, int] = defaultdict(int)
        for arm in arms:
            for value, row in self.rows.get((metric, arm, dimension), {}).items():
                counts[value] += int(row["n"])
        return sorted(counts, key=lambda v: (-counts[v], v))

    def by_value(self, metric: str, arm: str, dimension: str, values: Sequence[str]) -> ArmStats:
        """Array statistics, one element per value (zeros where the arm has no units)."""
        rows = self.rows.get((metric, arm, dimension), {})
        template = self._template(metric)
        stacked: dict[str, Any] = {"kind": template["kind"]}
        for key, first in template.items():
            if key in ("metric", "arm", "dimension", "value", "kind"):
                continue
            if first is None:
                stacked[key] = None
                continue
            stacked[key] = np.array(
                [float((rows.get(v) or {}).get(key) or 0.0) for v in values], dtype=np.float64
            )
        return to_stats(stacked)


def _scalar(stats: ArmStats, index: int) -> ArmStats:
    """Element ``index`` of array-valued statistics."""
    values = {name: float(np.asarray(value)[index]) for name, value in vars(stats).items()}
    return type(stats)(**values)


def achievable_mde(
    result: ComparisonResult, *, alpha: float, power: float, sides: int
) -> float | None:
    """Relative MDE detectable with ``power`` at this comparison's standard error.

    The per-unit variance σ² is backed out of se² = σ²(1/n_c + 1/n_t) and passed to
    :func:`tripwire.stats.mde_from_variance` (CUPED's reduction is already in the se).
    """
    se = float(result.absolute.se)
    n_c, n_t = float(result.control.n), float(result.treatment.n)
    baseline = float(result.control.mean)
    if not (math.isfinite(se) and se > 0 and n_c > 0 and n_t > 0 and baseline):
        return None
    variance = se**2 / (1.0 / n_c + 1.0 / n_t)
    mde = mde_from_variance(
        n_c, variance, baseline=baseline, alpha=alpha, power=power, sides=sides, ratio=n_t / n_c
    )
    return mde.relative


# --------------------------------------------------------------------------- validity


def check_validity(spec: ExperimentSpec, exposures: ExposureSummary) -> Validity:
    """SRM against the planned weights, multi-arm units, unknown and empty arms."""
    seen = dict(exposures.units_per_arm)
    per_arm = {arm: int(seen.get(arm, 0)) for arm in spec.arm_names}
    weights = {a.name: float(a.weight) for a in spec.arms}
    unknown = {arm: n for arm, n in seen.items() if arm not in weights}
    srm = sample_ratio_mismatch(list(per_arm.values()), list(weights.values()))
    problems: list[str] = []
    total = sum(per_arm.values())
    if total + exposures.multi_arm_units == 0:
        problems.append(
            f"no exposures logged for {spec.name!r}: the experiment has not started or its "
            "exposure logging is broken"
        )
    else:
        empty = [arm for arm, n in per_arm.items() if n == 0]
        if empty:
            problems.append(f"no units in arm(s) {', '.join(empty)}: exposure logging is broken")
        if srm.mismatch:
            observed = ", ".join(f"{a} {n:,}" for a, n in per_arm.items())
            expected = ", ".join(
                f"{a} {e:,.0f}" for a, e in zip(per_arm, srm.expected, strict=True)
            )
            problems.append(
                f"sample-ratio mismatch: observed {observed} vs expected {expected} "
                f"(chi-square p = {srm.p_value:.2g} < {srm.threshold:g}); assignment or exposure "
                "logging is broken, so no effect can be trusted"
            )
    if unknown:
        listed = ", ".join(f"{a} ({n:,} units)" for a, n in unknown.items())
        problems.append(f"exposures name arms the spec does not define: {listed}")
    multi = exposures.multi_arm_units
    share = multi / (total + multi) if total + multi else 0.0
    if share > MAX_MULTI_ARM_SHARE:
        problems.append(
            f"{multi:,} units ({share:.1%}) were exposed to several arms (more than "
            f"{MAX_MULTI_ARM_SHARE:.0%}): assignment is not sticky or exposure logging is broken"
        )
    return Validity(per_arm, weights, srm, multi, unknown, tuple(problems))


# --------------------------------------------------------------------------- sequential


@dataclass(frozen=True)
class LookPlan:
    """Which look of the plan a date is, and what the design is."""

    design: SequentialDesign
    look: int
    n_looks: int
    final: bool
    next_look: date | None
    by_date: bool


def base_design(spec: ExperimentSpec) -> SequentialDesign:
    """The spec's plan as a design (a one-look design for fixed-horizon experiments).

    Calendar looks get the planner's fractions (elapsed share of the time from the start,
    :func:`tripwire.experiments.planner.information_fractions`). With several treatment
    arms α is split equally across them (Bonferroni), as the planner sizes them.
    """
    alpha = spec.alpha / max(1, len(spec.treatment_arms))
    plan = spec.sequential
    if plan is None:
        return _boundaries((1.0,), alpha, "obf", spec.sides, None, None)
    fractions = information_fractions(spec) or (1.0,)
    futility = (
        FutilityPlan(beta=plan.futility.beta, spending=plan.futility.spending)
        if plan.futility
        else None
    )
    return _boundaries(
        tuple(fractions), alpha, plan.spending, spec.sides, futility, plan.spending_parameter
    )


@functools.lru_cache(maxsize=256)
def _boundaries(
    fractions: tuple[float, ...],
    alpha: float,
    spending: Any,
    sides: Literal[1, 2],
    futility: FutilityPlan | None,
    parameter: float | None,
) -> SequentialDesign:
    """Designs are pure functions of their parameters: computed once per process."""
    return sequential_boundaries(
        fractions, alpha=alpha, spending=spending, sides=sides, futility=futility,
        spending_parameter=parameter,
    )  # fmt: skip


#: θ for the requested power depends only on the design (a root-find over integrations).
_drift_for_power = functools.lru_cache(maxsize=256)(drift_for_power)


def max_information(spec: ExperimentSpec, design: SequentialDesign, control_mean: float) -> float:
    """I_max = (θ_R/δ)²: the information at which the plan has the spec's power for the
    primary's MDE δ (absolute; a relative MDE is scaled by the control mean)."""
    delta = spec.primary.mde
    if spec.primary.mde_scale == "relative":
        delta *= abs(control_mean)
    if not (math.isfinite(delta) and delta > 0):
        return math.nan
    theta = _drift_for_power(design, spec.power)
    return (theta / delta) ** 2


def sequential_status(
    spec: ExperimentSpec,
    design: SequentialDesign,
    primary: MetricResult,
    *,
    look_date: date,
    dates: Sequence[date] | None,
    past_fractions: Sequence[float] = (),
) -> SequentialStatus:
    """Evaluate the primary's z at the actual information fraction of this look.

    ``dates`` are the plan's calendar looks (None for information-fraction or fixed plans);
    ``past_fractions`` the actual fractions of the earlier looks (the planned ones when
    unknown). A look is final at the last planned date, at the spec's end date, or when
    the information reaches the maximum; a final look spends all remaining α. Spending
    boundaries are recomputed at the actual fractions (:func:`tripwire.stats.update_design`),
    so looks may come early or late without changing the total α.
    """
    z = primary.z
    sign = 1.0 if spec.primary.direction == "increase" else -1.0
    i_max = max_information(spec, design, float(primary.comparison.control.mean))
    se = float(primary.comparison.absolute.se)
    info = 1.0 / se**2 if se > 0 and math.isfinite(se) else 0.0
    t = info / i_max if i_max > 0 and math.isfinite(i_max) else math.nan
    planned = design.information_fractions
    ended = spec.end is not None and look_date >= spec.end.date()
    next_look: date | None = None
    if dates is not None:
        k = sum(1 for d in dates if d <= look_date)
        final = k == len(dates) or ended
        next_look = dates[k] if k < len(dates) else None
    elif spec.sequential is None:
        k, final = 1, ended or spec.end is None
        if not final and spec.end is not None:
            k, next_look = 0, spec.end.date()
    else:
        k = sum(1 for f in planned if math.isfinite(t) and t >= f * 0.99)
        final = ended or k >= len(planned)
    if spec.sequential is not None and math.isfinite(t) and t >= 1.0:
        final = True
    if final:
        k = max(k, 1)
        next_look = None
    plan: Literal["fixed", "group_sequential"] = (
        "fixed" if spec.sequential is None else "group_sequential"
    )
    futility0 = design.futility[0] if design.futility else None
    if k == 0 or not math.isfinite(z):
        return SequentialStatus(
            primary.treatment, plan, k, design.n_looks, t, i_max, z, design.efficacy[0],
            futility0, design.nominal_alpha[0], 0.0, Decision.CONTINUE, False, next_look, design,
        )  # fmt: skip
    current, look = design, k
    classic = design.spending in ("classic_obf", "classic_pocock")
    if plan == "group_sequential" and not classic and math.isfinite(t):
        past = list(past_fractions) if past_fractions else list(planned[: k - 1])
        past = [f for f in past if 0 < f < t]
        past = [f for i, f in enumerate(past) if i == 0 or f > past[i - 1]]
        current = update_design(design, [*past, t], final=final)
        look = len(past) + 1  # the look's index in the re-planned design
    result = evaluate_look(current, look, sign * z)
    decision = result.decision
    if final and decision in (Decision.CONTINUE, Decision.FUTILITY):
        decision = Decision.NOT_SIGNIFICANT
    n_looks = len(dates) if dates is not None else design.n_looks
    return SequentialStatus(
        primary.treatment, plan, k, n_looks, t, i_max, z, result.efficacy_boundary,
        result.futility_boundary, result.nominal_alpha, result.alpha_spent, decision, final,
        next_look, current,
    )  # fmt: skip


# --------------------------------------------------------------------------- one look


def _metric_results(
    spec: ExperimentSpec,
    index: _StatsIndex,
    metric_types: Mapping[str, str],
    metrics: Sequence[tuple[str, Role]],
    treatments: Sequence[str],
    cuped: bool,
) -> dict[tuple[str, str, Role], MetricResult]:
    control = spec.control_arm.name
    out: dict[tuple[str, str, Role], MetricResult] = {}
    for metric, role in metrics:
        test = spec.test_for(metric, metric_types[metric])
        for arm in treatments:
            comparison = compare(
                index.total(metric, control), index.total(metric, arm), test=test, alpha=spec.alpha
            )
            p = float(comparison.absolute.p_value)
            out[(metric, arm, role)] = MetricResult(
                metric, role, metric_types[metric], arm, comparison, cuped, p
            )
    return out


def _cohorts(
    spec: ExperimentSpec,
    index: _StatsIndex,
    metric_types: Mapping[str, str],
    results: Sequence[MetricResult],
) -> list[CohortBreakdown]:
    control = spec.control_arm.name
    out: list[CohortBreakdown] = []
    done: set[tuple[str, str]] = set()
    for result in results:
        if (result.metric, result.treatment) in done:
            continue  # a guardrail on the primary: its cohorts are already there
        done.add((result.metric, result.treatment))
        test = spec.test_for(result.metric, metric_types[result.metric])
        for dimension in spec.cohorts:
            arms = (control, result.treatment)
            values = index.values(result.metric, dimension, arms)
            if not values:
                continue
            c = index.by_value(result.metric, control, dimension, values)
            t = index.by_value(result.metric, result.treatment, dimension, values)
            comparison = compare(c, t, test=test, alpha=spec.alpha)
            units = tuple(
                int(a + b)
                for a, b in zip(
                    np.atleast_1d(np.asarray(c.n)), np.atleast_1d(np.asarray(t.n)), strict=True
                )
            )
            analysis, note = None, ""
            try:
                if len(values) >= 2:
                    analysis = analyze_cohorts(values, comparison, result.comparison)
                else:
                    note = "one cohort value only"
            except ValueError as error:
                note = str(error)
            out.append(
                CohortBreakdown(
                    result.metric,
                    result.role,
                    result.treatment,
                    dimension,
                    tuple(values),
                    units,
                    comparison,
                    analysis,
                    note,
                )  # fmt: skip
            )
    return out


def _guardrail_family(
    spec: ExperimentSpec,
    index: _StatsIndex,
    metric_types: Mapping[str, str],
    treatment: str,
    aggregate: Mapping[str, MetricResult],
) -> GuardrailFamily:
    control = spec.control_arm.name
    tests: list[tuple[Guardrail, str | None, str | None, NonInferiorityResult]] = []
    dimension: str

    def ni(g: Guardrail, result: ComparisonResult, name: str) -> NonInferiorityResult:
        return non_inferiority_test(
            result, g.threshold, harm=g.harm, relative=g.scale == "relative",
            alpha=spec.alpha, name=name,
        )  # fmt: skip

    for g in spec.guardrails:
        tests.append((g, None, None, ni(g, aggregate[g.metric].comparison, g.label)))
        test = spec.test_for(g.metric, metric_types[g.metric])
        for dimension in spec.guardrail_cohorts(g):
            values = index.values(g.metric, dimension, (control, treatment))
            if not values:
                continue
            c = index.by_value(g.metric, control, dimension, values)
            t = index.by_value(g.metric, treatment, dimension, values)
            for i, value in enumerate(values):
                result = compare(_scalar(c, i), _scalar(t, i), test=test, alpha=spec.alpha)
                tests.append(
                    (g, dimension, value, ni(g, result, f"{g.label} [{dimension}={value}]"))
                )
    verdict = evaluate_guardrails(
        [t for *_, t in tests], rule=spec.guardrail_rule, alpha=spec.alpha
    )
    checks = []
    for (g, dim, val, ni_result), level in zip(tests, verdict.levels, strict=True):
        usable = ni_result.status != Status.INSUFFICIENT_DATA
        checks.append(
            GuardrailCheck(
                name=ni_result.name,
                guardrail=g.label,
                metric=g.metric,
                treatment=treatment,
                dimension=dim,
                value=val,
                test=ni_result,
                level=level,
                passed=ni_result.name not in verdict.vetoes,
                breached=usable and ni_result.p_value >= 1.0 - spec.alpha,
            )
        )
    return GuardrailFamily(treatment, spec.guardrail_rule, spec.alpha, tuple(checks), verdict)


def analyze_stats(
    spec: ExperimentSpec,
    stats: UnitStats,
    metric_types: Mapping[str, str],
    *,
    look_date: date,
    spec_hash: str = "",
    cutoff: datetime | None = None,
    look_dates: Sequence[date] | None = None,
    previous: Sequence[LookAnalysis] = (),
) -> LookAnalysis:
    """Analyse one look from its sufficient statistics (pure: no I/O).

    ``metric_types`` maps every metric the spec reads to its type (``proportion``,
    ``ratio``, …; it picks the default test). ``look_dates`` are the plan's calendar looks
    when it has them (they decide the look number and whether it is final); ``previous``
    the earlier looks, whose actual information fractions fix the boundaries spent so far.
    """
    missing = [m for m in _analysed_metrics(spec) if m not in metric_types]
    if missing:
        raise AnalysisError(f"no metric type given for {', '.join(missing)}")
    validity = check_validity(spec, stats.exposures)
    control = spec.control_arm.name
    treatments = tuple(a.name for a in spec.treatment_arms)
    if sum(validity.units_per_arm.values()) == 0:
        raise AnalysisError(
            f"no exposures for {spec.name!r} before {cutoff or look_date}: nothing to analyse "
            "(has the experiment started, and does it log $exposure events?)"
        )
    index = _StatsIndex(stats)
    cuped = spec.cuped is not None
    primary = _metric_results(
        spec, index, metric_types, [(spec.primary.metric, "primary")], treatments, cuped
    )
    secondary = _metric_results(
        spec, index, metric_types, [(s.metric, "secondary") for s in spec.secondary], treatments,
        cuped,
    )  # fmt: skip
    guard_names = list(dict.fromkeys(g.metric for g in spec.guardrails))
    guard = _metric_results(
        spec, index, metric_types, [(m, "guardrail") for m in guard_names], treatments, cuped
    )
    # Holm across the secondaries, per treatment arm
    secondary_results: list[MetricResult] = []
    for arm in treatments:
        items = [r for (m, a, _), r in secondary.items() if a == arm]
        if items:
            p = np.array(
                [r.adjusted_p_value if math.isfinite(r.adjusted_p_value) else 1.0 for r in items]
            )
            adjusted = adjust_p_values(p, "holm")
            for r, q in zip(items, adjusted, strict=True):
                secondary_results.append(
                    MetricResult(
                        r.metric,
                        r.role,
                        r.metric_type,
                        r.treatment,
                        r.comparison,
                        r.cuped,
                        float(q),
                    )  # fmt: skip
                )
    design = base_design(spec)
    dates = spec.sequential.looks if spec.sequential and spec.sequential.looks else None
    if look_dates is not None:
        dates = list(look_dates)
    primary_results: list[MetricResult] = []
    statuses: list[SequentialStatus] = []
    for arm in treatments:
        r = primary[(spec.primary.metric, arm, "primary")]
        mde = achievable_mde(r.comparison, alpha=design.alpha, power=spec.power, sides=spec.sides)
        r = MetricResult(
            r.metric, r.role, r.metric_type, r.treatment, r.comparison, r.cuped,
            r.adjusted_p_value, mde,
        )  # fmt: skip
        primary_results.append(r)
        past = [
            s.information_fraction
            for look in previous
            for s in look.sequential
            if s.treatment == arm and s.look > 0 and math.isfinite(s.information_fraction)
        ]
        statuses.append(
            sequential_status(
                spec, design, r, look_date=look_date, dates=dates, past_fractions=past
            )
        )
    guard_by_arm = {
        arm: _guardrail_family(
            spec,
            index,
            metric_types,
            arm,
            {m: guard[(m, arm, "guardrail")] for m in guard_names},
        )  # fmt: skip
        for arm in treatments
    }
    guard_results = [guard[(m, arm, "guardrail")] for arm in treatments for m in guard_names]
    cohorts = _cohorts(
        spec, index, metric_types, [*primary_results, *secondary_results, *guard_results]
    )
    return LookAnalysis(
        experiment=spec.name,
        spec_hash=spec_hash,
        look_date=look_date,
        cutoff=cutoff or _end_of(look_date),
        exposures=stats.exposures,
        validity=validity,
        control=control,
        treatments=treatments,
        primary=tuple(primary_results),
        secondary=tuple(secondary_results),
        guardrails=tuple(guard_by_arm[a] for a in treatments),
        guardrail_metrics=tuple(guard_results),
        cohorts=tuple(cohorts),
        sequential=tuple(statuses),
    )


def _analysed_metrics(spec: ExperimentSpec) -> list[str]:
    names = [spec.primary.metric, *(s.metric for s in spec.secondary)]
    names += [g.metric for g in spec.guardrails]
    return list(dict.fromkeys(names))


def _end_of(day: date) -> datetime:
    """The exclusive end of a UTC day: a look on ``day`` sees events before this instant."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)


# --------------------------------------------------------------------------- against the lake


def look_dates_until(spec: ExperimentSpec, at: date) -> list[date]:
    """The dates to analyse up to ``at``: the plan's calendar looks that have passed, then
    ``at`` itself when it is not one of them (an interim view, or a non-calendar plan).

    >>> from tripwire.experiments.spec import parse_spec
    >>> s = parse_spec({"name": "x", "arms": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}],
    ...     "primary": {"metric": "m", "mde": 0.02},
    ...     "sequential": {"looks": ["2026-11-08", "2026-11-12"]}})
    >>> [str(d) for d in look_dates_until(s, date(2026, 11, 10))]
    ['2026-11-08']
    >>> [str(d) for d in look_dates_until(s, date(2026, 11, 5))]
    ['2026-11-05']
    """
    looks = spec.sequential.looks if spec.sequential and spec.sequential.looks else None
    if looks is None:
        return [at]
    passed = [d for d in looks if d <= at]
    return passed or [at]


def analyze(
    events: Any,
    spec: ExperimentSpec,
    metrics: Mapping[str, Any],
    *,
    at: date,
    spec_hash: str = "",
    sources: Sequence[ExposureSource] | None = None,
    progress: Callable[[str], None] | None = None,
    looks: Sequence[date] | None = None,
) -> ExperimentAnalysis:
    """Analyse ``spec`` at every look up to ``at`` against an Ibis ``events`` table.

    ``metrics`` maps metric names to their definitions (the workspace catalog). Each look
    computes its sufficient statistics with :func:`tripwire.metrics.unit_stats.unit_stats`
    on the events before the end of the look's day. ``looks`` restricts the dates computed
    (e.g. only the current one when the earlier looks are already in the decision log).
    :func:`analyze_incremental` gives the same numbers from per-day partial aggregates
    without rescanning the lake at every look.
    """
    definitions, types = _definitions(spec, metrics)
    kwargs: dict[str, Any] = {}
    if sources is not None:
        kwargs["sources"] = tuple(sources)

    def stats_at(day: date) -> UnitStats:
        return unit_stats(
            events.filter(events.timestamp < _end_of(day)),
            spec.name,
            definitions,
            dimensions=tuple(spec.cohorts),
            analysis_window=spec.analysis_window,
            pre_period_days=spec.cuped.pre_period_days if spec.cuped else None,
            unit=spec.unit,
            **kwargs,
        )

    days = looks if looks is not None else look_dates_until(spec, at)
    return _analyze_looks(spec, types, days, stats_at, spec_hash=spec_hash, progress=progress)


def _definitions(
    spec: ExperimentSpec, metrics: Mapping[str, Any]
) -> tuple[list[Any], dict[str, str]]:
    names = _analysed_metrics(spec)
    unknown = [m for m in names if m not in metrics]
    if unknown:
        raise AnalysisError(f"spec {spec.name!r} reads unknown metric(s): {', '.join(unknown)}")
    return [metrics[m] for m in names], {m: str(metrics[m].type) for m in names}


def _analyze_looks(
    spec: ExperimentSpec,
    types: Mapping[str, str],
    days: Sequence[date],
    stats_at: Callable[[date], UnitStats],
    *,
    spec_hash: str,
    progress: Callable[[str], None] | None,
) -> ExperimentAnalysis:
    done: list[LookAnalysis] = []
    for day in days:
        if progress:
            progress(f"look {day}: sufficient statistics")
        stats = stats_at(day)
        if progress:
            progress(f"look {day}: tests")
        if sum(stats.exposures.units_per_arm.values()) == 0 and done:
            continue
        done.append(
            analyze_stats(
                spec,
                stats,
                dict(types),
                look_date=day,
                spec_hash=spec_hash,
                cutoff=_end_of(day),
                previous=done,
            )  # fmt: skip
        )
    return ExperimentAnalysis(spec, spec_hash, tuple(done))


def incremental_spec(
    spec: ExperimentSpec,
    metrics: Mapping[str, Any],
    sources: Sequence[ExposureSource] | None = None,
) -> IncrementalSpec:
    """What :class:`~tripwire.metrics.incremental.IncrementalStats` must aggregate for
    ``spec`` (its metrics, cohorts, analysis window, CUPED pre-period, unit, sources)."""
    definitions, _ = _definitions(spec, metrics)
    kwargs: dict[str, Any] = {}
    if sources is not None:
        kwargs["sources"] = tuple(sources)
    return IncrementalSpec(
        experiment=spec.name,
        metrics=tuple(definitions),
        dimensions=tuple(spec.cohorts),
        analysis_window=spec.analysis_window,
        pre_period_days=spec.cuped.pre_period_days if spec.cuped else None,
        unit=spec.unit,
        **kwargs,
    )


def analyze_incremental(
    state: IncrementalStats,
    spec: ExperimentSpec,
    metrics: Mapping[str, Any],
    *,
    at: date,
    spec_hash: str = "",
    progress: Callable[[str], None] | None = None,
    looks: Sequence[date] | None = None,
    refresh: bool = True,
) -> ExperimentAnalysis:
    """:func:`analyze` from per-day partial aggregates (``state``, built for this spec by
    :func:`incremental_spec`).

    ``refresh`` first aggregates the lake files the state has not seen (a daily refresh
    scans only the new day and updates the running per-unit totals of the units it
    touches); then the current look reads the running totals and each past look its stored
    result, or merges the partials of the days up to it when no stored result is valid
    (:meth:`~tripwire.metrics.incremental.IncrementalStats.result` with ``until``). The
    numbers equal :func:`analyze`'s exactly (integer partials and totals, tested).
    """
    _, types = _definitions(spec, metrics)
    if refresh:
        if progress:
            progress("refreshing per-day partial aggregates")
        state.refresh()
    days = looks if looks is not None else look_dates_until(spec, at)
    return _analyze_looks(
        spec, types, days, lambda day: state.result(until=day),
        spec_hash=spec_hash, progress=progress,
    )  # fmt: skip
