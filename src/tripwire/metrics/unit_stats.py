"""Per-unit sufficient statistics of an experiment, computed entirely inside the engine.

For the exposed units of one experiment (:mod:`tripwire.metrics.exposures`) and a set of
per-unit metrics, one query

1. joins the events the metrics read to the units (first exposure ``t0``, arm, cohorts),
2. aggregates per unit every metric's variables over the **analysis window**
   ``[t0 + window.start, t0 + min(window.end, analysis_window))`` and, for CUPED, over the
   **pre-period** (the ``pre_period_days`` whole UTC days before the day of ``t0``),
3. sums per (arm × cohort cell) n and the sums and cross-products of each metric's
   variables ``x`` (value or numerator), ``y`` (denominator), ``c`` and ``d`` (their
   pre-period covariates).

Only the per-cell sums come back (a few hundred rows); marginals per cohort dimension and
the all-units total are added up in Python from them, exactly.

Exactness: per-event values are summed as fixed-point integers (micro-units,
``VALUE_SCALE``); products involving them are summed as ``DECIMAL(38, 0)`` and products of
counts and indicators as integers (:func:`product_type`), so results do not depend on
summation order or engine (DuckDB and Spark give identical sums; incremental refresh equals
a full recomputation bit for bit). Counts and indicators are exact integers.

Cost (what bounds it at 100M events): the scan of the events the metrics read, the hash
join of those events with the analysed units on the unit id, and the per-unit hash
aggregation. Window bounds are computed once per unit (:func:`unit_bounds`), so events are
placed in windows by timestamp comparisons only, and events outside every window are
dropped before the aggregation.

Per-unit variables by metric type (units with no matching event count as 0):

============================  ===============================  ==========================
type                          x                                y
============================  ===============================  ==========================
count / sum / mean (per unit) events / Σ value                 —
distinct / proportion         1 if the unit did X              —
proportion with population    did X and in population          in population
mean (per event)              Σ value                          events with a value
ratio                         numerator measure                denominator measure
============================  ===============================  ==========================
"""

from __future__ import annotations

import functools
import json
import operator
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from tripwire.metrics.compile import OTHER, filter_condition, resolve_field, unit_key, value_field
from tripwire.metrics.definitions import (
    UNIT_COLUMNS,
    CountMetric,
    DistinctMetric,
    EventFilter,
    MeanMetric,
    Measure,
    MetricBase,
    Predicate,
    ProportionMetric,
    RatioMetric,
    SumMetric,
)
from tripwire.metrics.exposures import (
    DEFAULT_SOURCE,
    UNIT,
    ExposureSource,
    ExposureSummary,
    resolve_exposures,
    summarize,
)
from tripwire.stats.sufficient import CupedMeanStats, CupedRatioStats, MeanStats, RatioStats

#: Fixed-point scale for summed property values (micro-units): exact, order-free sums.
VALUE_SCALE = 10**6
#: Dimension/value labels of the all-units rows.
ALL = "(all)"
SECONDS_PER_DAY = 86_400

Mode = Literal["count", "sum", "any", "distinct"]


class UnitStatsError(ValueError):
    """A metric that has no per-unit form, or an invalid analysis setting."""


@dataclass(frozen=True)
class Component:
    """One per-unit aggregate of events: ``count``, ``sum`` of a value, ``any`` (0/1) or
    ``distinct`` values, over events matching ``filters`` inside a metric window."""

    key: str
    mode: Mode
    filters: tuple[EventFilter, ...]
    value: str | None
    window_start: timedelta
    window_end: timedelta | None

    @property
    def scale(self) -> int:
        return VALUE_SCALE if self.mode == "sum" else 1

    @property
    def mergeable(self) -> bool:
        """Whether daily partials of it can be merged exactly (not true for distinct)."""
        return self.mode != "distinct"


@dataclass(frozen=True)
class MetricVariables:
    """A metric's per-unit variables as products of components (``x``; ``y`` for ratios)."""

    metric: str
    x: tuple[str, ...]
    y: tuple[str, ...] | None

    @property
    def kind(self) -> Literal["mean", "ratio"]:
        return "mean" if self.y is None else "ratio"


@dataclass(frozen=True)
class StatsPlan:
    """Everything the queries need: components (deduplicated), variables and windows."""

    components: tuple[Component, ...]
    metrics: tuple[MetricVariables, ...]
    pre_period_days: int | None
    unit: str

    def component(self, key: str) -> Component:
        return next(c for c in self.components if c.key == key)

    def variable_scale(self, product: tuple[str, ...]) -> int:
        scale = 1
        for key in product:
            scale *= self.component(key).scale
        return scale

    @property
    def fingerprint(self) -> str:
        """Stable text identifying the plan (incremental state is tied to it)."""
        return json.dumps(
            {
                "components": [
                    [
                        c.key,
                        c.mode,
                        [f.model_dump(mode="json") for f in c.filters],
                        c.value,
                        c.window_start.total_seconds(),
                        None if c.window_end is None else c.window_end.total_seconds(),
                    ]
                    for c in self.components
                ],
                "metrics": [[m.metric, m.x, m.y] for m in self.metrics],
                "pre": self.pre_period_days,
                "unit": self.unit,
            },
            sort_keys=True,
        )


def plan_metrics(
    metrics: Sequence[MetricBase],
    *,
    analysis_window: timedelta | None = None,
    pre_period_days: int | None = None,
    unit: str = "user",
) -> StatsPlan:
    """Translate per-unit metric definitions into components and variables.

    >>> from tripwire.metrics.definitions import parse_metric
    >>> m = parse_metric({"name": "cpu", "type": "ratio", "numerator": {"events": ["Click"]},
    ...                   "denominator": {"events": ["Session Started"]}})
    >>> plan = plan_metrics([m], pre_period_days=7)
    >>> [c.mode for c in plan.components], plan.metrics[0].kind
    (['count', 'count'], 'ratio')
    """
    if pre_period_days is not None and pre_period_days < 1:
        raise UnitStatsError(f"pre_period_days must be >= 1, got {pre_period_days}")
    if analysis_window is not None and analysis_window <= timedelta(0):
        raise UnitStatsError(f"analysis_window must be positive, got {analysis_window}")
    names = [m.name for m in metrics]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UnitStatsError(f"metric names must be unique, got duplicates {duplicates}")
    registry: dict[str, Component] = {}

    def component(
        metric: MetricBase, mode: Mode, filters: Iterable[EventFilter], value: str | None
    ) -> str:
        window = metric.window
        start = window.start if window else timedelta(0)
        ends = [e for e in (window.end if window else None, analysis_window) if e is not None]
        end = min(ends) if ends else None
        if end is not None and end <= start:
            raise UnitStatsError(
                f"metric {metric.name!r}: window start {start} is not before the analysis "
                f"window end {end}"
            )
        kept = tuple(
            EventFilter(events=sorted(f.events), where=list(f.where))
            for f in filters
            if f.events or f.where
        )
        probe = Component("", mode, kept, value, start, end)
        signature = json.dumps(
            [mode, [f.model_dump(mode="json") for f in kept], value, str(start), str(end)]
        )
        if signature not in registry:
            registry[signature] = Component(
                f"c{len(registry)}", probe.mode, kept, value, start, end
            )
        return registry[signature].key

    def measure(metric: MetricBase, side: Measure) -> str:
        filters = (metric, side)
        if side.agg == "count":
            return component(metric, "count", filters, None)
        return component(metric, "sum" if side.agg == "sum" else "distinct", filters, side.value)

    variables: list[MetricVariables] = []
    for metric in metrics:
        x: tuple[str, ...]
        y: tuple[str, ...] | None = None
        if isinstance(metric, CountMetric):
            x = (component(metric, "count", [metric], None),)
        elif isinstance(metric, SumMetric):
            x = (component(metric, "sum", [metric], metric.value),)
        elif isinstance(metric, DistinctMetric):
            x = (component(metric, "any", [metric], None),)
        elif isinstance(metric, ProportionMetric):
            did = component(metric, "any", [metric], None)
            if metric.population is None:
                x = (did,)
            else:
                population = component(metric, "any", [metric.population], None)
                x, y = (did, population), (population,)
        elif isinstance(metric, MeanMetric):
            if metric.per == "unit":
                mode: Mode = "sum" if metric.value else "count"
                x = (component(metric, mode, [metric], metric.value),)
            else:
                assert metric.value is not None
                has_value = EventFilter(where=[Predicate(field=metric.value, op="not_null")])
                x = (component(metric, "sum", [metric], metric.value),)
                y = (component(metric, "count", [metric, has_value], None),)
        elif isinstance(metric, RatioMetric):
            x, y = (measure(metric, metric.numerator),), (measure(metric, metric.denominator),)
        else:
            raise UnitStatsError(
                f"metric {metric.name!r} is a {metric.type} metric: it has no per-unit form "
                "(use proportion, mean, ratio, count, sum or distinct for experiments)"
            )
        variables.append(MetricVariables(metric.name, x, y))
    return StatsPlan(tuple(registry.values()), tuple(variables), pre_period_days, unit)


# --------------------------------------------------------------------------- engine side


def day_index(ts: ir.TimestampValue) -> ir.IntegerValue:
    """Days since 1970-01-01 (UTC): the lake's date partition as an integer."""
    return (ts.epoch_seconds() // SECONDS_PER_DAY).cast("int64")  # type: ignore[no-any-return]


def _offset(ts: ir.TimestampValue, delta: timedelta) -> ir.TimestampValue:
    seconds = delta.total_seconds()
    if seconds % SECONDS_PER_DAY == 0:
        return ts + ibis.interval(days=int(seconds // SECONDS_PER_DAY))  # type: ignore[no-any-return]
    if seconds == int(seconds):
        return ts + ibis.interval(seconds=int(seconds))  # type: ignore[no-any-return]
    return ts + ibis.interval(milliseconds=round(seconds * 1000))  # type: ignore[no-any-return]


def _matches(table: ir.Table, component: Component) -> ir.BooleanValue:
    condition: ir.BooleanValue = ibis.literal(True)
    for flt in component.filters:
        part = filter_condition(table, flt)
        if part is not None:
            condition = condition & part
    return condition.fill_null(False)  # type: ignore[no-any-return]


def contribution(table: ir.Table, component: Component) -> ir.IntegerValue:
    """One event's scaled contribution to ``component`` (0 when it does not match)."""
    matches = _matches(table, component)
    if component.mode == "sum":
        assert component.value is not None
        scaled = (value_field(table, component.value) * VALUE_SCALE).round().cast("int64")
        return ibis.ifelse(matches, scaled.fill_null(0), 0)  # type: ignore[no-any-return]
    return ibis.ifelse(matches, 1, 0).cast("int64")  # type: ignore[no-any-return]


def in_window(
    ts: ir.TimestampValue, t0: ir.TimestampValue, component: Component
) -> ir.BooleanValue:
    """``t0 + start <= ts < t0 + end`` for the component's (metric's) window."""
    inside = ts >= _offset(t0, component.window_start)
    if component.window_end is not None:
        inside = inside & (ts < _offset(t0, component.window_end))
    return inside  # type: ignore[no-any-return]


def in_pre_period(day: ir.IntegerValue, t0_day: ir.IntegerValue, days: int) -> ir.BooleanValue:
    """The ``days`` whole UTC days before the exposure day."""
    return (day >= t0_day - days) & (day < t0_day)  # type: ignore[no-any-return]


def _aggregate(values: ir.IntegerValue, mode: Mode) -> ir.Scalar:
    if mode == "any":
        return values.max().fill_null(0)  # type: ignore[no-any-return]
    return values.sum().fill_null(0).cast("int64")  # type: ignore[no-any-return]


def event_scan(events: ir.Table, plan: StatsPlan) -> ir.Table:
    """The events any component reads (pushes the event-name filter into the scan)."""
    names: set[str] = set()
    for component in plan.components:
        named = [set(f.events) for f in component.filters if f.events]
        if not named:
            return events
        names |= set.intersection(*named)
    return events.filter(events.event.isin(sorted(names)))


def window_key(component: Component) -> str:
    """Name of a component's analysis window (components with equal windows share it)."""
    end = "open" if component.window_end is None else str(int(component.window_end.total_seconds()))
    return f"{int(component.window_start.total_seconds())}_{end}"


def unit_bounds(units: ir.Table, plan: StatsPlan) -> ir.Table:
    """Per analysed unit, the bounds of every window as instants, computed once per unit.

    ``__ws_<w>``/``__we_<w>``: ``t0 + start`` and ``t0 + end`` of each distinct analysis
    window; ``__ps``/``__pe``: midnight (UTC) ``pre_period_days`` days before the exposure
    day, and midnight of the exposure day. Events are then placed in windows by plain
    timestamp comparisons: no per-event interval or time-zone arithmetic.
    """
    columns: dict[str, ir.Value] = {}
    for component in plan.components:
        key = window_key(component)
        columns[f"__ws_{key}"] = _offset(units.t0, component.window_start)
        if component.window_end is not None:
            columns[f"__we_{key}"] = _offset(units.t0, component.window_end)
    if plan.pre_period_days:
        exposure_day = units.t0.truncate("D")
        columns["__pe"] = exposure_day
        columns["__ps"] = exposure_day - ibis.interval(days=plan.pre_period_days)
    return units.select(units[UNIT], **columns)


def _component_aggregate(rows: ir.Table, component: Component, where: ir.BooleanValue) -> ir.Scalar:
    """Aggregate of one component over the rows where ``where`` (match and window) holds."""
    key = component.key
    if component.mode == "distinct":
        return rows[f"__s_{key}"].nunique(where=where)  # type: ignore[no-any-return]
    if component.mode == "sum":
        return rows[f"__v_{key}"].sum(where=where).fill_null(0).cast("int64")  # type: ignore[no-any-return]
    count = rows.count(where=where)
    if component.mode == "any":
        return ibis.ifelse(count > 0, 1, 0).cast("int64")  # type: ignore[no-any-return]
    return count.cast("int64")  # type: ignore[no-any-return]


def per_unit_components(events: ir.Table, units: ir.Table, plan: StatsPlan) -> ir.Table:
    """Per analysed unit: ``a_<c>`` (analysis window) and ``p_<c>`` (pre-period) for every
    component, from raw events. Units without events are absent (callers left-join).

    The events the metrics read are joined to the per-unit window bounds
    (:func:`unit_bounds`); rows outside every window are dropped before aggregating; each
    event's window flags, filter matches and scaled values are computed once in a
    projection and summed per unit with filtered aggregates (``SUM(..) FILTER (WHERE ..)``).
    """
    scan = event_scan(events, plan)
    scan = scan.mutate(__unit=unit_key(scan, plan.unit).cast("string"))
    bounds = unit_bounds(units, plan)
    joined = scan.inner_join(bounds, scan["__unit"] == bounds[UNIT])
    ts = joined.timestamp
    flags: dict[str, ir.BooleanValue] = {}
    for component in plan.components:
        key = window_key(component)
        if f"__a_{key}" not in flags:
            inside = ts >= joined[f"__ws_{key}"]
            if component.window_end is not None:
                inside = inside & (ts < joined[f"__we_{key}"])
            flags[f"__a_{key}"] = inside
    if plan.pre_period_days:
        flags["__pre"] = (ts >= joined["__ps"]) & (ts < joined["__pe"])
    columns: dict[str, ir.Value] = dict(flags)
    matched: dict[str, str] = {}  # component -> its filter-match column
    match_of: dict[str, str] = {}  # filter signature -> its column (shared by components)
    for component in plan.components:
        key = component.key
        signature = json.dumps([f.model_dump(mode="json") for f in component.filters])
        if signature not in match_of:
            match_of[signature] = f"__m_{key}"
            columns[f"__m_{key}"] = _matches(joined, component)
        matched[key] = match_of[signature]
        if component.mode == "distinct":
            assert component.value is not None
            columns[f"__s_{key}"] = resolve_field(joined, component.value, "string")
        elif component.mode == "sum":
            assert component.value is not None
            value = value_field(joined, component.value) * VALUE_SCALE
            columns[f"__v_{key}"] = value.round().cast("int64")
    in_some_window = functools.reduce(operator.or_, flags.values())
    rows = joined.filter(in_some_window).select(joined[UNIT], **columns)
    aggregates: dict[str, ir.Scalar] = {}
    for component in plan.components:
        matches = rows[matched[component.key]]
        window = rows[f"__a_{window_key(component)}"]
        aggregates[f"a_{component.key}"] = _component_aggregate(rows, component, matches & window)
        if plan.pre_period_days:
            aggregates[f"p_{component.key}"] = _component_aggregate(
                rows, component, matches & rows["__pre"]
            )
    return rows.group_by(UNIT).aggregate(**aggregates)


def component_columns(plan: StatsPlan) -> list[str]:
    columns = [f"a_{c.key}" for c in plan.components]
    if plan.pre_period_days:
        columns += [f"p_{c.key}" for c in plan.components]
    return columns


def _product(table: ir.Table, prefix: str, keys: tuple[str, ...]) -> ir.IntegerValue:
    value: ir.IntegerValue = table[f"{prefix}_{keys[0]}"]
    for key in keys[1:]:
        value = value * table[f"{prefix}_{key}"]
    return value


def metric_variables(plan: StatsPlan) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Variable column → (component prefix, product of components), per metric.

    ``<metric>__x``/``__y`` (analysis window), ``__c``/``__d`` (their pre-period values).
    """
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for m in plan.metrics:
        out[f"{m.metric}__x"] = ("a", m.x)
        if m.y is not None:
            out[f"{m.metric}__y"] = ("a", m.y)
        if plan.pre_period_days:
            out[f"{m.metric}__c"] = ("p", m.x)
            if m.y is not None:
                out[f"{m.metric}__d"] = ("p", m.y)
    return out


#: Per metric, the sums computed: name → the variables multiplied (n is separate).
MOMENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("x", ("x",)), ("xx", ("x", "x")),
    ("y", ("y",)), ("yy", ("y", "y")), ("xy", ("x", "y")),
    ("c", ("c",)), ("cc", ("c", "c")),
    ("d", ("d",)), ("dd", ("d", "d")), ("cd", ("c", "d")),
    ("xc", ("x", "c")), ("xd", ("x", "d")), ("yc", ("y", "c")), ("yd", ("y", "d")),
)  # fmt: skip


def product_type(plan: StatsPlan, factors: Sequence[tuple[str, ...]]) -> str:
    """The exact type to multiply per-unit variables (each a product of components) in.

    With only counts and indicators, at most two of them counts, ``int64`` (a count below
    3·10⁹ squared fits; on overflow engines raise rather than wrap: DuckDB always, Spark
    in its default ANSI mode); the products are summed as integers and the sum is cast to
    ``DECIMAL(38, 0)``. Anything involving fixed-point value sums is multiplied as
    ``DECIMAL(38, 0)``. Integer products are ~5x cheaper than ``DECIMAL(38, 0)`` ones in
    DuckDB (which computes those as 128-bit integers); both are exact.
    """
    modes = [plan.component(key).mode for keys in factors for key in keys]
    wide = [mode for mode in modes if mode != "any"]
    if "sum" not in wide and len(wide) <= 2:
        return "int64"
    return "decimal(38, 0)"


def moments_expr(
    per_unit: ir.Table,
    units: ir.Table,
    plan: StatsPlan,
    cohorts: Sequence[str],
    cohort_values: Mapping[str, Sequence[str]] | None = None,
) -> ir.Table:
    """Per (arm × cohort cell): ``n`` and, per metric, ``<metric>__<moment>`` exact sums.

    ``per_unit`` has ``unit_id`` and the component columns; ``units`` is the analysed
    population (units without events get 0 for every component).
    """
    columns = component_columns(plan)
    filled = units.left_join(per_unit, units[UNIT] == per_unit[UNIT]).select(
        units.arm,
        *[units[d] for d in cohorts],
        **{c: per_unit[c].fill_null(0).cast("int64") for c in columns},
    )
    sources = metric_variables(plan)
    variables = {name: _product(filled, prefix, keys) for name, (prefix, keys) in sources.items()}
    keys: dict[str, ir.Value] = {"arm": filled.arm}
    for d in cohorts:
        kept = (cohort_values or {}).get(d)
        column = filled[d]
        keys[d] = column if kept is None else ibis.ifelse(column.isin(list(kept)), column, OTHER)
    aggregates: dict[str, ir.Scalar] = {"n": filled.count()}
    for m in plan.metrics:
        for moment, parts in MOMENTS:
            names = [f"{m.metric}__{p}" for p in parts]
            if not all(n in variables for n in names):
                continue
            factors = [sources[n][1] for n in names]
            kind = product_type(plan, factors)
            product = variables[names[0]].cast(kind)
            for name in names[1:]:
                product = product * variables[name].cast(kind)
            aggregates[f"{m.metric}__{moment}"] = product.sum().cast("decimal(38, 0)")
        if m.y is not None:
            aggregates[f"{m.metric}__zero_den"] = (
                (variables[f"{m.metric}__y"] == 0).cast("int64").sum()
            )
    return filled.group_by(**keys).aggregate(**aggregates)


def top_cohort_values(
    units: ir.Table, cohorts: Sequence[str], limit: int
) -> dict[str, list[str]] | None:
    """The ``limit`` most common values of each cohort column (None: all within limit)."""
    if not cohorts:
        return None
    parts = [
        units.group_by(__value=units[d]).aggregate(__n=units.count()).mutate(__dim=ibis.literal(d))
        for d in cohorts
    ]
    rows = (parts[0] if len(parts) == 1 else ibis.union(*parts)).to_pyarrow().to_pylist()
    by_dim: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for row in rows:
        by_dim[row["__dim"]].append((-int(row["__n"]), str(row["__value"])))
    kept: dict[str, list[str]] = {}
    for d in cohorts:
        values = sorted(by_dim.get(d, []))
        if len(values) > limit:
            kept[d] = [v for _, v in values[:limit]]
    return kept or None


# --------------------------------------------------------------------------- results

MOMENT_NAMES = [name for name, _ in MOMENTS]


@dataclass(frozen=True)
class UnitStats:
    """Sufficient statistics per (metric, arm, cohort dimension, cohort value).

    ``table`` (Arrow) has one row per key with ``kind`` (mean/ratio), ``n`` and the sums
    ``sum_<moment>`` (x: value or numerator, y: denominator, c/d: their pre-period
    covariates; null where not applicable), plus ``zero_den`` (units with y = 0).
    The all-units rows have ``dimension = value = "(all)"``.
    """

    experiment: str
    exposures: ExposureSummary
    table: pa.Table
    dimensions: tuple[str, ...] = field(default_factory=tuple)

    def rows(self) -> list[dict[str, Any]]:
        return self.table.to_pylist()  # type: ignore[no-any-return]

    def get(
        self, metric: str, arm: str, dimension: str = ALL, value: str = ALL
    ) -> MeanStats | RatioStats | CupedMeanStats | CupedRatioStats:
        """The stats engine's sufficient statistics for one key (see :func:`to_stats`)."""
        for row in self.rows():
            if (row["metric"], row["arm"], row["dimension"], row["value"]) == (
                metric,
                arm,
                dimension,
                value,
            ):
                return to_stats(row)
        raise KeyError(f"no statistics for metric={metric!r} arm={arm!r} {dimension}={value!r}")

    def all_stats(
        self,
    ) -> dict[tuple[str, str, str, str], MeanStats | RatioStats | CupedMeanStats | CupedRatioStats]:
        return {
            (r["metric"], r["arm"], r["dimension"], r["value"]): to_stats(r) for r in self.rows()
        }


def to_stats(row: Mapping[str, Any]) -> MeanStats | RatioStats | CupedMeanStats | CupedRatioStats:
    """Build :mod:`tripwire.stats` sufficient statistics from one :class:`UnitStats` row.

    Mean metrics give :class:`MeanStats` (or :class:`CupedMeanStats` with a pre-period);
    ratio metrics :class:`RatioStats` (or :class:`CupedRatioStats`).
    """
    s: dict[str, Any] = {m: row.get(f"sum_{m}") for m in MOMENT_NAMES}
    n = row["n"]
    covariate = s["c"] is not None
    if row["kind"] == "mean":
        if covariate:
            return CupedMeanStats(n, s["x"], s["xx"], s["c"], s["cc"], s["xc"])
        return MeanStats(n, s["x"], s["xx"])
    if covariate:
        return CupedRatioStats(
            n, s["x"], s["xx"], s["y"], s["yy"], s["xy"],
            s["c"], s["cc"], s["d"], s["dd"], s["cd"],
            s["xc"], s["xd"], s["yc"], s["yd"],
        )  # fmt: skip
    return RatioStats(n, s["x"], s["xx"], s["y"], s["yy"], s["xy"])


def _moment_scale(plan: StatsPlan, m: MetricVariables, parts: tuple[str, ...]) -> int:
    scale = 1
    for part in parts:
        scale *= plan.variable_scale(m.x if part in ("x", "c") else m.y or ())
    return scale


def _to_int(value: Any) -> int:
    """Engine sums are integral (``DECIMAL(38, 0)`` or integers): convert exactly."""
    return 0 if value is None else int(value)


def collect(
    cells: pa.Table,
    plan: StatsPlan,
    cohorts: Sequence[str],
    dimension_names: Sequence[str],
) -> pa.Table:
    """Roll exact per-cell sums up to the all-units total and to each cohort dimension's
    marginals, and convert to floats once (sum / scale)."""
    totals: dict[tuple[str, str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in cells.to_pylist():
        targets = [(row["arm"], ALL, ALL)]
        targets += [
            (row["arm"], name, str(row[col]))
            for col, name in zip(cohorts, dimension_names, strict=True)
        ]
        for target in targets:
            bucket = totals[target]
            for key, value in row.items():
                if key == "arm" or key in cohorts:
                    continue
                bucket[key] += _to_int(value)
    records: list[dict[str, Any]] = []
    for (arm, dimension, value), sums in sorted(totals.items()):
        for m in plan.metrics:
            record: dict[str, Any] = {
                "metric": m.metric,
                "arm": arm,
                "dimension": dimension,
                "value": value,
                "kind": m.kind,
                "n": int(sums["n"]),
            }
            for moment, parts in MOMENTS:
                name = f"{m.metric}__{moment}"
                record[f"sum_{moment}"] = (
                    float(sums[name] / _moment_scale(plan, m, parts))
                    if name in sums or _present(plan, m, parts)
                    else None
                )
            record["zero_den"] = int(sums[f"{m.metric}__zero_den"]) if m.y is not None else None
            records.append(record)
    return pa.Table.from_pylist(records, schema=RESULT_SCHEMA)


def _present(plan: StatsPlan, m: MetricVariables, parts: tuple[str, ...]) -> bool:
    needs_y = any(p in ("y", "d") for p in parts)
    needs_pre = any(p in ("c", "d") for p in parts)
    return (not needs_y or m.y is not None) and (not needs_pre or bool(plan.pre_period_days))


RESULT_SCHEMA = pa.schema(
    [
        pa.field("metric", pa.string()),
        pa.field("arm", pa.string()),
        pa.field("dimension", pa.string()),
        pa.field("value", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("n", pa.int64()),
        *[pa.field(f"sum_{m}", pa.float64()) for m in MOMENT_NAMES],
        pa.field("zero_den", pa.int64()),
    ]
)


def analysed_units(exposed: ir.Table) -> ir.Table:
    """The analysed population: units exposed to exactly one arm."""
    return exposed.filter(exposed.n_arms == 1)


def cohort_columns(dimensions: Sequence[str]) -> list[str]:
    return [f"d{i}" for i in range(len(dimensions))]


def compute_from_units(
    per_unit: ir.Table,
    units: ir.Table,
    plan: StatsPlan,
    *,
    experiment: str,
    summary: ExposureSummary,
    dimensions: Sequence[str],
    max_cohort_values: int,
) -> UnitStats:
    """Moments query + roll-up, shared by the full and the incremental paths."""
    cohorts = cohort_columns(dimensions)
    kept = top_cohort_values(units, cohorts, max_cohort_values)
    cells = moments_expr(per_unit, units, plan, cohorts, kept).to_pyarrow()
    table = collect(cells, plan, cohorts, dimensions)
    return UnitStats(experiment, summary, table, tuple(dimensions))


def unit_stats(
    events: ir.Table,
    experiment: str,
    metrics: Sequence[MetricBase],
    *,
    dimensions: Sequence[str] = (),
    analysis_window: timedelta | None = None,
    pre_period_days: int | None = None,
    unit: str = "user",
    sources: Sequence[ExposureSource] = (DEFAULT_SOURCE,),
    max_cohort_values: int = 20,
) -> UnitStats:
    """Sufficient statistics of ``metrics`` for ``experiment``'s exposed units.

    ``dimensions`` are cohort fields read from each unit's first exposure event (e.g.
    ``locale``, ``device``, ``context.traits.tenure``); each keeps its ``max_cohort_values``
    most common values, the rest become ``(other)``. ``pre_period_days`` enables CUPED
    covariates (each metric's own value over that many days before the exposure day).
    """
    if unit not in UNIT_COLUMNS and "." not in unit:
        raise UnitStatsError(f"unit must be one of {sorted(UNIT_COLUMNS)} or a field, got {unit!r}")
    plan = plan_metrics(
        metrics, analysis_window=analysis_window, pre_period_days=pre_period_days, unit=unit
    )
    exposed = resolve_exposures(events, experiment, sources=sources, dimensions=dimensions)
    exposed = exposed.cache()  # read by three queries: resolve the exposures once
    summary = summarize(exposed, experiment)
    units = analysed_units(exposed)
    per_unit = per_unit_components(events, units, plan)
    return compute_from_units(
        per_unit,
        units,
        plan,
        experiment=experiment,
        summary=summary,
        dimensions=dimensions,
        max_cohort_values=max_cohort_values,
    )
