"""Incremental refresh equals a full recomputation exactly, whatever order data arrives in."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tripwire.metrics.definitions import parse_metric
from tripwire.metrics.exposures import exposure_sources
from tripwire.metrics.incremental import IncrementalSpec, IncrementalStats, state_dir
from tripwire.metrics.unit_stats import UnitStatsError, unit_stats
from tripwire.store.engine import connect_lake, events_table
from tripwire.store.lake import events_dir, write_events

from . import unit_world as uw

METRICS = tuple(
    parse_metric(m)
    for m in [
        {"name": "ordered", "type": "proportion", "events": ["Order Completed"]},
        {
            "name": "revenue",
            "type": "mean",
            "per": "unit",
            "events": ["Order Completed"],
            "value": "properties.revenue",
        },
        {
            "name": "ctr",
            "type": "ratio",
            "numerator": {"events": ["Recommendation Clicked"]},
            "denominator": {"events": ["Session Started"]},
        },
        {
            "name": "latency",
            "type": "mean",
            "per": "event",
            "events": ["Turn Completed"],
            "value": "properties.latency_ms",
        },
    ]
)
SETTINGS: dict[str, Any] = {
    "dimensions": ("locale", "device"),
    "analysis_window": timedelta(days=5),
    "pre_period_days": 2,
    "sources": tuple(exposure_sources(uw.MAPPING)),
}


def _full(lake: Path) -> Any:
    return unit_stats(events_table(connect_lake(lake)), "exp", METRICS, **SETTINGS)


def _assert_equal(incremental: IncrementalStats, lake: Path) -> None:
    got, expected = incremental.result(), _full(lake)
    assert got.exposures == expected.exposures
    assert got.table.equals(expected.table), "incremental result differs from full recompute"


def _compact(lake: Path, day: str) -> None:
    """What an archiver compaction does: rewrite a day's files as one file per event."""
    for folder in (events_dir(lake) / f"date={day}").iterdir():
        files = sorted(folder.glob("*.parquet"))
        table = pq.read_table(files[0]) if len(files) == 1 else None
        if table is None:
            import pyarrow as pa

            table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
        for f in files:
            f.unlink()
        pq.write_table(table, folder / "part-compacted.parquet")


def _half(envelope: dict[str, Any]) -> tuple[str, str]:
    ts = envelope["timestamp"]
    return ts[:10], "am" if ts[11:13] < "12" else "pm"


def _out_of_order_batches(world: Any) -> list[list[dict[str, Any]]]:
    """Half days, then a batch of late events (exposures included) landing on days seen."""
    rng = random.Random(5)
    late: list[dict[str, Any]] = []
    on_time: list[dict[str, Any]] = []
    for envelope in world.envelopes:
        day = envelope["timestamp"][:10]
        # late events (incl. exposures) arrive days after their timestamp
        (late if day <= "2026-03-06" and rng.random() < 0.1 else on_time).append(envelope)
    batches: list[list[dict[str, Any]]] = [
        [e for e in on_time if e["timestamp"][:10] <= "2026-03-04"],
        [e for e in on_time if _half(e) == ("2026-03-05", "am")],  # half a day
        [e for e in on_time if _half(e) in (("2026-03-05", "pm"), ("2026-03-06", "am"))]
        + [e for e in on_time if _half(e) == ("2026-03-06", "pm")],
        late + [e for e in on_time if e["timestamp"][:10] >= "2026-03-07"],
    ]
    return batches


@pytest.mark.slow
def test_out_of_order_arrival_matches_full_recompute_exactly(tmp_path: Path) -> None:
    lake, data = tmp_path / "lake", tmp_path / "data"
    world = uw.build(seed=11, users=120, days=10)
    batches = _out_of_order_batches(world)
    assert sum(len(b) for b in batches) == len(world.envelopes)
    incremental = IncrementalStats(data, lake, IncrementalSpec("exp", METRICS, **SETTINGS))
    reports = []
    for index, batch in enumerate(batches):
        write_events(lake, batch, file_id=f"b{index}")
        reports.append(incremental.refresh())
        if index == 1:  # running per-unit totals updated once (no exposure moved yet)
            _assert_equal(incremental, lake)
    assert reports[0].rebuilt and not reports[1].rebuilt
    # the late batch moved first exposures earlier and landed on exposure days seen before
    assert reports[3].invalidated_pairs > 0 and reports[3].rescanned_files
    _assert_equal(incremental, lake)

    _compact(lake, "2026-03-03")
    report = incremental.refresh()
    assert report.dirty_days == ("2026-03-03",)
    _assert_equal(incremental, lake)
    assert incremental.refresh().new_files == ()  # nothing new: nothing scanned


def _refreshed_but_the_last_day(
    tmp_path: Path, *, seed: int, users: int, days: int
) -> tuple[Path, Path, IncrementalStats, list[dict[str, Any]]]:
    """A world's lake without its last day, refreshed; and the last day's events."""
    lake, data = tmp_path / "lake", tmp_path / "data"
    world = uw.build(seed=seed, users=users, days=days)
    incremental = IncrementalStats(data, lake, IncrementalSpec("exp", METRICS, **SETTINGS))
    last = max(e["timestamp"][:10] for e in world.envelopes)
    write_events(lake, [e for e in world.envelopes if e["timestamp"][:10] < last])
    incremental.refresh()
    return lake, data, incremental, [e for e in world.envelopes if e["timestamp"][:10] == last]


def test_a_daily_refresh_scans_only_the_new_day(tmp_path: Path) -> None:
    lake, data, incremental, last_day = _refreshed_but_the_last_day(
        tmp_path, seed=2, users=60, days=8
    )
    write_events(lake, last_day)
    last = last_day[0]["timestamp"][:10]
    report = incremental.refresh()
    assert report.new_files and all(f.startswith(f"date={last}/") for f in report.new_files)
    assert report.rescanned_files == () and report.invalidated_pairs == 0
    _assert_equal(incremental, lake)
    assert (state_dir(data, "exp") / "manifest.json").exists()


def test_a_failed_background_write_acknowledges_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new day's part is written in the background: if that write fails, the refresh
    raises and the manifest still describes the previous state (which a retry completes)."""
    from tripwire.metrics import incremental as inc

    lake, data, incremental, last_day = _refreshed_but_the_last_day(
        tmp_path, seed=3, users=40, days=6
    )
    manifest = state_dir(data, "exp") / "manifest.json"
    before = manifest.read_text()
    write_events(lake, last_day)
    original = inc._Session.write_behind

    def failing(self: Any, table: Any, path: Path) -> Any:
        return original(self, table, path / "missing-folder" / path.name)

    monkeypatch.setattr(inc._Session, "write_behind", failing)
    with pytest.raises(Exception, match="missing-folder"):
        incremental.refresh()
    assert manifest.read_text() == before
    monkeypatch.setattr(inc._Session, "write_behind", original)
    assert incremental.refresh().new_files
    _assert_equal(incremental, lake)


def test_changed_definitions_rebuild_the_state(tmp_path: Path) -> None:
    lake, data = tmp_path / "lake", tmp_path / "data"
    write_events(lake, uw.build(seed=4, users=30, days=6).envelopes)
    IncrementalStats(data, lake, IncrementalSpec("exp", METRICS, **SETTINGS)).refresh()
    other = IncrementalStats(data, lake, IncrementalSpec("exp", METRICS[:2], **SETTINGS))
    with pytest.raises(UnitStatsError, match="refresh"):
        other.result()
    assert other.refresh().rebuilt
    assert {r["metric"] for r in other.result().rows()} == {"ordered", "revenue"}


def test_distinct_measures_and_bad_names_are_rejected(tmp_path: Path) -> None:
    sessions = parse_metric(
        {
            "name": "clicks_per_session",
            "type": "ratio",
            "numerator": {"events": ["Recommendation Clicked"]},
            "denominator": {"agg": "distinct", "value": "session_id"},
        }
    )
    with pytest.raises(UnitStatsError, match="distinct"):
        IncrementalStats(tmp_path, tmp_path, IncrementalSpec("exp", (sessions,)))
    with pytest.raises(UnitStatsError, match="folder name"):
        IncrementalStats(tmp_path, tmp_path, IncrementalSpec("../x", METRICS))


def _late_batches(world: Any) -> list[list[dict[str, Any]]]:
    """Days in order, but 15% of the first days' events (exposures included) arrive last."""
    rng = random.Random(7)
    days = sorted({e["timestamp"][:10] for e in world.envelopes})
    late = [e for e in world.envelopes if e["timestamp"][:10] <= days[2] and rng.random() < 0.15]
    late_ids = {id(e) for e in late}
    on_time = [e for e in world.envelopes if id(e) not in late_ids]
    batches = [[e for e in on_time if e["timestamp"][:10] == day] for day in days]
    batches[-1] += late
    return batches


@pytest.mark.slow
@pytest.mark.parametrize(
    ("window", "analysis_window"),
    [
        # a window starting before the exposure: a day's partial can hold both parts
        ({"start": -12 * 3600, "end": "2d"}, timedelta(days=5)),
        # no window end anywhere: no event is ever irrelevant
        (None, None),
    ],
    ids=["window-before-exposure", "open-windows"],
)
def test_windows_without_the_daily_shortcuts_match_full_recompute(
    tmp_path: Path, window: dict[str, Any] | None, analysis_window: timedelta | None
) -> None:
    lake, data = tmp_path / "lake", tmp_path / "data"
    extra = {"name": "ordered_near", "type": "proportion", "events": ["Order Completed"]}
    metrics = (*METRICS[:3], parse_metric(extra | ({"window": window} if window else {})))
    settings = SETTINGS | {"analysis_window": analysis_window}
    incremental = IncrementalStats(data, lake, IncrementalSpec("exp", metrics, **settings))
    world = uw.build(seed=3, users=50, days=7)
    for index, batch in enumerate(_late_batches(world)):
        write_events(lake, batch, file_id=f"b{index}")
        incremental.refresh()
    expected = unit_stats(events_table(connect_lake(lake)), "exp", metrics, **settings)
    got = incremental.result()
    assert got.exposures == expected.exposures
    assert got.table.equals(expected.table)


def _per_unit_totals(incremental: IncrementalStats) -> dict[str, dict[str, int]]:
    """The stored running totals by unit id (dense columns read through the unit index)."""
    import json

    import numpy as np

    from tripwire.metrics import dense_totals

    folder = incremental.dir
    manifest = json.loads((folder / "manifest.json").read_text())
    exposed = pq.read_table(folder / manifest["exposed"]).to_pylist()
    columns = {
        name: dense_totals.load(folder, file)
        for name, file in manifest["totals"]["columns"].items()
    }
    out = {}
    for row in exposed:
        out[row["unit_id"]] = {
            name: int(column[row["ix"]]) if row["ix"] < len(column) else 0
            for name, column in columns.items()
        }
        assert all(isinstance(v, int) for v in out[row["unit_id"]].values())
    assert all(c.dtype == np.int64 for c in columns.values())
    return out


@pytest.mark.slow
def test_daily_refreshes_keep_every_units_totals_equal_to_a_rebuild(tmp_path: Path) -> None:
    """Unit by unit (not only the per-cell sums): the totals a sequence of refreshes with
    late exposures and late events leaves equal those of a state built in one pass."""
    lake = tmp_path / "lake"
    world = uw.build(seed=11, users=120, days=10)
    daily = IncrementalStats(tmp_path / "daily", lake, IncrementalSpec("exp", METRICS, **SETTINGS))
    reports = []
    for index, batch in enumerate(_out_of_order_batches(world)):
        write_events(lake, batch, file_id=f"b{index}")
        reports.append(daily.refresh())
    # the last refresh updated running totals of units whose first exposure moved
    assert not reports[-1].rebuilt and reports[-1].invalidated_pairs > 0
    once = IncrementalStats(tmp_path / "once", lake, IncrementalSpec("exp", METRICS, **SETTINGS))
    assert once.refresh().rebuilt
    got, expected = _per_unit_totals(daily), _per_unit_totals(once)
    assert got == expected and any(any(v.values()) for v in got.values())
    _assert_equal(daily, lake)


def test_a_daily_refresh_updates_the_stored_moments_of_the_touched_units_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The current look's per-cell moments are the stored ones minus the touched units'
    previous products plus their new ones: a daily refresh queries only those units (here
    fewer than half), and the result still equals a full recomputation exactly."""
    from tripwire.metrics import incremental as inc

    lake, data, incremental, last_day = _refreshed_but_the_last_day(
        tmp_path, seed=4, users=160, days=8
    )
    queried: list[int] = []
    original = inc._cell_moments

    def spy(session: Any, plan: Any, columns: Any, cells: Any) -> Any:
        queried.append(len(cells))
        return original(session, plan, columns, cells)

    monkeypatch.setattr(inc, "_cell_moments", spy)
    write_events(lake, last_day)
    assert not incremental.refresh().rebuilt
    units = sum(incremental.result().exposures.units_per_arm.values())
    assert len(queried) == 1 and 0 < queried[0] < units  # twice the touched units, < all
    _assert_equal(incremental, lake)


@pytest.mark.slow
def test_moments_updated_by_deltas_through_moved_exposures_match_full_recompute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Late exposures move first exposures (and arms: cells), late events land on seen
    days: with the stored moments updated by a delta at every refresh, each result equals
    a full recomputation exactly. (No cohort dimensions: new cohort values change the cell
    coding, which recomputes the moments from all units.)"""
    from tripwire.metrics import incremental as inc

    monkeypatch.setattr(inc, "_DELTA_SHARE", float("inf"))  # always the delta when possible
    deltas: list[bool] = []  # per moments query: a delta (has previous products) or not
    original = inc._cell_moments

    def spy(session: Any, plan: Any, columns: Any, cells: Any) -> Any:
        deltas.append(bool((cells <= inc._OLD).any()))
        return original(session, plan, columns, cells)

    monkeypatch.setattr(inc, "_cell_moments", spy)
    lake = tmp_path / "lake"
    world = uw.build(seed=11, users=120, days=10)
    settings = SETTINGS | {"dimensions": ()}
    incremental = IncrementalStats(
        tmp_path / "data", lake, IncrementalSpec("exp", METRICS, **settings)
    )
    for index, batch in enumerate(_out_of_order_batches(world)):
        write_events(lake, batch, file_id=f"b{index}")
        report = incremental.refresh()
        got = incremental.result()
        expected = unit_stats(events_table(connect_lake(lake)), "exp", METRICS, **settings)
        assert got.exposures == expected.exposures
        assert got.table.equals(expected.table), f"differs from full recompute, batch {index}"
    assert report.invalidated_pairs > 0  # the last batch moved first exposures
    assert deltas == [False, True, True, True]  # the first refresh builds them
