"""Sequential looks from per-day partial aggregates equal full recomputations exactly."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from tripwire.experiments.analysis import (
    _end_of,
    analyze,
    analyze_incremental,
    incremental_spec,
)
from tripwire.experiments.decision import decide_analysis
from tripwire.experiments.spec import parse_spec
from tripwire.metrics.definitions import parse_metric
from tripwire.metrics.exposures import exposure_sources
from tripwire.metrics.incremental import IncrementalStats
from tripwire.metrics.unit_stats import unit_stats
from tripwire.store.engine import connect_lake, events_table
from tripwire.store.lake import write_events

from ..metrics import unit_world as UW

METRICS = {
    m["name"]: parse_metric(m)
    for m in [
        {"name": "ordered", "type": "proportion", "events": ["Order Completed"]},
        {"name": "revenue", "type": "mean", "per": "unit", "events": ["Order Completed"],
         "value": "properties.revenue"},
        {"name": "ctr", "type": "ratio", "numerator": {"events": ["Recommendation Clicked"]},
         "denominator": {"events": ["Session Started"]}},
        {"name": "latency", "type": "mean", "per": "event", "events": ["Turn Completed"],
         "value": "properties.latency_ms"},
    ]
}  # fmt: skip
LOOKS = [date(2026, 3, 5), date(2026, 3, 7), date(2026, 3, 9), date(2026, 3, 11)]
SPEC = parse_spec(
    {
        "name": "exp",
        "arms": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}],
        "primary": {"metric": "ordered", "mde": "10%"},
        "secondary": ["revenue", "ctr"],
        "guardrails": [
            {"metric": "latency", "harm": "increase", "threshold": "5%", "cohorts": ["locale"]}
        ],
        "cohorts": ["locale", "device"],
        "cuped": {"pre_period": "2d"},
        "analysis_window": "5d",
        "sequential": {"looks": [str(d) for d in LOOKS], "spending": "obf"},
    }
)
SOURCES = tuple(exposure_sources(UW.MAPPING))


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("looks") / "lake"
    world = UW.build(seed=13, users=160, days=12)
    for day in sorted({e["timestamp"][:10] for e in world.envelopes}):
        write_events(root, [e for e in world.envelopes if e["timestamp"][:10] == day], file_id=day)
    return root


def test_partials_up_to_a_look_equal_a_full_recompute_at_that_look(
    lake: Path, tmp_path: Path
) -> None:
    state = IncrementalStats(tmp_path / "data", lake, incremental_spec(SPEC, METRICS, SOURCES))
    state.refresh()
    events = events_table(connect_lake(lake))
    inc = incremental_spec(SPEC, METRICS, SOURCES)
    seen_units = []
    for day in [*LOOKS, LOOKS[0] - timedelta(days=3)]:
        expected = unit_stats(
            events.filter(events.timestamp < _end_of(day)), "exp", inc.metrics,
            dimensions=inc.dimensions, analysis_window=inc.analysis_window,
            pre_period_days=inc.pre_period_days, sources=SOURCES,
        )  # fmt: skip
        got = state.result(until=day)
        assert got.exposures == expected.exposures, day
        assert got.table.equals(expected.table), f"look {day}: partials differ from full"
        seen_units.append(sum(got.exposures.units_per_arm.values()))
    assert seen_units[:4] == sorted(seen_units[:4]) and seen_units[0] < seen_units[3]


def test_incremental_analysis_equals_the_lake_analysis_and_refreshes_only_new_days(
    lake: Path, tmp_path: Path
) -> None:
    events = events_table(connect_lake(lake))
    full = analyze(events, SPEC, METRICS, at=LOOKS[-1], sources=SOURCES)
    state = IncrementalStats(tmp_path / "data", lake, incremental_spec(SPEC, METRICS, SOURCES))
    steps: list[str] = []
    fast = analyze_incremental(state, SPEC, METRICS, at=LOOKS[-1], progress=steps.append)
    assert len(full.looks) == len(fast.looks) == 4
    for a, b in zip(full.looks, fast.looks, strict=True):
        assert a.look_date == b.look_date
        for x, y in zip((*a.primary, *a.secondary), (*b.primary, *b.secondary), strict=True):
            assert x.metric == y.metric
            assert repr(x.comparison) == repr(y.comparison)  # repr: NaN equals NaN
        assert repr(a.sequential) == repr(b.sequential)
        assert repr(a.guardrails) == repr(b.guardrails)
        assert repr(a.validity) == repr(b.validity)
    assert decide_analysis(full).verdict == decide_analysis(fast).verdict
    assert steps[0] == "refreshing per-day partial aggregates"
    # nothing new in the lake: the next analysis scans nothing
    assert state.refresh().new_files == ()


def _full_at(lake: Path, day: date) -> Any:
    events = events_table(connect_lake(lake))
    inc = incremental_spec(SPEC, METRICS, SOURCES)
    return unit_stats(
        events.filter(events.timestamp < _end_of(day)), "exp", inc.metrics,
        dimensions=inc.dimensions, analysis_window=inc.analysis_window,
        pre_period_days=inc.pre_period_days, sources=SOURCES,
    )  # fmt: skip


def test_stored_past_looks_are_reused_until_late_data_lands_on_or_before_them(
    tmp_path: Path,
) -> None:
    lake = tmp_path / "lake"
    world = UW.build(seed=17, users=100, days=9)
    look = LOOKS[0]
    held = [e for i, e in enumerate(world.envelopes) if e["timestamp"][:10] == str(look) and i % 4]
    first = [e for e in world.envelopes if e["timestamp"][:10] <= str(look + timedelta(days=1))]
    write_events(lake, [e for e in first if e not in held], file_id="a")
    state = IncrementalStats(tmp_path / "data", lake, incremental_spec(SPEC, METRICS, SOURCES))
    state.refresh()

    def stored() -> set[str]:
        return set(json.loads((state.dir / "manifest.json").read_text()).get("looks", {}))

    before = state.result(until=look)  # a past look: merged from the partials, then stored
    assert str(look) in stored()
    assert before.table.equals(_full_at(lake, look).table)
    # a later day lands: the stored look stays and is what result() returns
    write_events(lake, [e for e in world.envelopes if e not in first], file_id="b")
    assert state.refresh().new_files and str(look) in stored()
    again = state.result(until=look)
    assert again.exposures == before.exposures and again.table.equals(before.table)
    # late events of the look's day arrive: the stored look is dropped and recomputed
    write_events(lake, held, file_id="late")
    assert state.refresh().new_files and str(look) not in stored()
    expected = _full_at(lake, look)
    got = state.result(until=look)
    assert got.exposures == expected.exposures and got.table.equals(expected.table)
    assert not got.table.equals(before.table)
    final = state.result()  # the running totals after all of it
    assert final.table.equals(_full_at(lake, date(2026, 12, 31)).table)
