"""Per-unit sufficient statistics against an independent pure-Python computation."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tripwire.metrics.definitions import parse_metric
from tripwire.metrics.exposures import exposure_sources
from tripwire.metrics.unit_stats import (
    ALL,
    CellCoding,
    UnitStatsError,
    event_codes,
    plan_metrics,
    product_type,
    to_stats,
    unit_stats,
    window_hull,
)
from tripwire.stats.sufficient import CupedMeanStats, CupedRatioStats, MeanStats, RatioStats
from tripwire.store.engine import connect_lake, events_table
from tripwire.store.lake import write_events

from . import unit_world as uw

METRICS = [
    {"name": "ordered", "type": "proportion", "events": ["Order Completed"]},
    {
        "name": "revenue",
        "type": "mean",
        "per": "unit",
        "events": ["Order Completed"],
        "value": "properties.revenue",
    },
    {"name": "clicks", "type": "count", "events": ["Recommendation Clicked"]},
    {
        "name": "ctr",
        "type": "ratio",
        "numerator": {"events": ["Recommendation Clicked"]},
        "denominator": {"events": ["Session Started"]},
    },
    {
        "name": "aov",
        "type": "ratio",
        "numerator": {"events": ["Order Completed"], "agg": "sum", "value": "properties.revenue"},
        "denominator": {"events": ["Order Completed"]},
    },
    {
        "name": "latency",
        "type": "mean",
        "per": "event",
        "events": ["Turn Completed"],
        "value": "properties.latency_ms",
    },
    {
        "name": "first_day_clicks",
        "type": "count",
        "events": ["Recommendation Clicked"],
        "window": {"start": "0d", "end": "1d"},
    },
]
WINDOW_DAYS = 7
PRE_DAYS = 3
DIMENSIONS = ["locale", "device"]


@pytest.fixture(scope="module")
def world() -> Any:
    return uw.build()


@pytest.fixture(scope="module")
def events(world: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    lake = tmp_path_factory.mktemp("lake")
    write_events(lake, world.envelopes)
    return events_table(connect_lake(lake))


@pytest.fixture(scope="module")
def computed(events: Any) -> Any:
    return unit_stats(
        events,
        "exp",
        [parse_metric(m) for m in METRICS],
        dimensions=DIMENSIONS,
        analysis_window=timedelta(days=WINDOW_DAYS),
        pre_period_days=PRE_DAYS,
        sources=exposure_sources(uw.MAPPING),
    )


# ----------------------------------------------------------------- independent reference


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _reference_units(envelopes: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], int]:
    exposures: dict[str, list[tuple[datetime, str, str, str]]] = defaultdict(list)
    for e in envelopes:
        p = e["properties"]
        if e["event"] == "$exposure" and p.get("experiment") == "exp":
            arm = p["variant"]
        elif e["event"] == "Experiment Viewed" and p.get("experiment_id") == "exp":
            arm = p["variation_id"]
        else:
            continue
        ctx = e["context"]
        exposures[e["userId"]].append(
            (_ts(e["timestamp"]), arm, ctx["locale"], ctx["device"]["model"])
        )
    units: dict[str, dict[str, Any]] = {}
    multi = 0
    for user, rows in exposures.items():
        if len({r[1] for r in rows}) > 1:
            multi += 1
            continue
        t0 = min(r[0] for r in rows)
        first = [r for r in rows if r[0] == t0]
        units[user] = {
            "arm": first[0][1],
            "t0": t0,
            "locale": min(r[2] for r in first),
            "device": min(r[3] for r in first),
        }
    return units, multi


def _values(events: list[dict[str, Any]]) -> dict[str, tuple[float, float | None]]:
    """Per metric (x, y) of one unit's events (already restricted to one window)."""
    by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_name[e["event"]].append(e["properties"])
    orders = by_name["Order Completed"]
    clicks = len(by_name["Recommendation Clicked"])
    revenue = sum(p["revenue"] for p in orders)
    latencies = [p["latency_ms"] for p in by_name["Turn Completed"] if "latency_ms" in p]
    return {
        "ordered": (1.0 if orders else 0.0, None),
        "revenue": (revenue, None),
        "clicks": (float(clicks), None),
        "ctr": (float(clicks), float(len(by_name["Session Started"]))),
        "aov": (revenue, float(len(orders))),
        "latency": (sum(latencies), float(len(latencies))),
    }


def reference(envelopes: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], dict[str, float]]:
    units, _ = _reference_units(envelopes)
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in envelopes:
        by_user[e["userId"]].append(e)
    sums: dict[tuple[str, str, str, str], dict[str, float]] = defaultdict(
        lambda: defaultdict(float)
    )
    for user, info in units.items():
        t0 = info["t0"]
        t0_day = t0.date()
        window = [
            e for e in by_user[user] if t0 <= _ts(e["timestamp"]) < t0 + timedelta(days=WINDOW_DAYS)
        ]
        first_day = [
            e
            for e in window
            if e["event"] == "Recommendation Clicked"
            and _ts(e["timestamp"]) < t0 + timedelta(days=1)
        ]
        pre = [
            e
            for e in by_user[user]
            if t0_day - timedelta(days=PRE_DAYS) <= _ts(e["timestamp"]).date() < t0_day
        ]
        post_values, pre_values = _values(window), _values(pre)
        post_values["first_day_clicks"] = (float(len(first_day)), None)
        pre_values["first_day_clicks"] = (
            float(sum(1 for e in pre if e["event"] == "Recommendation Clicked")),
            None,
        )
        cells = [(ALL, ALL), ("locale", info["locale"]), ("device", info["device"])]
        for metric, (x, y) in post_values.items():
            c, d = pre_values[metric]
            for dimension, value in cells:
                s = sums[(metric, info["arm"], dimension, value)]
                s["n"] += 1
                s["x"] += x
                s["xx"] += x * x
                s["c"] += c
                s["cc"] += c * c
                s["xc"] += x * c
                if y is not None:
                    assert d is not None
                    s["y"] += y
                    s["yy"] += y * y
                    s["xy"] += x * y
                    s["d"] += d
                    s["dd"] += d * d
                    s["cd"] += c * d
                    s["xd"] += x * d
                    s["yc"] += y * c
                    s["yd"] += y * d
                    s["zero_den"] += y == 0
    return sums


# ----------------------------------------------------------------- tests


def test_matches_independent_reference(world: Any, computed: Any) -> None:
    expected = reference(world.envelopes)
    rows = {(r["metric"], r["arm"], r["dimension"], r["value"]): r for r in computed.rows()}
    assert set(rows) == set(expected)
    for key, sums in expected.items():
        row = rows[key]
        assert row["n"] == sums["n"], key
        for moment, value in sums.items():
            if moment in ("n", "zero_den"):
                continue
            got = row[f"sum_{moment}"]
            assert math.isclose(got, value, rel_tol=1e-9, abs_tol=1e-6), (key, moment, got, value)
        if "y" in sums:
            assert row["zero_den"] == sums["zero_den"], key
        else:
            assert row["sum_y"] is None and row["zero_den"] is None


def test_world_exercises_the_edge_cases(world: Any, computed: Any) -> None:
    units, multi = _reference_units(world.envelopes)
    assert multi > 0 and computed.exposures.multi_arm_units == multi
    assert computed.exposures.analysed_units == len(units)
    ctr = computed.get("ctr", "control")
    assert isinstance(ctr, CupedRatioStats)
    rows = [r for r in computed.rows() if r["metric"] == "aov" and r["dimension"] == ALL]
    assert all(r["zero_den"] > 0 for r in rows)  # units without orders: zero denominators


def test_cohort_marginals_add_up_to_the_total(computed: Any) -> None:
    stats = computed.all_stats()
    for metric in ("revenue", "ctr"):
        for arm in ("control", "treatment"):
            parts = [s for (m, a, d, _), s in stats.items() if (m, a, d) == (metric, arm, "device")]
            total = parts[0]
            for part in parts[1:]:
                total = total + part
            whole = stats[(metric, arm, ALL, ALL)]
            assert total.n == whole.n
            assert (
                math.isclose(total.sum, whole.sum, rel_tol=1e-12)
                if hasattr(whole, "sum")
                else math.isclose(total.sum_num, whole.sum_num, rel_tol=1e-12)
            )


def test_converter_types_without_pre_period(events: Any) -> None:
    result = unit_stats(
        events,
        "exp",
        [parse_metric(METRICS[0]), parse_metric(METRICS[3])],
        sources=exposure_sources(uw.MAPPING),
    )
    assert isinstance(result.get("ordered", "treatment"), MeanStats)
    ratio = result.get("ctr", "treatment")
    assert isinstance(ratio, RatioStats) and ratio.sum_den > 0
    ordered = result.get("ordered", "treatment")
    assert ordered.is_binary_compatible  # type: ignore[union-attr]
    with pytest.raises(KeyError, match="no statistics"):
        result.get("ordered", "no-such-arm")


def test_converter_cuped_mean(computed: Any) -> None:
    row = next(r for r in computed.rows() if r["metric"] == "revenue")
    stats = to_stats(row)
    assert isinstance(stats, CupedMeanStats) and stats.sum_cross == row["sum_xc"]


def test_without_mapping_fewer_units(events: Any, computed: Any) -> None:
    only_native = unit_stats(events, "exp", [parse_metric(METRICS[0])])
    assert only_native.exposures.analysed_units < computed.exposures.analysed_units


def test_top_cohort_values_fold_the_rest_into_other(events: Any) -> None:
    result = unit_stats(
        events,
        "exp",
        [parse_metric(METRICS[2])],
        dimensions=["locale"],
        sources=exposure_sources(uw.MAPPING),
        max_cohort_values=2,
    )
    values = {r["value"] for r in result.rows() if r["dimension"] == "locale"}
    assert "(other)" in values and len(values) == 3
    total = sum(r["n"] for r in result.rows() if r["dimension"] == "locale")
    assert total == result.exposures.analysed_units


def test_unknown_experiment_is_an_explicit_empty_result(events: Any) -> None:
    result = unit_stats(events, "nope", [parse_metric(METRICS[0])])
    assert result.table.num_rows == 0 and result.exposures.analysed_units == 0


def test_plan_rejects_population_metrics_and_bad_settings() -> None:
    quantile = parse_metric(
        {"name": "p95", "type": "quantile", "events": ["Turn Completed"], "value": "x", "q": 0.95}
    )
    with pytest.raises(UnitStatsError, match="no per-unit form"):
        plan_metrics([quantile])
    clicks = parse_metric(METRICS[2])
    with pytest.raises(UnitStatsError, match="duplicates"):
        plan_metrics([clicks, clicks])
    with pytest.raises(UnitStatsError, match="pre_period_days"):
        plan_metrics([clicks], pre_period_days=0)
    late = parse_metric({**METRICS[2], "window": {"start": "8d"}})
    with pytest.raises(UnitStatsError, match="not before"):
        plan_metrics([late], analysis_window=timedelta(days=7))


def test_components_are_shared_between_metrics() -> None:
    plan = plan_metrics([parse_metric(m) for m in METRICS[2:4]])
    assert len(plan.components) == 2  # clicks count reused as the ctr numerator


def test_products_of_counts_are_integers_and_of_value_sums_decimals() -> None:
    plan = plan_metrics([parse_metric(m) for m in METRICS], pre_period_days=PRE_DAYS)
    key = {c.mode: c.key for c in plan.components}
    assert product_type(plan, [(key["count"],), (key["count"],)]) == "int64"
    assert product_type(plan, [(key["any"],), (key["any"], key["count"])]) == "int64"
    # micro-unit sums squared exceed int64 for a unit with > ~3,000 in value
    assert product_type(plan, [(key["sum"],), (key["count"],)]) == "decimal(38, 0)"
    assert product_type(plan, [(key["count"],), (key["count"], key["count"])]) == "decimal(38, 0)"


def test_large_values_stay_exact(tmp_path: Path) -> None:
    """A unit whose revenue squared in micro-units (10^28) is far beyond int64."""
    t0 = datetime(2026, 3, 5, 12, tzinfo=uw.START.tzinfo)
    ctx = {"locale": "en-US", "device": "web", "tenure": "new"}
    envelopes = [
        uw._envelope(0, "big", "$exposure", t0, {"experiment": "exp", "variant": "a"}, ctx),
        uw._envelope(1, "big", "Order Completed", t0 + timedelta(hours=1),
                     {"revenue": 12_345_678.901234}, ctx),
        uw._envelope(2, "big", "Order Completed", t0 + timedelta(hours=2),
                     {"revenue": 87_654_321.098766}, ctx),
    ]  # fmt: skip
    write_events(tmp_path, envelopes)
    revenue = parse_metric(METRICS[1])
    stats = unit_stats(events_table(connect_lake(tmp_path)), "exp", [revenue])
    row = next(r for r in stats.rows() if r["dimension"] == ALL)
    assert row["n"] == 1
    assert row["sum_x"] == 100_000_000.0
    assert row["sum_xx"] == 1e16


def test_small_and_large_units_in_one_cell_sum_exactly(tmp_path: Path) -> None:
    """Units below the int64 factor limit and above it share a cell: both branches of
    the split product (int64 and DECIMAL) contribute, and the sums stay exact."""
    t0 = datetime(2026, 3, 5, 12, tzinfo=uw.START.tzinfo)
    ctx = {"locale": "en-US", "device": "web", "tenure": "new"}
    revenues = {"small": 12.345678, "big": 87_654_321.098766, "tiny": 0.000001}
    envelopes = []
    for i, (unit, revenue) in enumerate(revenues.items()):
        envelopes += [
            uw._envelope(10 * i, unit, "$exposure", t0, {"experiment": "exp", "variant": "a"}, ctx),
            uw._envelope(10 * i + 1, unit, "Order Completed", t0 + timedelta(hours=1),
                         {"revenue": revenue}, ctx),
            uw._envelope(10 * i + 2, unit, "Order Completed", t0 + timedelta(hours=2),
                         {"revenue": revenue}, ctx),
        ]  # fmt: skip
    write_events(tmp_path, envelopes)
    stats = unit_stats(events_table(connect_lake(tmp_path)), "exp", [parse_metric(METRICS[1])])
    row = next(r for r in stats.rows() if r["dimension"] == ALL)
    micros = [round(2 * v * 1_000_000) for v in revenues.values()]
    assert row["n"] == 3
    assert row["sum_x"] == sum(micros) / 1_000_000
    assert row["sum_xx"] == sum(m * m for m in micros) / 1_000_000**2


def test_cell_codes_decode_to_arm_and_folded_values() -> None:
    coding = CellCoding(arms=("a", "b"), values=(("de", "en"), ("web",)))
    for arm_index, arm in enumerate(coding.arms):
        for i, locale in enumerate(["de", "en", "(other)"]):
            for j, device in enumerate(["web", "(other)"]):
                code = (arm_index * 3 + i) * 2 + j
                assert coding.decode(code) == (arm, [locale, device])


# ------------------------------------------------- window hull and event codes (the join)


def _plan(*metrics: dict[str, Any], pre: int | None = PRE_DAYS, days: int | None = 7) -> Any:
    return plan_metrics(
        [parse_metric(m) for m in metrics],
        analysis_window=None if days is None else timedelta(days=days),
        pre_period_days=pre,
    )


CLICKS = {"name": "clicks", "type": "count", "events": ["Recommendation Clicked"]}


def test_window_hull_is_one_existing_bound_when_it_can_be() -> None:
    # pre-period + one analysis window: from the pre-period's start to the window's end
    assert window_hull(_plan(CLICKS)) == ("__ps", "__we_0_604800")
    # without a pre-period the window itself
    assert window_hull(_plan(CLICKS, pre=None)) == ("__ws_0_604800", "__we_0_604800")
    # two windows ending at different times: the latest end is computed per unit
    first_day = {**CLICKS, "name": "first", "window": {"start": "0d", "end": "1d"}}
    assert window_hull(_plan(CLICKS, first_day)) == ("__ps", "__hi")


def test_window_hull_with_a_window_before_exposure_or_open_ended() -> None:
    before = {**CLICKS, "name": "before", "window": {"start": timedelta(days=-10), "end": "1d"}}
    # the window may start before the pre-period and end after it: both bounds computed
    assert window_hull(_plan(CLICKS, before)) == ("__lo", "__hi")
    assert window_hull(_plan(before, pre=None)) == ("__ws_-864000_86400", "__we_-864000_86400")
    # no analysis window and no metric window end: the hull is open-ended
    assert window_hull(_plan(CLICKS, pre=None, days=None)) == ("__ws_0_open", None)


def test_event_codes_cover_the_names_read_or_are_absent() -> None:
    ctr = {"name": "ctr", "type": "ratio", "numerator": {"events": ["Recommendation Clicked"]},
           "denominator": {"events": ["Session Started"]}}  # fmt: skip
    assert event_codes(_plan(CLICKS, ctr)) == {"Recommendation Clicked": 1, "Session Started": 2}
    # a metric over every event: matched by its own filter column, no codes
    every = {"name": "events", "type": "count"}
    assert event_codes(_plan(CLICKS, every)) is None


def test_windows_before_exposure_and_property_filters_match_a_reference(
    world: Any, events: Any
) -> None:
    """A window starting before exposure (the hull then starts before the pre-period)
    and a filter with a property predicate (matched by its own column, not the event
    code) against a count over the raw events."""
    metrics = [
        {**CLICKS, "name": "around", "window": {"start": timedelta(days=-4), "end": "2d"}},
        {"name": "slow", "type": "count", "events": ["Turn Completed"],
         "where": [{"field": "properties.latency_ms", "op": ">", "value": 900}]},
    ]  # fmt: skip
    computed = unit_stats(
        events,
        "exp",
        [parse_metric(m) for m in metrics],
        analysis_window=timedelta(days=WINDOW_DAYS),
        pre_period_days=PRE_DAYS,
        sources=exposure_sources(uw.MAPPING),
    )
    units, _ = _reference_units(world.envelopes)
    expected: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for user, unit in units.items():
        t0 = unit["t0"]
        day0 = t0.replace(hour=0, minute=0, second=0, microsecond=0)
        around = pre_around = slow = pre_slow = 0
        for e in world.envelopes:
            if e.get("userId") != user:
                continue
            ts = _ts(e["timestamp"])
            pre = day0 - timedelta(days=PRE_DAYS) <= ts < day0
            if e["event"] == "Recommendation Clicked":
                around += t0 - timedelta(days=4) <= ts < t0 + timedelta(days=2)
                pre_around += pre
            if e["event"] == "Turn Completed" and e["properties"].get("latency_ms", 0) > 900:
                slow += t0 <= ts < t0 + timedelta(days=WINDOW_DAYS)
                pre_slow += pre
        for name, x, c in (("around", around, pre_around), ("slow", slow, pre_slow)):
            sums = expected[(name, unit["arm"])]
            sums[0] += x
            sums[1] += c
    assert any(sums[0] for sums in expected.values())
    for row in computed.rows():
        if row["dimension"] != ALL:
            continue
        x, c = expected[(row["metric"], row["arm"])]
        assert (row["sum_x"], row["sum_c"]) == (x, c), row["metric"]
