"""Retention against a pure-Python reference: first seen/first exposure, windows, censoring."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tripwire.metrics.definitions import RetentionMetric, parse_metric
from tripwire.metrics.timeseries import Query, timeseries
from tripwire.store.engine import connect_lake
from tripwire.store.lake import write_events

T0 = datetime(2026, 11, 2, tzinfo=UTC)
DAYS = 30


def _events(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events = []
    for u in range(120):
        first = T0 + timedelta(minutes=rng.randrange(DAYS * 24 * 60))
        moments = [first]
        for _ in range(rng.randint(0, 6)):
            moments.append(first + timedelta(hours=rng.uniform(0.1, 24 * 20)))
        if rng.random() < 0.3:  # exposed some time after first seen
            exposed = first + timedelta(hours=rng.uniform(0, 48))
            events.append(
                _event("$exposure", f"u{u}", exposed, {"experiment": "x", "variant": "a"})
            )
        for moment in moments:
            if moment < T0 + timedelta(days=DAYS):
                name = rng.choice(["Session Started", "Turn Completed"])
                events.append(_event(name, f"u{u}", moment, {"device": rng.choice(["web", "app"])}))
    return events


def _event(name: str, user: str, moment: datetime, props: dict[str, Any]) -> dict[str, Any]:
    return {
        "messageId": uuid.uuid4().hex,
        "type": "track",
        "event": name,
        "userId": user,
        "timestamp": moment.isoformat(),
        "properties": props,
        "context": {"locale": "ja-JP" if user.endswith(("1", "2", "3")) else "en-US"},
    }


def _reference(
    metric: RetentionMetric,
    events: list[dict[str, Any]],
    data_end: datetime,
    start: datetime | None = None,
    end: datetime | None = None,
) -> dict[tuple, tuple[int, int]]:
    """(retained, eligible) per (cohort day, locale of the start event)."""

    def matches(e: dict[str, Any], names: list[str]) -> bool:
        return not names or e["event"] in names

    per_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        per_user[e["userId"]].append(e)
    a, b = (timedelta(days=d) for d in metric.days)
    out: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for rows in per_user.values():
        rows = sorted(rows, key=lambda e: e["timestamp"])
        starts = [e for e in rows if matches(e, metric.start.events)]
        if not starts:
            continue
        t0 = datetime.fromisoformat(starts[0]["timestamp"])
        if t0 + b > data_end or (start and t0 < start) or (end and t0 >= end):
            continue
        key = (
            t0.replace(hour=0, minute=0, second=0, microsecond=0),
            starts[0]["context"]["locale"],
        )
        out[key][1] += 1
        returned = any(
            t0 < ts and t0 + a <= ts < t0 + b
            for e in rows
            if matches(e, metric.returning.events)
            for ts in [datetime.fromisoformat(e["timestamp"])]
        )
        out[key][0] += returned
    return {k: (v[0], v[1]) for k, v in out.items()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[dict[str, Any]]]:
    events = _events(seed=9)
    path = tmp_path_factory.mktemp("retention")
    write_events(path, events)
    return connect_lake(path), events


CASES = [
    {"name": "week2", "type": "retention", "days": [7, 14]},
    {
        "name": "return7",
        "type": "retention",
        "days": [0, 7],
        "start": {"events": ["Session Started"]},
        "returning": {"events": ["Session Started"]},
    },
    {
        "name": "exposed_d1_3",
        "type": "retention",
        "days": [1, 3],
        "start": {"events": ["$exposure"]},
    },
]


@pytest.mark.parametrize("definition", CASES, ids=[c["name"] for c in CASES])
def test_retention_matches_reference(
    world: tuple[Any, list[dict[str, Any]]], definition: dict[str, Any]
) -> None:
    backend, events = world
    metric = parse_metric(definition)
    assert isinstance(metric, RetentionMetric)
    last = max(datetime.fromisoformat(e["timestamp"]) for e in events) + timedelta(microseconds=1)
    table = timeseries(backend, [metric], Query(grain="day", dimensions=("locale",)))[
        metric.name
    ].table
    got = {
        (r["bucket"], r["locale"]): (int(r["numerator"]), int(r["denominator"]))
        for r in table.to_pylist()
    }
    expected = _reference(metric, events, last)
    assert got == expected
    assert sum(e for _, e in expected.values()) > 10  # the case exercises real cohorts
    for row in table.to_pylist():
        assert row["value"] == pytest.approx(row["numerator"] / row["denominator"])


@pytest.mark.parametrize("definition", CASES, ids=[c["name"] for c in CASES])
def test_range_selects_cohorts_and_censors_by_range_end(
    world: tuple[Any, list[dict[str, Any]]], definition: dict[str, Any]
) -> None:
    """A bounded range: only start events in the range are grouped per unit and units
    with an earlier start event are dropped; the result must still be the reference."""
    backend, events = world
    metric = parse_metric(definition)
    assert isinstance(metric, RetentionMetric)
    start, end = T0 + timedelta(days=2), T0 + timedelta(days=20)
    table = timeseries(
        backend, [metric], Query(grain="day", dimensions=("locale",), start=start, end=end)
    )[metric.name].table
    got = {
        (r["bucket"], r["locale"]): (int(r["numerator"]), int(r["denominator"]))
        for r in table.to_pylist()
    }
    # with an explicit end, data after it is not observed: windows must close by `end`
    observed = [e for e in events if datetime.fromisoformat(e["timestamp"]) < end]
    assert got == _reference(metric, observed, end, start, end)
    assert all(bucket + timedelta(days=metric.days[1]) <= end for bucket, _ in got)
    assert sum(e for _, e in got.values()) > 5  # units first seen before `start` are out


def test_no_eligible_cohort_is_an_empty_result(world: tuple[Any, list[dict[str, Any]]]) -> None:
    backend, _ = world
    metric = parse_metric({"name": "long", "type": "retention", "days": [60, 90]})
    result = timeseries(backend, [metric], Query(grain="day"))["long"]
    assert result.is_empty and result.table.column_names == [
        "bucket",
        "numerator",
        "denominator",
        "value",
    ]


@pytest.mark.parametrize("definition", CASES, ids=[c["name"] for c in CASES])
def test_range_from_before_the_data_matches_the_reference(
    world: tuple[Any, list[dict[str, Any]]], definition: dict[str, Any]
) -> None:
    """A range starting before the lake's first event (the catalog benchmark's case: no
    earlier start event to drop, every window event in the range)."""
    backend, events = world
    metric = parse_metric(definition)
    assert isinstance(metric, RetentionMetric)
    start, end = T0 - timedelta(days=1), T0 + timedelta(days=DAYS)
    query = Query(grain="day", dimensions=("locale",), start=start, end=end)
    result = timeseries(backend, [metric], query)[metric.name]
    got = {
        (r["bucket"], r["locale"]): (int(r["numerator"]), int(r["denominator"]))
        for r in result.table.to_pylist()
    }
    observed = [e for e in events if datetime.fromisoformat(e["timestamp"]) < end]
    assert got == _reference(metric, observed, end, start, end)
    assert sum(e for _, e in got.values()) > 10
