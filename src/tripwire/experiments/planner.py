"""Plan an experiment from the lake: baseline, variance, traffic, CUPED → size and runtime.

The planner replays the experiment's design on a **baseline window** of history (by
default the 14 days before the spec's ``start``, or the data's last 14 days): every unit
that sends an eligible event (the spec's population) enters at its first one, and its
primary metric is measured from then until the window's end, exactly as the analysis
will measure it (same per-unit statistics, :mod:`tripwire.metrics.unit_stats`, computed in
the engine). From those sufficient statistics come

* the baseline value and per-unit variance (delta-method variance for ratios),
* the CUPED covariate's correlation ρ (the variance reduction 1 − ρ² that CUPED achieves
  on this data, as :func:`tripwire.stats.cuped_mean_test` computes it),
* eligible traffic: distinct units entering per day,
* per cohort value: its share of units, baseline and variance,

and every formula after that is :mod:`tripwire.stats.power`'s: units per arm (with the
sequential inflation of the spec's look schedule and spending function), runtime, and each
cohort's conditional MDE at the planned runtime. A cohort whose MDE exceeds the
experiment's MDE is flagged: claims about it will be underpowered, and the message says
which observed effects will be inconclusive (the MDE at 50% power: effects smaller than
that are not significant even when estimated exactly).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import ibis
import ibis.expr.types as ir

from tripwire.experiments.spec import ExperimentSpec, LoadedSpec, load_spec
from tripwire.metrics.compile import filter_condition, unit_key
from tripwire.metrics.definitions import EventFilter, MetricBase
from tripwire.metrics.exposures import (
    ARM,
    MISSING,
    TS,
    UNIT,
    ExposureSummary,
    first_exposures,
    summarize,
)
from tripwire.metrics.loader import MetricCatalog, load_metrics
from tripwire.metrics.unit_stats import (
    ALL,
    compute_from_units,
    per_unit_components,
    plan_metrics,
    to_stats,
)
from tripwire.stats import (
    CupedMeanStats,
    CupedRatioStats,
    MeanStats,
    RatioStats,
    cuped_mean_test,
    cuped_ratio_test,
)
from tripwire.stats.comparisons import ratio_variance
from tripwire.stats.power import (
    MetricKind,
    SampleSizePlan,
    cohort_mde,
    mde_from_variance,
    runtime_days,
    sample_size_means,
    sample_size_proportions,
    sample_size_ratio,
)
from tripwire.stats.sequential import FutilityPlan, SequentialDesign, sequential_boundaries
from tripwire.store.engine import connect, events_table, resolve_field
from tripwire.store.workspace import Workspace

#: Days of history the baseline is measured on, by default.
DEFAULT_BASELINE_DAYS = 14
#: CUPED correlations are capped here (a correlation of 1 would promise infinite power).
MAX_CUPED_CORRELATION = 0.95
BASELINE_ARM = "baseline"


class PlanningError(ValueError):
    """The lake cannot support a plan (no data, no eligible units, zero variance)."""


@dataclass(frozen=True)
class MetricBaseline:
    """The primary metric on the baseline window (per unit, like the analysis)."""

    metric: str
    kind: MetricKind
    units: int
    value: float  #: mean per unit, proportion, or Σnumerator/Σdenominator
    unit_variance: float  #: per-unit variance (delta-method for ratios)
    cuped_correlation: float | None  #: ρ of the pre-period covariate (None: no CUPED)

    @property
    def sd(self) -> float:
        return math.sqrt(self.unit_variance)


@dataclass(frozen=True)
class CohortPlan:
    """One cohort value's conditional MDE at the planned size."""

    dimension: str
    value: str
    share: float  #: of the experiment's units
    units_per_arm: float  #: control units the cohort gets at the planned size
    baseline: float
    mde_absolute: float
    mde_relative: float | None
    inconclusive_relative: float | None  #: |effect| below this will not be significant
    underpowered: bool

    @property
    def label(self) -> str:
        return f"{self.dimension}={self.value}"

    def message(self) -> str:
        """E.g. ``locale=ja-JP cohort: MDE 7.9% at planned runtime; a result between
        −5.6% and +5.6% will be inconclusive``."""
        if self.mde_relative is None or self.inconclusive_relative is None:
            return f"{self.label} cohort: MDE {self.mde_absolute:.4g} (absolute) at planned runtime"
        band = self.inconclusive_relative
        return (
            f"{self.label} cohort: MDE {self.mde_relative:.1%} at planned runtime; "
            f"a result between −{band:.1%} and +{band:.1%} will be inconclusive"
        )


@dataclass(frozen=True)
class ExperimentPlan:
    """What the planner found and computed (see the module docstring)."""

    experiment: str
    spec_hash: str
    window_start: datetime
    window_end: datetime
    primary: MetricBaseline
    eligible_units: int
    daily_eligible_units: float
    traffic_fraction: float  #: share of eligible units entering (rollout, layer, holdout)
    sample_size: SampleSizePlan
    runtime_days: int
    planned_days: float | None  #: from the spec's start and end, when both are set
    planned_units_per_arm: tuple[float, ...]  #: per arm at the planned runtime (or required)
    mde_at_planned: float | None  #: relative (or absolute) MDE at the planned runtime
    sequential: SequentialDesign | None
    cohorts: tuple[CohortPlan, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def n_per_arm(self) -> tuple[int, ...]:
        return self.sample_size.n_per_arm

    @property
    def sequential_inflation(self) -> float:
        return self.sample_size.sequential_inflation

    @property
    def underpowered_cohorts(self) -> tuple[CohortPlan, ...]:
        return tuple(c for c in self.cohorts if c.underpowered)

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers for storing and rendering (readout, dashboard)."""
        return {
            "experiment": self.experiment,
            "spec_hash": self.spec_hash,
            "window": [self.window_start.isoformat(), self.window_end.isoformat()],
            "metric": self.primary.metric,
            "kind": self.primary.kind,
            "baseline": self.primary.value,
            "unit_variance": self.primary.unit_variance,
            "cuped_correlation": self.primary.cuped_correlation,
            "eligible_units": self.eligible_units,
            "daily_eligible_units": self.daily_eligible_units,
            "traffic_fraction": self.traffic_fraction,
            "n_per_arm": list(self.n_per_arm),
            "sequential_inflation": self.sequential_inflation,
            "runtime_days": self.runtime_days,
            "planned_days": self.planned_days,
            "planned_units_per_arm": list(self.planned_units_per_arm),
            "mde_at_planned": self.mde_at_planned,
            "cohorts": [
                {
                    "dimension": c.dimension,
                    "value": c.value,
                    "share": c.share,
                    "mde_relative": c.mde_relative,
                    "mde_absolute": c.mde_absolute,
                    "inconclusive_relative": c.inconclusive_relative,
                    "underpowered": c.underpowered,
                }
                for c in self.cohorts
            ],
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- design pieces


def information_fractions(spec: ExperimentSpec) -> tuple[float, ...] | None:
    """The planned information fraction of each look.

    Given directly, or for looks by date, the elapsed share of the time from ``start`` to
    the end of the last look's day (information grows about linearly with time once
    traffic is steady); None without a sequential plan.
    """
    plan = spec.sequential
    if plan is None:
        return None
    if plan.information_fractions is not None:
        return tuple(plan.information_fractions)
    assert plan.looks is not None
    ends = [_day_end(d) for d in plan.looks]
    start = spec.start.astimezone(UTC) if spec.start else ends[0] - timedelta(days=1)
    total = (ends[-1] - start).total_seconds()
    return tuple(max(1e-3, (e - start).total_seconds() / total) for e in ends)


def _day_end(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)


def sequential_design(spec: ExperimentSpec) -> SequentialDesign | None:
    """The spec's group-sequential design at the per-comparison level (α split by
    Bonferroni over treatment arms, as the power functions expect)."""
    fractions = information_fractions(spec)
    if fractions is None or spec.sequential is None:
        return None
    plan = spec.sequential
    alpha = spec.alpha / len(spec.treatment_arms)
    futility = (
        FutilityPlan(beta=plan.futility.beta, spending=plan.futility.spending)
        if plan.futility
        else None
    )
    return sequential_boundaries(
        fractions,
        alpha=alpha,
        spending=plan.spending,
        sides=spec.sides,
        futility=futility,
        spending_parameter=plan.spending_parameter,
    )


def traffic_fraction(spec: ExperimentSpec) -> float:
    """Share of eligible units that enter: final rollout stage × layer range × (1 − holdout)."""
    share = spec.rollout.stages[-1].share if spec.rollout else 1.0
    start, end = spec.assignment.layer_range
    held = spec.assignment.holdout.share if spec.assignment.holdout else 0.0
    return share * (end - start) * (1.0 - held)


def metric_kind(metric: MetricBase, stats_kind: str) -> MetricKind:
    """How power treats a metric: proportions of units, ratios (delta method) or means."""
    if stats_kind == "ratio":
        return "ratio"
    if metric.type in ("proportion", "distinct"):
        return "proportion"
    return "mean"


# --------------------------------------------------------------------------- measuring


def eligible_rows(
    events: ir.Table,
    spec: ExperimentSpec,
    start: datetime,
    end: datetime,
) -> ir.Table:
    """Eligible events in ``[start, end)`` as exposure rows (``unit_id, arm, exposed_at,
    d0..``): the population's filter, the unit, and the cohort values at that event."""
    population = EventFilter(
        events=spec.population.eligibility.events,
        where=[*spec.population.eligibility.where, *spec.population.where],
    )
    condition = (events.timestamp >= start) & (events.timestamp < end)
    selected = filter_condition(events, population)
    if selected is not None:
        condition = condition & selected
    rows = events.filter(condition)
    columns: dict[str, ir.Value] = {
        UNIT: unit_key(rows, spec.unit).cast("string"),
        ARM: ibis.literal(BASELINE_ARM),
        TS: rows.timestamp,
    }
    for i, ref in enumerate(spec.cohorts):
        columns[f"d{i}"] = resolve_field(rows, ref, "string").fill_null(MISSING)
    out = rows.select(**columns)
    return out.filter(out[UNIT].notnull())


def _correlation(stats_: Any) -> float | None:
    """ρ of the outcome and its pre-period covariate: √(variance reduction) of CUPED on
    the same data (1 − ρ² exactly, with θ estimated on it)."""
    if isinstance(stats_, CupedMeanStats):
        reduction = _real(cuped_mean_test(stats_, stats_).variance_reduction)
    elif isinstance(stats_, CupedRatioStats):
        reduction = _real(cuped_ratio_test(stats_, stats_).variance_reduction)
    else:
        return None
    if not math.isfinite(reduction) or reduction <= 0:
        return 0.0
    return min(math.sqrt(reduction), MAX_CUPED_CORRELATION)


def _value_and_variance(stats_: Any) -> tuple[float, float, int]:
    """Baseline value, per-unit variance and units of one cell's statistics."""
    if isinstance(stats_, CupedMeanStats | CupedRatioStats):
        stats_ = stats_.outcome
    if isinstance(stats_, MeanStats):
        return _real(stats_.mean), _real(stats_.variance), int(stats_.n)
    assert isinstance(stats_, RatioStats)
    return _real(stats_.ratio), _real(ratio_variance(stats_)), int(stats_.n)


def _real(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _data_range(events: ir.Table) -> tuple[datetime | None, datetime | None]:
    row = events.aggregate(lo=events.timestamp.min(), hi=events.timestamp.max()).to_pyarrow()
    lo, hi = row["lo"][0].as_py(), row["hi"][0].as_py()
    return lo, hi


def baseline_window(
    spec: ExperimentSpec,
    data_start: datetime,
    data_end: datetime,
    *,
    days: int = DEFAULT_BASELINE_DAYS,
    end: datetime | None = None,
) -> tuple[datetime, datetime]:
    """``[start, end)`` of the history the plan is measured on: ``days`` days ending at
    ``end``, else at the spec's start (when data precedes it), else at the data's end."""
    if end is None:
        end = spec.start if spec.start and spec.start > data_start else None
    if end is None:
        end = data_end + timedelta(microseconds=1)
    end = end.astimezone(UTC) if end.tzinfo else end.replace(tzinfo=UTC)
    start = max(end - timedelta(days=days), data_start)
    if end - start < timedelta(hours=1):
        raise PlanningError(
            f"the lake has no history before {end:%Y-%m-%d %H:%M} UTC to plan on "
            f"(data from {data_start:%Y-%m-%d %H:%M}); pass an explicit baseline end"
        )
    return start, end


# --------------------------------------------------------------------------- the plan


def _sample_size(
    spec: ExperimentSpec, primary: MetricBaseline, design: SequentialDesign | None
) -> SampleSizePlan:
    relative = spec.primary.mde_scale == "relative"
    w = spec.control_arm.weight
    treatments = spec.treatment_arms
    common: dict[str, Any] = {
        "relative": relative,
        "alpha": spec.alpha,
        "power": spec.power,
        "sides": spec.sides,
        "ratio": treatments[0].weight / w,
        "n_treatment_arms": len(treatments),
        "cuped_correlation": primary.cuped_correlation or 0.0,
        "design": design,
    }
    if primary.kind == "proportion":
        if not 0 < primary.value < 1:
            raise PlanningError(
                f"{primary.metric}: baseline proportion is {primary.value:.4g}; "
                "a proportion of 0 or 1 has no variance to plan with"
            )
        return sample_size_proportions(primary.value, spec.primary.mde, **common)
    if primary.kind == "ratio":
        return sample_size_ratio(
            primary.unit_variance, spec.primary.mde, ratio_value=primary.value, **common
        )
    return sample_size_means(primary.sd, spec.primary.mde, mean=primary.value, **common)


def _units_by_day(units: ir.Table, start: datetime) -> list[int]:
    """Cumulative distinct units by whole day since ``start`` (index 0 = after day 1)."""
    offset = ((units.t0.epoch_seconds() - int(start.timestamp())) // 86_400).cast("int64")
    rows = (
        units.group_by(day=offset)
        .aggregate(n=units.count())
        .order_by("day")
        .to_pyarrow()
        .to_pylist()
    )
    if not rows:
        return []
    counts = [0] * (int(rows[-1]["day"]) + 1)
    for r in rows:
        counts[int(r["day"])] += int(r["n"])
    cumulative, total = [], 0
    for c in counts:
        total += c
        cumulative.append(total)
    return cumulative


def _arrival_rate(cumulative: list[int], days: float) -> float:
    """New eligible units per day over the window's last (up to 3) whole days: the rate
    at which an experiment keeps enrolling once returning units have entered."""
    whole = min(len(cumulative), max(1, math.floor(days)))
    if whole == 0:
        return 0.0
    back = min(3, whole - 1)
    if back == 0:
        return float(cumulative[0])
    return (cumulative[whole - 1] - cumulative[whole - 1 - back]) / back


def _runtime(
    needed_per_arm: Sequence[int],
    weights: Sequence[float],
    fraction: float,
    cumulative: list[int],
    days: float,
) -> int:
    """Days until every arm has its size: read off the cumulative eligible units while the
    window lasts, then extrapolate at the window's recent arrival rate
    (:func:`tripwire.stats.power.runtime_days`)."""
    total_w = sum(weights)
    needed_total = max(n * total_w / w for n, w in zip(needed_per_arm, weights, strict=True))
    whole = min(len(cumulative), max(1, math.floor(days)))
    for day, units in enumerate(cumulative[:whole], start=1):
        if units * fraction >= needed_total:
            return day
    rate = _arrival_rate(cumulative, days)
    if rate <= 0:
        raise PlanningError("no new eligible units arrive in the baseline window's last days")
    have = cumulative[whole - 1] * fraction if cumulative else 0.0
    missing = [
        max(1, math.ceil(n - have * w / total_w))
        for n, w in zip(needed_per_arm, weights, strict=True)
    ]
    return whole + runtime_days(missing, rate, traffic_fraction=fraction, weights=weights).days


def _units_at(cumulative: list[int], days: float, window_days: float) -> float:
    """Eligible units entering within ``days`` (past the window: at the arrival rate)."""
    if not cumulative:
        return 0.0
    whole = min(len(cumulative), max(1, math.floor(window_days)))
    if days <= whole:
        return float(cumulative[max(0, math.ceil(days) - 1)])
    return cumulative[whole - 1] + (days - whole) * _arrival_rate(cumulative, window_days)


def _measure(
    events: ir.Table,
    spec: ExperimentSpec,
    metric: MetricBase,
    start: datetime,
    end: datetime,
    *,
    pre_days: int | None,
) -> tuple[ir.Table, ExposureSummary, list[dict[str, Any]]]:
    """Per-unit statistics of ``metric`` for the units entering in ``[start, end)``,
    measured until ``end`` (one engine query; rows per cohort value)."""
    units = first_exposures(eligible_rows(events, spec, start, end), len(spec.cohorts)).cache()
    summary = summarize(units, spec.name)
    if summary.analysed_units == 0:
        raise PlanningError(
            f"no eligible units between {start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M} UTC "
            f"(population: {spec.population.eligibility.events or 'any event'})"
        )
    stats_plan = plan_metrics(
        [metric], analysis_window=spec.analysis_window, pre_period_days=pre_days, unit=spec.unit
    )
    stats = compute_from_units(
        per_unit_components(events.filter(events.timestamp < end), units, stats_plan),
        units,
        stats_plan,
        experiment=spec.name,
        summary=summary,
        dimensions=spec.cohorts,
        max_cohort_values=20,
    )
    return units, summary, [r for r in stats.rows() if r["metric"] == metric.name]


def _cuped_correlations(
    events: ir.Table,
    spec: ExperimentSpec,
    metric: MetricBase,
    data_start: datetime,
    start: datetime,
    end: datetime,
    notes: list[str],
) -> dict[tuple[str, str], float]:
    """ρ per (dimension, value), measured on units entering late enough that their whole
    pre-period is in the lake (enrolment starting earlier would see empty pre-periods and
    understate ρ). Empty, with a note, when the history is too short for that."""
    assert spec.cuped is not None
    days = spec.cuped.pre_period_days
    first_day = datetime(data_start.year, data_start.month, data_start.day, tzinfo=UTC)
    cuped_start = max(start, first_day + timedelta(days=days))
    if end - cuped_start < timedelta(days=1):
        notes.append(
            f"the lake holds less than {days} days of pre-period before a day of enrolment: "
            "the CUPED correlation could not be measured, so the plan assumes none "
            "(conservative)"
        )
        return {}
    _, _, rows = _measure(events, spec, metric, cuped_start, end, pre_days=days)
    out = {}
    for row in rows:
        rho = _correlation(to_stats(row)) if row["n"] else None
        if rho is not None:
            out[(str(row["dimension"]), str(row["value"]))] = rho
    return out


def plan_experiment(
    workspace: Workspace,
    spec: str | LoadedSpec,
    *,
    catalog: MetricCatalog | None = None,
    baseline_days: int = DEFAULT_BASELINE_DAYS,
    baseline_end: datetime | None = None,
    backend: Any = None,
) -> ExperimentPlan:
    """Plan experiment ``spec`` (a name or a loaded spec) on ``workspace``'s lake."""
    catalog = catalog or load_metrics(workspace, check_lake=False)
    loaded = spec if isinstance(spec, LoadedSpec) else load_spec(workspace, spec, catalog=catalog)
    s = loaded.spec
    metric = catalog[s.primary.metric]
    backend = backend or connect(workspace)
    try:
        events = events_table(backend)
    except Exception as error:  # noqa: BLE001 - no lake yet: the view does not exist
        raise PlanningError(f"the lake has no events yet ({error})") from error
    data_start, data_end = _data_range(events)
    if data_start is None or data_end is None:
        raise PlanningError("the lake has no events yet: ingest and archive some first")
    start, end = baseline_window(s, data_start, data_end, days=baseline_days, end=baseline_end)
    window_days = (end - start).total_seconds() / 86_400

    units, summary, rows = _measure(events, s, metric, start, end, pre_days=None)
    eligible = summary.analysed_units
    overall = next(r for r in rows if r["dimension"] == ALL)
    kind = metric_kind(metric, overall["kind"])
    value, variance, n = _value_and_variance(to_stats(overall))
    if not variance > 0:
        raise PlanningError(f"{metric.name}: zero variance across {n} eligible units")
    notes: list[str] = []
    correlations: dict[tuple[str, str], float] = {}
    if s.cuped:
        correlations = _cuped_correlations(events, s, metric, data_start, start, end, notes)
    primary = MetricBaseline(
        metric.name, kind, n, value, variance, correlations.get((ALL, ALL)) if s.cuped else None
    )

    design = sequential_design(s)
    size = _sample_size(s, primary, design)
    fraction = traffic_fraction(s)
    cumulative = _units_by_day(units, start)
    runtime = _runtime(size.n_per_arm, s.weights, fraction, cumulative, window_days)

    planned_days = (s.end - s.start).total_seconds() / 86_400 if s.start and s.end else None
    total_w = sum(s.weights)
    if planned_days is not None:
        entering = _units_at(cumulative, planned_days, window_days) * fraction
        planned = tuple(entering * w / total_w for w in s.weights)
    else:
        planned = tuple(float(n) for n in size.n_per_arm)
    ratio = s.treatment_arms[0].weight / s.control_arm.weight
    n_control = planned[s.arm_names.index(s.control_arm.name)]
    relative = s.primary.mde_scale == "relative"
    options: dict[str, Any] = {
        "alpha": s.alpha,
        "power": s.power,
        "sides": s.sides,
        "ratio": ratio,
        "design": design,
        "metric": kind,
    }
    mde_planned: float | None = None
    if n_control >= 2:
        result = mde_from_variance(
            n_control,
            variance,
            baseline=value,
            n_treatment_arms=len(s.treatment_arms),
            cuped_correlation=primary.cuped_correlation or 0.0,
            **options,
        )
        mde_planned = result.relative if relative else result.absolute

    cohorts = _cohort_plans(s, rows, n, n_control, options, relative, correlations)
    if planned_days is not None and planned_days > window_days:
        notes.append(
            f"units at the planned runtime are extrapolated from the baseline window's last "
            f"days ({_arrival_rate(cumulative, window_days):,.0f} new eligible units/day)"
        )
    if fraction < 1.0:
        notes.append(f"only {fraction:.1%} of eligible units enter (rollout, layer, holdout)")
    if planned_days is not None and runtime > planned_days:
        notes.append(
            f"the planned runtime ({planned_days:.1f} days) is shorter than needed "
            f"({runtime} days): the experiment is underpowered for its MDE"
        )
    return ExperimentPlan(
        experiment=s.name,
        spec_hash=loaded.hash,
        window_start=start,
        window_end=end,
        primary=primary,
        eligible_units=eligible,
        daily_eligible_units=eligible / window_days,
        traffic_fraction=fraction,
        sample_size=size,
        runtime_days=runtime,
        planned_days=planned_days,
        planned_units_per_arm=planned,
        mde_at_planned=mde_planned,
        sequential=design,
        cohorts=cohorts,
        notes=tuple(notes),
    )


def _cohort_plans(
    spec: ExperimentSpec,
    rows: list[dict[str, Any]],
    total_units: int,
    n_control: float,
    options: dict[str, Any],
    relative: bool,
    correlations: dict[tuple[str, str], float],
) -> tuple[CohortPlan, ...]:
    """Conditional MDE of every cohort value (:func:`tripwire.stats.power.cohort_mde`)."""
    plans = []
    for row in rows:
        if row["dimension"] == ALL or not row["n"]:
            continue
        stats_ = to_stats(row)
        value, variance, n = _value_and_variance(stats_)
        share = n / total_units
        if not (variance > 0 and n_control * share >= 2):
            continue
        rho = correlations.get((str(row["dimension"]), str(row["value"])), 0.0)
        mde = cohort_mde(
            n_control, share, variance, baseline=value, cuped_correlation=rho, **options
        )
        band = cohort_mde(
            n_control, share, variance, baseline=value, cuped_correlation=rho,
            **{**options, "power": 0.5},
        )  # fmt: skip
        target = spec.primary.mde
        measured = mde.relative if relative else mde.absolute
        plans.append(
            CohortPlan(
                dimension=str(row["dimension"]),
                value=str(row["value"]),
                share=share,
                units_per_arm=n_control * share,
                baseline=value,
                mde_absolute=mde.absolute,
                mde_relative=mde.relative,
                inconclusive_relative=band.relative,
                underpowered=measured is None or measured > target,
            )
        )
    plans.sort(
        key=lambda c: (
            spec.cohorts.index(c.dimension) if c.dimension in spec.cohorts else 99,
            -c.share,
        )
    )
    return tuple(plans)
