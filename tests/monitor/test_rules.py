"""Rules on hand-made ticks: sustained thresholds, cohort-stratified scope, trend, growth."""

from __future__ import annotations

import numpy as np
import pytest

from tripwire.monitor.definitions import RuleSpec
from tripwire.monitor.detectors import DetectorBank, DetectorConfig, TickResult
from tripwire.monitor.rules import Clear, RuleBank, Trigger

BANK = DetectorBank(DetectorConfig(), 3)


def tick(ts: int, values: list[float]) -> TickResult:
    y = np.array(values, dtype=float)
    zeros = np.zeros(3)
    return TickResult(
        ts,
        y,
        y,
        y,
        y,
        zeros,
        zeros,
        zeros + 5,
        np.zeros(3, bool),
        np.zeros(3, bool),
        np.zeros(3, np.int8),
    )


def run(
    rule: dict, rows: list[list[float]], step: int = 60, volume: float = 10.0
) -> list[Trigger | Clear]:
    bank = RuleBank([RuleSpec.model_validate(rule)], 3, step)
    out: list[Trigger | Clear] = []
    for i, row in enumerate(rows):
        vol = np.full(3, volume)
        out += bank.update(tick(i * step, row), BANK, vol, np.array(row) * vol, vol)
    return out


def test_threshold_must_hold_for_the_whole_window() -> None:
    rule = {"name": "p99", "severity": "P1", "above": 10.0, "for": "5m", "resolve_after": "3m"}
    # series 0 breaches 4 minutes, dips, then 5 minutes; series 2 never
    rows = [[11, 0, 0]] * 4 + [[9, 0, 0]] + [[12, 0, 0]] * 5 + [[1, 0, 0]] * 4
    out = run(rule, rows)
    triggers = [o for o in out if isinstance(o, Trigger)]
    assert [(t.series, t.timestamp, t.onset) for t in triggers] == [(0, 9 * 60, 5 * 60)]
    assert triggers[0].observed == 12 and triggers[0].direction == 1
    clears = [o for o in out if isinstance(o, Clear)]
    assert [(c.series, c.timestamp, c.last_true) for c in clears] == [(0, 12 * 60, 9 * 60)]


def test_thin_points_break_a_streak() -> None:
    rule = {"name": "low", "severity": "P3", "below": 0.7, "for": "3m", "min_volume": 20}
    assert run(rule, [[0.5, 0.9, 0.9]] * 5, volume=10) == []
    assert len(run(rule, [[0.5, 0.9, 0.9]] * 5, volume=20)) == 1


def test_cohort_stratified_scope() -> None:
    rows = [[0.05, 0.30, 0.02]] * 3  # the aggregate is fine, segment 1 breaches
    aggregate = {"name": "a", "severity": "P2", "above": 0.2, "scope": "aggregate"}
    segments = {"name": "s", "severity": "P2", "above": 0.2, "scope": "segments"}
    assert run(aggregate, rows) == []
    assert [t.series for t in run(segments, rows) if isinstance(t, Trigger)] == [1]


def test_trend_three_periods_in_a_row() -> None:
    rule = {"name": "t", "severity": "P4", "trend": "down", "periods": 3, "period": "1h"}
    hourly = [0.30, 0.29, 0.28, 0.27, 0.27]  # three declines, then flat
    rows = [[v, 0.3, 0.3] for v in hourly for _ in range(60)] + [[0.3, 0.3, 0.3]]
    triggers = [o for o in run(rule, rows) if isinstance(o, Trigger)]
    assert [(t.series, t.timestamp // 3600) for t in triggers] == [(0, 4)]
    assert triggers[0].observed == pytest.approx(0.27) and triggers[0].expected == pytest.approx(
        0.28
    )


def test_growth_of_a_segment() -> None:
    rule = {"name": "g", "severity": "P4", "growth": 0.5, "period": "1h", "scope": "segments"}
    bank = RuleBank([RuleSpec.model_validate(rule)], 3, 60)
    out: list[Trigger | Clear] = []
    for i in range(181):
        vol = np.array([100.0, 10.0 if i < 60 else 20.0, 10.0])
        out += bank.update(tick(i * 60, [1, 1, 1]), BANK, vol, vol, vol)
    assert [(t.series, t.timestamp // 3600) for t in out if isinstance(t, Trigger)] == [(1, 2)]
