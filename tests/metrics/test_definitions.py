"""Metric definition models: parsing, shorthands, validation and reference walking."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from tripwire.metrics.definitions import (
    FunnelMetric,
    MeanMetric,
    Predicate,
    RatioMetric,
    RetentionMetric,
    event_names,
    field_refs,
    is_per_unit,
    parse_duration,
    parse_metric,
)


@given(st.integers(min_value=0, max_value=10_000), st.sampled_from(["s", "m", "h", "d", "w"]))
def test_duration_units(amount: int, unit: str) -> None:
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    assert parse_duration(f"{amount}{unit}") == timedelta(seconds=amount * seconds)


@pytest.mark.parametrize("bad", ["7", "d7", "7 days", "", "-1d", True])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_shorthands_expand() -> None:
    metric = parse_metric(
        {
            "name": "m",
            "type": "count",
            "events": "A",
            "where": {"properties.x": 1, "locale": ["a", "b"]},
        }
    )
    assert metric.events == ["A"]
    assert metric.where == [
        Predicate(field="properties.x", op="eq", value=1),
        Predicate(field="locale", op="in", value=["a", "b"]),
    ]
    assert Predicate.model_validate({"field": "x", "op": ">=", "value": 2}).op == "ge"


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ({"name": "m", "type": "sum"}, "value"),
        ({"name": "m", "type": "mean"}, "per-event mean needs a value"),
        ({"name": "1bad", "type": "count"}, "pattern"),
        (
            {"name": "m", "type": "count", "where": [{"field": "x", "op": "is_null", "value": 1}]},
            "takes no value",
        ),
        ({"name": "m", "type": "count", "where": [{"field": "x", "op": "eq"}]}, "single scalar"),
        (
            {"name": "m", "type": "ratio", "numerator": {"agg": "sum"}, "denominator": {}},
            "needs a value field",
        ),
        ({"name": "m", "type": "funnel", "steps": ["A"]}, "at least 2"),
        ({"name": "m", "type": "retention", "days": [3, 3]}, "a < b"),
        ({"name": "m", "type": "retention", "days": [-1, 3]}, ">= 0"),
        ({"name": "m", "type": "quantile", "value": "v", "q": 0}, "greater than 0"),
        (
            {"name": "m", "type": "count", "window": {"start": "7d", "end": "1d"}},
            "must be after start",
        ),
        ({"name": "m", "type": "count", "colour": "red"}, "Extra inputs"),
    ],
)
def test_invalid_definitions(definition: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_metric(definition)


def test_types_and_per_unit() -> None:
    funnel = parse_metric({"name": "f", "type": "funnel", "steps": ["A", "B"], "within": "30m"})
    assert isinstance(funnel, FunnelMetric) and funnel.within == timedelta(minutes=30)
    assert parse_metric({"name": "f", "type": "funnel", "steps": ["A", "B"]}).within == "session"  # type: ignore[attr-defined]
    per_unit = parse_metric({"name": "m", "type": "mean", "per": "unit", "events": "A"})
    assert isinstance(per_unit, MeanMetric) and is_per_unit(per_unit)
    assert not is_per_unit(funnel)
    retention = parse_metric({"name": "r", "type": "retention", "days": [7, 14]})
    assert isinstance(retention, RetentionMetric) and retention.start.events == []


def test_reference_walkers_locate_every_field_and_event() -> None:
    ratio = parse_metric(
        {
            "name": "r",
            "type": "ratio",
            "events": ["A"],
            "unit": "properties.household_id",
            "dimensions": ["locale"],
            "numerator": {
                "events": "B",
                "where": {"properties.ok": True},
                "agg": "sum",
                "value": "properties.v",
            },
            "denominator": {"events": "C", "agg": "distinct", "value": "session_id"},
        }
    )
    assert isinstance(ratio, RatioMetric)
    refs = dict(field_refs(ratio))
    assert refs[("dimensions", 0)] == "locale"
    assert refs[("unit",)] == "properties.household_id"
    assert refs[("numerator", "where", 0, "field")] == "properties.ok"
    assert refs[("numerator", "value")] == "properties.v"
    assert refs[("denominator", "value")] == "session_id"
    assert dict(event_names(ratio)) == {
        ("events", 0): "A",
        ("numerator", "events", 0): "B",
        ("denominator", "events", 0): "C",
    }
