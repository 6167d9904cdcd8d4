"""Problem definition: regime (onset, end, shape), comparisons and the heatmap table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from tripwire.rca.data import LeafTable
from tripwire.rca.problem import _shape, compare, heatmap_table, locate_regime

T0 = datetime(2026, 11, 7, 6, tzinfo=UTC)


def _starts(n: int) -> list[datetime]:
    return [T0 + i * timedelta(minutes=10) for i in range(n)]


def test_onset_and_recovery_of_a_step_are_found():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1, 144)
    z[70:85] -= 4.0
    regime = locate_regime(_starts(144), z, T0 + timedelta(minutes=10 * 78))
    assert abs((regime.onset - (T0 + timedelta(minutes=700))).total_seconds()) <= 600
    assert regime.recovered_in_data
    assert abs((regime.end - (T0 + timedelta(minutes=850))).total_seconds()) <= 1200
    assert regime.shape == "step"


def test_a_later_deeper_episode_is_not_merged_into_the_regime():
    """A drop that recovered, then (hours later, inside the look-ahead) a deeper one: the
    retrospective look at the first one's end ends its regime at its own recovery."""
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1, 144)
    z[60:75] -= 4.0  # the investigated incident: 10:00 → 12:30
    z[120:138] -= 9.0  # another episode eight hours later
    regime = locate_regime(_starts(144), z, T0 + timedelta(minutes=10 * 75))
    assert abs((regime.onset - (T0 + timedelta(minutes=600))).total_seconds()) <= 600
    assert regime.recovered_in_data
    assert abs((regime.end - (T0 + timedelta(minutes=750))).total_seconds()) <= 1200


def test_a_ramp_is_called_gradual():
    z = np.r_[np.zeros(20), -0.3 * np.arange(1, 25)]
    shape, evidence = _shape(z, 20)
    assert shape == "gradual", evidence


def test_compare_proportions_matches_the_rates_and_orders_the_interval():
    base, cur, absolute, relative, p = compare(2200, 10000, 160, 1000)
    assert round(base.value, 3) == 0.22 and round(cur.value, 3) == 0.16
    assert absolute.low < absolute.value < absolute.high and round(absolute.value, 3) == -0.06
    assert round(relative.value, 2) == -0.27 and p < 1e-4


def test_heatmap_contributions_point_at_the_broken_value():
    cols = {"locale": np.array(["en-GB", "de-DE"], dtype=object)}
    baseline = LeafTable(("locale",), cols, np.array([200.0, 200.0]), np.array([1000.0, 1000.0]))
    current = LeafTable(("locale",), cols, np.array([100.0, 200.0]), np.array([1000.0, 1000.0]))
    rows = {r.value: r for r in heatmap_table(baseline, current, additive=False)}
    assert round(rows["en-GB"].relative, 2) == -0.5 and round(rows["de-DE"].relative, 2) == 0.0
    assert rows["en-GB"].contribution > 0.95
