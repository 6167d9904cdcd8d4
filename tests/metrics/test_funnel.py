"""Ordered funnels against a pure-Python reference (greedy earliest ordered match)."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tripwire.metrics.definitions import FunnelMetric, parse_metric
from tripwire.metrics.timeseries import Query, timeseries
from tripwire.store.engine import connect_lake
from tripwire.store.lake import write_events

T0 = datetime(2026, 11, 2, tzinfo=UTC)
STEPS = ["Voice Utterance", "Cart Updated", "Payment Authorized", "Order Completed"]


def _events(seed: int) -> list[dict[str, Any]]:
    """Sessions with random subsets of steps in random order, repeats and noise events."""
    rng = random.Random(seed)
    events = []
    for s in range(150):
        user = f"u{s % 40}"
        locale = rng.choice(["en-US", "en-GB", "ja-JP"])
        start = T0 + timedelta(minutes=rng.randrange(2 * 24 * 60))
        names = [n for n in STEPS if rng.random() < 0.8]
        if rng.random() < 0.3:
            rng.shuffle(names)  # out-of-order steps must not count as progress
        if rng.random() < 0.2:
            names.append(rng.choice(STEPS))  # a repeated step
        names.insert(rng.randrange(len(names) + 1), "Turn Completed")  # noise
        moment = start
        for name in names:
            moment += timedelta(seconds=rng.choice([0, 1, 30, 400]))
            events.append(
                {
                    "messageId": uuid.uuid4().hex,
                    "type": "track",
                    "event": name,
                    "userId": user,
                    "timestamp": moment.isoformat(),
                    "properties": {"session_id": f"s{s}", "channel": rng.choice(["voice", "chat"])},
                    "context": {"locale": locale},
                }
            )
    return events


def _reference(
    metric: FunnelMetric, events: list[dict[str, Any]], by_day: bool
) -> dict[tuple, list[int]]:
    """Per (day?, locale) slice: groups reaching each step."""
    groups: dict[str, list[tuple[datetime, str, str]]] = defaultdict(list)
    for e in events:
        key = e["properties"]["session_id"] if metric.within == "session" else e["userId"]
        ts = datetime.fromisoformat(e["timestamp"])
        groups[key].append((ts, e["event"], e["context"]["locale"]))
    counts: dict[tuple, list[int]] = defaultdict(lambda: [0] * len(metric.steps))
    for rows in groups.values():
        rows.sort(key=lambda r: r[0])
        firsts = [r for r in rows if r[1] in metric.steps[0].events]
        if not firsts:
            continue
        t_start, _, locale = firsts[0]
        slice_key = (
            (t_start.replace(hour=0, minute=0, second=0, microsecond=0),) if by_day else ()
        ) + (locale,)
        counts[slice_key][0] += 1
        reached = t_start
        for i, step in enumerate(metric.steps[1:], start=1):
            later = [
                r[0]
                for r in rows
                if r[1] in step.events
                and r[0] >= reached
                and (metric.within == "session" or r[0] <= t_start + metric.within)
            ]
            if not later:
                break
            reached = min(later)
            counts[slice_key][i] += 1
    return counts


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[dict[str, Any]]]:
    events = _events(seed=5)
    path = tmp_path_factory.mktemp("funnel")
    write_events(path, events)
    return connect_lake(path), events


@pytest.mark.parametrize("within", ["session", "10m"])
def test_funnel_counts_match_reference(
    world: tuple[Any, list[dict[str, Any]]], within: str
) -> None:
    backend, events = world
    metric = parse_metric({"name": "f", "type": "funnel", "steps": STEPS, "within": within})
    assert isinstance(metric, FunnelMetric)
    result = timeseries(backend, [metric], Query(grain="day", dimensions=("locale",)))["f"].table
    expected = _reference(metric, events, by_day=True)
    got: dict[tuple, list[int]] = defaultdict(lambda: [0] * len(STEPS))
    for row in result.to_pylist():
        got[(row["bucket"], row["locale"])][row["step"] - 1] = row["entered"]
    assert dict(got) == dict(expected)


def test_conversions_and_stops_are_consistent(world: tuple[Any, list[dict[str, Any]]]) -> None:
    backend, events = world
    metric = parse_metric({"name": "f", "type": "funnel", "steps": STEPS})
    table = timeseries(backend, [metric], Query(grain=None))["f"].table
    rows = table.to_pylist()
    expected = [0] * len(STEPS)
    for counts in _reference(metric, events, by_day=False).values():  # type: ignore[arg-type]
        expected = [a + b for a, b in zip(expected, counts, strict=True)]
    assert [r["entered"] for r in rows] == expected
    assert [r["step_name"] for r in rows] == STEPS
    assert rows[0]["step_conversion"] == 1.0
    for previous, row in zip(rows, rows[1:], strict=False):
        assert row["step_conversion"] == pytest.approx(row["entered"] / previous["entered"])
        assert row["overall_conversion"] == pytest.approx(row["entered"] / rows[0]["entered"])
        assert previous["stopped"] == previous["entered"] - row["entered"]
    assert rows[-1]["stopped"] == rows[-1]["entered"]
    assert sum(r["stopped"] for r in rows) == rows[0]["entered"]


def test_step_predicates_and_empty_range(world: tuple[Any, list[dict[str, Any]]]) -> None:
    backend, events = world
    metric = parse_metric(
        {
            "name": "voice",
            "type": "funnel",
            "steps": [
                {
                    "name": "voice utterance",
                    "events": ["Voice Utterance"],
                    "where": {"properties.channel": "voice"},
                },
                "Order Completed",
            ],
        }
    )
    rows = timeseries(backend, [metric], Query(grain=None))["voice"].table.to_pylist()
    sessions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        sessions[e["properties"]["session_id"]].append(e)
    first = 0
    both = 0
    for evs in sessions.values():
        evs.sort(key=lambda e: e["timestamp"])
        starts = [
            e["timestamp"]
            for e in evs
            if e["event"] == "Voice Utterance" and e["properties"]["channel"] == "voice"
        ]
        if starts:
            first += 1
            both += any(
                e["event"] == "Order Completed" and e["timestamp"] >= starts[0] for e in evs
            )
    assert [r["entered"] for r in rows] == [first, both]
    assert rows[0]["step_name"] == "voice utterance" and rows[1]["step_name"] == "Order Completed"
    empty = timeseries(
        backend,
        [metric],
        Query(
            grain="hour",
            start=datetime(2030, 1, 1, tzinfo=UTC),
            end=datetime(2030, 1, 2, tzinfo=UTC),
        ),
    )["voice"]
    assert empty.is_empty and "step_conversion" in empty.table.column_names


def test_zero_entries_give_null_conversion_not_nan(tmp_path: Path) -> None:
    write_events(
        tmp_path,
        [
            {
                "messageId": "m1",
                "type": "track",
                "event": "Cart Updated",
                "userId": "u",
                "timestamp": T0.isoformat(),
                "properties": {"session_id": "s"},
            }
        ],
    )
    metric = parse_metric(
        {"name": "f", "type": "funnel", "steps": ["Voice Utterance", "Cart Updated"]}
    )
    result = timeseries(connect_lake(tmp_path), [metric], Query(grain=None))["f"]
    rows = result.table.to_pylist()
    assert [r["entered"] for r in rows] == [0, 0]
    assert [r["step_conversion"] for r in rows] == [None, None]  # 0/0 is null, not NaN
    assert result.is_empty
