"""Metric definitions: the typed form of what users write in ``metrics/*.yaml``.

One pydantic model per metric type, all sharing :class:`MetricBase` (name, filter, unit,
dimensions, attribution window). A definition says *what* to compute; ``compile`` turns it
into engine expressions and ``loader`` reads YAML into these models with file/line errors.

Field references (``value``, ``dimensions``, predicate ``field``) are strings resolved by
:func:`tripwire.store.engine.resolve_field`: ``properties.x``, ``context.locale``,
``context.traits.x``, or a lake column such as ``locale``, ``device``, ``source``.

>>> m = parse_metric({"name": "orders", "type": "count", "events": ["Order Completed"]})
>>> m.type, m.events, m.unit
('count', ['Order Completed'], 'user')
>>> parse_duration("7d")
datetime.timedelta(days=7)
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)

Scalar = str | int | float | bool

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"

#: Unit keywords and the lake column each stands for. Anything else is a field reference
#: (e.g. ``properties.household_id`` for household-level units).
UNIT_COLUMNS: dict[str, str] = {
    "user": "user_id",
    "anonymous": "anonymous_id",
    "session": "session_id",
}


def parse_duration(value: Any) -> timedelta:
    """Parse ``"90s"``, ``"15m"``, ``"24h"``, ``"7d"``, ``"2w"`` (or seconds as a number)."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '7d' or '24h', got {value!r}")
    if isinstance(value, int | float):
        return timedelta(seconds=float(value))
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"expected a duration like '30m', '24h' or '7d', got {value!r}")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def _as_list(value: Any) -> Any:
    """Let users write a single event name where a list is expected."""
    return [value] if isinstance(value, str) else value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Op = Literal["eq", "ne", "in", "not_in", "gt", "ge", "lt", "le", "is_null", "not_null"]
_OP_ALIASES = {
    "==": "eq",
    "=": "eq",
    "!=": "ne",
    ">": "gt",
    ">=": "ge",
    "<": "lt",
    "<=": "le",
    "not in": "not_in",
}


class Predicate(_Model):
    """``field op value``: e.g. ``{field: properties.intent, op: in, value: [returns]}``."""

    field: str
    op: Op = "eq"
    value: Scalar | list[Scalar] | None = None

    @model_validator(mode="before")
    @classmethod
    def _normalise_op(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("op"), str):
            data = {**data, "op": _OP_ALIASES.get(data["op"], data["op"])}
        return data

    @model_validator(mode="after")
    def _check_value(self) -> Predicate:
        if self.op in ("is_null", "not_null"):
            if self.value is not None:
                raise ValueError(f"op {self.op} takes no value")
        elif self.op in ("in", "not_in"):
            if not isinstance(self.value, list) or not self.value:
                raise ValueError(f"op {self.op} needs a non-empty list value")
        elif self.value is None or isinstance(self.value, list):
            raise ValueError(f"op {self.op} needs a single scalar value")
        return self


def _where_list(value: Any) -> Any:
    """Accept ``where: {field: value, ...}`` (equality, or ``in`` for lists) as shorthand."""
    if isinstance(value, dict):
        return [
            {"field": k, "op": "in" if isinstance(v, list) else "eq", "value": v}
            for k, v in value.items()
        ]
    return value


class EventFilter(_Model):
    """Which events count: names (empty = all events) and property predicates (ANDed)."""

    events: Annotated[list[str], BeforeValidator(_as_list)] = Field(default_factory=list)
    where: Annotated[list[Predicate], BeforeValidator(_where_list)] = Field(default_factory=list)


class Measure(EventFilter):
    """One side of a ratio: ``count`` events, ``sum`` a value, or count ``distinct`` values.

    ``distinct`` counts distinct values of ``value`` (e.g. ``session_id``): sessions that
    did X. For per-unit analysis the field must be nested in the unit (sessions in users).
    """

    agg: Literal["count", "sum", "distinct"] = "count"
    value: str | None = None

    @model_validator(mode="after")
    def _value_needed(self) -> Measure:
        if self.agg in ("sum", "distinct") and not self.value:
            raise ValueError(f"agg {self.agg} needs a value field")
        return self


class AttributionWindow(_Model):
    """Which of a unit's events count, relative to its start (first exposure).

    An event at ``ts`` counts when ``start_time + start <= ts < start_time + end``
    (``end`` omitted: until the end of the analysis period).
    """

    start: Duration = timedelta(0)
    end: Duration | None = None

    @model_validator(mode="after")
    def _ordered(self) -> AttributionWindow:
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"window end ({self.end}) must be after start ({self.start})")
        return self


class MetricBase(EventFilter):
    """Fields every metric has. ``events``/``where`` select the events the metric reads."""

    type: str
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    unit: str = "user"
    dimensions: list[str] = Field(default_factory=list)
    window: AttributionWindow | None = None
    owner: str | None = None
    tags: list[str] = Field(default_factory=list)

    @field_validator("dimensions", mode="before")
    @classmethod
    def _dims_list(cls, value: Any) -> Any:
        return _as_list(value)


class CountMetric(MetricBase):
    """Number of matching events. Per unit: events per unit."""

    type: Literal["count"] = "count"


class SumMetric(MetricBase):
    """Σ ``value`` over matching events (e.g. revenue). Per unit: Σ per unit."""

    type: Literal["sum"] = "sum"
    value: str


class MeanMetric(MetricBase):
    """Mean per event (``per: event``, Σvalue / n events) or per unit (``per: unit``).

    Per unit: each unit's Σ``value`` (or event count when ``value`` is omitted), averaged
    over units, e.g. revenue per user or add-to-carts per user. Units with no matching
    events count as 0 when the population is given (experiments: the exposed units).
    """

    type: Literal["mean"] = "mean"
    per: Literal["event", "unit"] = "event"
    value: str | None = None

    @model_validator(mode="after")
    def _value_needed(self) -> MeanMetric:
        if self.per == "event" and not self.value:
            raise ValueError("a per-event mean needs a value field")
        return self


class ProportionMetric(MetricBase):
    """Share of units that did X (``events``/``where``) among ``population`` units.

    ``population`` omitted: units with any event (in experiments: the exposed units).
    """

    type: Literal["proportion"] = "proportion"
    population: EventFilter | None = None


class RatioMetric(MetricBase):
    """Σ numerator / Σ denominator across units (e.g. clicks per session, conversion).

    The top-level ``events``/``where`` filter applies to both sides. Per-unit components
    (numerator and denominator per unit) are what experiments need for the delta method.
    """

    type: Literal["ratio"] = "ratio"
    numerator: Measure
    denominator: Measure


class QuantileMetric(MetricBase):
    """The ``q``-quantile of ``value`` over matching events (e.g. p95 turn latency).

    Exact (DuckDB ``quantile_cont``, linear interpolation) by default; ``approximate:
    true`` uses the engine's sketch (DuckDB ``approx_quantile``, a t-digest; Spark
    ``percentile_approx``), with rank error typically well under 1% on large data.
    """

    type: Literal["quantile"] = "quantile"
    value: str
    q: float = Field(gt=0, lt=1)
    approximate: bool = False


class FunnelStep(EventFilter):
    """One step: its events (and predicates) and a display name."""

    name: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"events": [data]} if isinstance(data, str) else data

    @property
    def label(self) -> str:
        return self.name or " | ".join(self.events) or "any event"


class FunnelMetric(MetricBase):
    """Ordered steps within a session (``within: session``) or a time window from step 1.

    A group (session, or unit within ``within`` of its first step-1 event) reaches step k
    when it has a step-k event at or after the time it reached step k-1.
    """

    type: Literal["funnel"] = "funnel"
    steps: list[FunnelStep] = Field(min_length=2)
    within: Literal["session"] | Duration = "session"


class RetentionMetric(MetricBase):
    """Units active again ``days: [a, b]`` after their start (first exposure or first seen).

    Start = the unit's first ``start`` event (default: any event = first seen; use
    ``$exposure`` for first exposure). Retained = a ``returning`` event (default: any)
    strictly after the start with elapsed time in ``[a, b)`` days. Only units whose
    window ``start + b days`` ends inside the query range are counted (no censoring bias).
    Week-2 retention: ``days: [7, 14]``.
    """

    type: Literal["retention"] = "retention"
    start: EventFilter = Field(default_factory=EventFilter)
    returning: EventFilter = Field(default_factory=EventFilter)
    days: tuple[float, float]

    @field_validator("days")
    @classmethod
    def _ordered_days(cls, value: tuple[float, float]) -> tuple[float, float]:
        a, b = value
        if a < 0:
            raise ValueError(f"retention days must be >= 0, got a={a}")
        if a >= b:
            raise ValueError(f"retention window needs a < b, got days [{a}, {b}]")
        return value


class DistinctMetric(MetricBase):
    """Number of distinct units with a matching event."""

    type: Literal["distinct"] = "distinct"


Metric = Annotated[
    CountMetric
    | SumMetric
    | MeanMetric
    | ProportionMetric
    | RatioMetric
    | QuantileMetric
    | FunnelMetric
    | RetentionMetric
    | DistinctMetric,
    Field(discriminator="type"),
]

METRIC_TYPES: dict[str, type[MetricBase]] = {
    "count": CountMetric,
    "sum": SumMetric,
    "mean": MeanMetric,
    "proportion": ProportionMetric,
    "ratio": RatioMetric,
    "quantile": QuantileMetric,
    "funnel": FunnelMetric,
    "retention": RetentionMetric,
    "distinct": DistinctMetric,
}

_ADAPTER: TypeAdapter[Any] = TypeAdapter(Metric)


def parse_metric(data: dict[str, Any]) -> MetricBase:
    """Validate one metric mapping (raises ``pydantic.ValidationError``)."""
    metric: MetricBase = _ADAPTER.validate_python(data)
    return metric


def is_per_unit(metric: MetricBase) -> bool:
    """Whether the metric has a per-unit form usable as an experiment outcome.

    count/sum/distinct become per-unit totals, mean per unit, proportion (0/1 per unit),
    ratio (per-unit numerator and denominator). Quantile, funnel and retention are
    population metrics (no per-unit sufficient statistics).
    """
    return isinstance(
        metric,
        CountMetric | SumMetric | DistinctMetric | ProportionMetric | RatioMetric | MeanMetric,
    )


def field_refs(metric: MetricBase) -> list[tuple[tuple[str | int, ...], str]]:
    """Every field reference in a definition with its location (for validation)."""
    refs: list[tuple[tuple[str | int, ...], str]] = []

    def add_filter(prefix: tuple[str | int, ...], flt: EventFilter) -> None:
        for i, predicate in enumerate(flt.where):
            refs.append(((*prefix, "where", i, "field"), predicate.field))

    add_filter((), metric)
    for i, dim in enumerate(metric.dimensions):
        refs.append((("dimensions", i), dim))
    if metric.unit not in UNIT_COLUMNS:
        refs.append((("unit",), metric.unit))
    value = getattr(metric, "value", None)
    if isinstance(value, str):
        refs.append((("value",), value))
    if isinstance(metric, ProportionMetric) and metric.population:
        add_filter(("population",), metric.population)
    if isinstance(metric, RatioMetric):
        for side in ("numerator", "denominator"):
            measure: Measure = getattr(metric, side)
            add_filter((side,), measure)
            if measure.value:
                refs.append(((side, "value"), measure.value))
    if isinstance(metric, FunnelMetric):
        for i, step in enumerate(metric.steps):
            add_filter(("steps", i), step)
    if isinstance(metric, RetentionMetric):
        add_filter(("start",), metric.start)
        add_filter(("returning",), metric.returning)
    return refs


def events_read(metric: MetricBase) -> frozenset[str] | None:
    """The event names a metric can read, or None when it can read any event.

    A superset (filters are ANDed, names are united here): callers use it to load less,
    never to decide what counts. A filter without names reads any event unless the
    top-level ``events`` narrows it; a proportion's population (which the top-level filter
    does not narrow) without names and retention's default start/returning mean "any event".

    >>> sorted(events_read(parse_metric({"name": "o", "type": "count", "events": "Order Completed"})))
    ['Order Completed']
    >>> events_read(parse_metric({"name": "p", "type": "proportion", "events": ["Order Completed"]})) is None
    True
    """
    top = set(metric.events)
    filters: list[EventFilter] = []
    if isinstance(metric, ProportionMetric):
        # the population is not narrowed by the top-level filter: omitted or nameless, it
        # is every unit with any event
        if metric.population is None or not metric.population.events:
            return None
        filters.append(metric.population)
    if isinstance(metric, RatioMetric):
        filters += [metric.numerator, metric.denominator]
    if isinstance(metric, FunnelMetric):
        filters += list(metric.steps)
    if isinstance(metric, RetentionMetric):
        filters += [metric.start, metric.returning]
    if not top and not filters:
        return None
    names = set(top)
    for flt in filters:
        if not flt.events and not top:
            return None
        names |= set(flt.events)
    return frozenset(names)


def event_names(metric: MetricBase) -> list[tuple[tuple[str | int, ...], str]]:
    """Every event name a definition mentions, with its location (for validation)."""
    names: list[tuple[tuple[str | int, ...], str]] = [
        (("events", i), e) for i, e in enumerate(metric.events)
    ]
    sub: list[tuple[tuple[str | int, ...], EventFilter]] = []
    if isinstance(metric, ProportionMetric) and metric.population:
        sub.append((("population",), metric.population))
    if isinstance(metric, RatioMetric):
        sub += [(("numerator",), metric.numerator), (("denominator",), metric.denominator)]
    if isinstance(metric, FunnelMetric):
        sub += [(("steps", i), s) for i, s in enumerate(metric.steps)]
    if isinstance(metric, RetentionMetric):
        sub += [(("start",), metric.start), (("returning",), metric.returning)]
    for prefix, flt in sub:
        names += [((*prefix, "events", i), e) for i, e in enumerate(flt.events)]
    return names
