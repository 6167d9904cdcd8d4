"""Exposure resolution: which arm each unit of an experiment is in, and since when.

Exposures come from tripwire's own ``$exposure`` events (``properties.experiment``,
``properties.variant``, ``properties.unit_id`` defaulting to ``userId``) and from
*exposure mappings* in ``tripwire.yaml`` for teams whose flagging tool already logs its
own event, e.g.::

    exposure_mappings:
      - event: Experiment Viewed
        experiment: properties.experiment_id   # a field reference (bare names = properties.x)
        variant: properties.variation_id
        unit: user_id                          # optional, default user_id

Rules (the same on every engine, computed inside it):

* the **first** exposure (earliest timestamp) defines the unit's arm and its start time
  ``t0``; the unit's cohort values (e.g. locale) are read from that first exposure event;
* a unit exposed to **more than one arm** is counted, excluded from the analysis, and
  reported (:class:`ExposureSummary`);
* ties (several exposures at the same first timestamp) are broken deterministically:
  arms by the multi-arm rule above, cohort values by the smallest value.

The reduction from exposure rows to units (:func:`first_exposures`) only needs per
(unit, arm) minima, so it gives the same answer on raw events and on stored partial
aggregates (see :mod:`tripwire.metrics.incremental`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import ibis
import ibis.expr.types as ir

from tripwire.store.engine import UnknownField, column_for, resolve_field

EXPOSURE_EVENT = "$exposure"
#: Column names of an exposure-rows table (before the per-unit reduction).
UNIT, ARM, TS = "unit_id", "arm", "exposed_at"
#: Placeholder for a cohort dimension that the first exposure event does not carry.
MISSING = "(none)"


class ExposureConfigError(ValueError):
    """An exposure mapping in ``tripwire.yaml`` that cannot be used (names the entry)."""


@dataclass(frozen=True)
class ExposureSource:
    """One event that records exposures and the fields holding experiment, arm and unit.

    Field references resolve like metric fields (``properties.x``, lake columns); a bare
    name that is not a lake column means ``properties.<name>``.
    """

    event: str
    experiment: str
    variant: str
    unit: str
    unit_fallback: str | None = None


DEFAULT_SOURCE = ExposureSource(
    event=EXPOSURE_EVENT,
    experiment="properties.experiment",
    variant="properties.variant",
    unit="properties.unit_id",
    unit_fallback="user_id",
)


def _field_ref(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ExposureConfigError(
            f"tripwire.yaml: {where}.{key} must be a field name, got {value!r}"
        )
    value = value.strip()
    return value if "." in value or value in _LAKE_COLUMNS else f"properties.{value}"


_LAKE_COLUMNS = {"user_id", "anonymous_id", "session_id", "message_id", "locale", "device"}


def exposure_sources(mappings: Sequence[Mapping[str, Any]] | None) -> list[ExposureSource]:
    """``$exposure`` plus every valid mapping from ``tripwire.yaml`` (``exposure_mappings``).

    >>> [s.event for s in exposure_sources([{"event": "Experiment Viewed",
    ...     "experiment": "experiment_id", "variant": "variation_id"}])]
    ['$exposure', 'Experiment Viewed']
    >>> exposure_sources([{"event": "X"}])
    Traceback (most recent call last):
    ...
    tripwire.metrics.exposures.ExposureConfigError: tripwire.yaml: exposure_mappings[0] lacks experiment, variant
    """
    sources = [DEFAULT_SOURCE]
    for index, mapping in enumerate(mappings or []):
        where = f"exposure_mappings[{index}]"
        if not isinstance(mapping, Mapping):
            raise ExposureConfigError(f"tripwire.yaml: {where} must be a mapping, got {mapping!r}")
        missing = [k for k in ("event", "experiment", "variant") if k not in mapping]
        if missing:
            raise ExposureConfigError(f"tripwire.yaml: {where} lacks {', '.join(missing)}")
        unknown = set(mapping) - {"event", "experiment", "variant", "unit"}
        if unknown:
            raise ExposureConfigError(
                f"tripwire.yaml: {where} has unknown keys {sorted(unknown)} "
                "(allowed: event, experiment, variant, unit)"
            )
        event = mapping["event"]
        if not isinstance(event, str) or not event:
            raise ExposureConfigError(f"tripwire.yaml: {where}.event must be an event name")
        sources.append(
            ExposureSource(
                event=event,
                experiment=_field_ref(mapping["experiment"], where, "experiment"),
                variant=_field_ref(mapping["variant"], where, "variant"),
                unit=_field_ref(mapping.get("unit", "user_id"), where, "unit"),
            )
        )
    return sources


def _string(table: ir.Table, ref: str) -> ir.StringValue:
    return resolve_field(table, ref, "string").cast("string")  # type: ignore[no-any-return]


def _optional(table: ir.Table, ref: str) -> ir.StringValue | None:
    """The field as a string column, or None when the lake has never seen it.

    A top-level property or trait that the lake has not flattened into a column has never
    been sent (every top-level scalar is flattened), so no JSON extraction is attempted
    for it; deeper paths (``context.a.b``) are read from the raw JSON.
    """
    if column_for(ref, set(table.columns)) is None and _flattenable(ref):
        return None
    try:
        return _string(table, ref)
    except UnknownField:
        return None


def _flattenable(ref: str) -> bool:
    head, _, rest = ref.partition(".")
    if head in ("properties", "traits"):
        return "." not in rest
    return head == "context" and rest.startswith("traits.") and rest.count(".") == 1


def exposure_rows(
    events: ir.Table,
    experiment: str,
    sources: Sequence[ExposureSource] = (DEFAULT_SOURCE,),
    dimensions: Sequence[str] = (),
) -> ir.Table:
    """Every exposure to ``experiment``: ``unit_id, arm, exposed_at`` and one column per
    cohort dimension (named by its position, ``d0``, ``d1``, …; ``(none)`` when absent)."""
    parts: list[ir.Table] = []
    for source in sources:
        rows = events.filter(events.event == source.event)
        experiment_col = _optional(rows, source.experiment)
        variant_col = _optional(rows, source.variant)
        if experiment_col is None or variant_col is None:
            continue  # the lake has never seen this field: no exposures from this source
        unit_col = _optional(rows, source.unit)
        if source.unit_fallback is not None:
            fallback = _string(rows, source.unit_fallback)
            unit_col = fallback if unit_col is None else unit_col.coalesce(fallback)
        if unit_col is None:
            continue
        columns: dict[str, ir.Value] = {
            UNIT: unit_col,
            ARM: variant_col,
            TS: rows.timestamp,
        }
        for i, ref in enumerate(dimensions):
            value = _optional(rows, ref)
            columns[f"d{i}"] = ibis.literal(MISSING) if value is None else value.fill_null(MISSING)
        selected = rows.filter(experiment_col == experiment).select(**columns)
        parts.append(selected.filter(selected[UNIT].notnull() & selected[ARM].notnull()))
    if not parts:
        schema = {UNIT: "string", ARM: "string", TS: "timestamp('UTC')"}
        schema |= {f"d{i}": "string" for i in range(len(dimensions))}
        empty = events.limit(0)
        return empty.select(**{name: ibis.null().cast(kind) for name, kind in schema.items()})
    return parts[0] if len(parts) == 1 else ibis.union(*parts, distinct=False)


def first_per_unit_arm(rows: ir.Table, n_dimensions: int) -> ir.Table:
    """Per (unit, arm): the earliest exposure and the smallest cohort values at that time.

    Applying it to a union of its own outputs gives the same result as applying it to the
    union of the inputs (it is a minimum), which is what incremental refresh relies on.
    """
    dims = [f"d{i}" for i in range(n_dimensions)]
    if not dims:
        return rows.group_by([UNIT, ARM]).aggregate(**{TS: rows[TS].min()})
    firsts = rows.group_by([UNIT, ARM]).aggregate(**{"__t0": rows[TS].min()})
    joined = rows.inner_join(
        firsts, [rows[UNIT] == firsts[UNIT], rows[ARM] == firsts[ARM], rows[TS] == firsts["__t0"]]
    )
    return joined.group_by([UNIT, ARM]).aggregate(
        **{TS: joined["__t0"].min()}, **{d: joined[d].min() for d in dims}
    )


def first_exposures(rows: ir.Table, n_dimensions: int) -> ir.Table:
    """Per unit: ``arm`` and ``t0`` of the first exposure, ``n_arms``, cohort values.

    ``rows`` are exposure rows or per (unit, arm[, day]) minima (:func:`first_per_unit_arm`,
    incremental partials): ``t0`` is the earliest exposure, ``arm`` and the cohort values
    the smallest among the rows at ``t0``, each on its own (the same as taking, per arm,
    its first exposure and smallest values there, then the smallest among the arms first
    seen at ``t0``). ``n_arms`` is 1 for a unit seen in one arm and 2 for a unit seen in
    two or more (it is only compared with 1); ``arm`` is only meaningful where
    ``n_arms == 1`` (the analysed units).

    Two aggregations, no self-join: per (unit, timestamp) the smallest arm and values
    (plain minima), then per unit the minimum (timestamp, values) row, which is exact as
    a unit has one row per timestamp, and its smallest and largest arm. Measured ~30%
    cheaper (1M exposures: 3.1 → 2.2 CPU-s, same result) than one aggregation with a
    (timestamp, value) minimum per column and a distinct count of arms.
    """
    dims = [f"d{i}" for i in range(n_dimensions)]
    timed = rows.filter(rows[TS].notnull())
    per_instant = timed.group_by([UNIT, TS]).aggregate(
        __arm_min=timed[ARM].min(),
        __arm_max=timed[ARM].max(),
        **{d: timed[d].min() for d in dims},
    )
    # (timestamp, values) pairs compare by timestamp first, unique per unit: the minimum
    # pair is the row of the earliest timestamp
    first = ibis.struct(
        {"t": per_instant[TS], "a": per_instant["__arm_min"], **{d: per_instant[d] for d in dims}}
    ).min()
    per_unit = per_instant.group_by(UNIT).aggregate(
        __first=first,
        t0=per_instant[TS].min(),
        __lo=per_instant["__arm_min"].min(),
        __hi=per_instant["__arm_max"].max(),
    )
    return per_unit.select(
        per_unit[UNIT],
        arm=per_unit["__first"]["a"],
        t0=per_unit.t0,
        n_arms=ibis.ifelse(per_unit["__lo"] == per_unit["__hi"], 1, 2).cast("int64"),
        **{d: per_unit["__first"][d] for d in dims},
    )


@dataclass(frozen=True)
class ExposureSummary:
    """What exposure resolution found: analysed units per arm and the excluded ones."""

    experiment: str
    units_per_arm: dict[str, int]
    multi_arm_units: int
    first_exposure: datetime | None
    last_first_exposure: datetime | None

    @property
    def analysed_units(self) -> int:
        return sum(self.units_per_arm.values())


def _utc(moment: datetime) -> datetime:
    """Engines return UTC instants as aware (DuckDB) or naive UTC (Spark) datetimes."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def summarize(units: ir.Table, experiment: str) -> ExposureSummary:
    """Count analysed units per arm and multi-arm exclusions (one small query)."""
    single = units.n_arms == 1
    arm_label = ibis.ifelse(single, units.arm, ibis.literal("\x00multi"))
    counts = (
        units.group_by(__arm=arm_label)
        .aggregate(__n=units.count(), __first=units.t0.min(), __last=units.t0.max())
        .to_pyarrow()
        .to_pylist()
    )
    per_arm = {r["__arm"]: int(r["__n"]) for r in counts if r["__arm"] != "\x00multi"}
    multi = sum(int(r["__n"]) for r in counts if r["__arm"] == "\x00multi")
    firsts = [_utc(r["__first"]) for r in counts if r["__first"] is not None]
    lasts = [_utc(r["__last"]) for r in counts if r["__last"] is not None]
    return ExposureSummary(
        experiment=experiment,
        units_per_arm=dict(sorted(per_arm.items())),
        multi_arm_units=multi,
        first_exposure=min(firsts) if firsts else None,
        last_first_exposure=max(lasts) if lasts else None,
    )


def resolve_exposures(
    events: ir.Table,
    experiment: str,
    *,
    sources: Sequence[ExposureSource] = (DEFAULT_SOURCE,),
    dimensions: Sequence[str] = (),
) -> ir.Table:
    """Per exposed unit: ``unit_id, arm, t0, n_arms, d0..dk`` (all units, incl. multi-arm).

    Filter ``n_arms == 1`` for the analysed population; :func:`summarize` reports both.
    """
    rows = exposure_rows(events, experiment, sources, dimensions)
    return first_exposures(rows, len(dimensions))
