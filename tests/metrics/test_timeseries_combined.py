"""The day-1 catalog computed together equals each metric computed alone.

``timeseries`` runs all scalar metrics of a query as one statement with one grouped scan
per event family (and each family reads only its own partitions); funnels and retention
run their own. On a small random lake (late events, null locales, several days), every
catalog metric queried together must give, for each slice of the metric queried alone,
the same numerator and denominator (exactly: counts and sums of the same rows) and the
same value (≤ 1e-9 relative: the same division); slices the combined query adds (where
only other metrics' events occur) must count nothing. The family scans must also equal
the single scan over the whole table (``timeseries_expr`` without ``source``) row for
row, by minute, hour and day, with and without dimensions; so must the family scans whose
exact distinct counts run day by day (``day_source``, a range over three UTC days).
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import ibis
import pyarrow as pa
import pytest

from tripwire.metrics import timeseries as timeseries_module
from tripwire.metrics.catalog import catalog_files
from tripwire.metrics.compile import timeseries_expr
from tripwire.metrics.definitions import FunnelMetric, RetentionMetric
from tripwire.metrics.loader import load_catalog
from tripwire.metrics.timeseries import (
    Query,
    _day_source,
    _family_source,
    _normalise,
    timeseries,
)
from tripwire.store.engine import connect_lake, events_table

from . import random_lake as rl

PARTS = ("numerator", "denominator", "value")


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("lake")
    rl.write(path, rl.random_rows(seed=5, users=50, days=3))
    return connect_lake(path)


def _query(grain: Any = "hour", dims: tuple[str, ...] = ("locale", "device")) -> Query:
    start = rl.T0 + timedelta(hours=7)  # inside the data: events before it are excluded
    return Query(grain=grain, dimensions=dims, start=start, end=start + timedelta(days=2))


def _close(a: Any, b: Any, rel: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a == b if rel == 0 else math.isclose(a, b, rel_tol=rel, abs_tol=0.0)


def _rows(table: pa.Table, keys: list[str]) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {tuple(r[k] for k in keys): r for r in table.to_pylist()}


@pytest.mark.slow
def test_catalog_together_equals_each_metric_alone(backend: Any) -> None:
    metrics = list(load_catalog(catalog_files()))
    query = _query()
    together = timeseries(backend, metrics, query)
    keys = ["bucket", "locale", "device"]
    checked = 0
    for metric in metrics:
        alone = timeseries(backend, [metric], query)[metric.name].table
        combined = together[metric.name].table
        if isinstance(metric, FunnelMetric | RetentionMetric):
            assert combined.equals(alone), metric.name
            continue
        mine, theirs = _rows(alone, keys), _rows(combined, keys)
        assert set(mine) <= set(theirs), metric.name
        for key, row in mine.items():
            other = theirs[key]
            for part in PARTS:
                rel = 1e-9 if part == "value" and metric.type not in ("count", "sum") else 0
                assert _close(row[part], other[part], rel), (metric.name, key, part)
            checked += 1
        for key in set(theirs) - set(mine):  # slices of other metrics' events only
            assert theirs[key]["numerator"] in (0, None), (metric.name, key)
            assert theirs[key]["denominator"] in (0, None), (metric.name, key)
    assert checked > 500  # the lake really has slices for most metrics


@pytest.mark.parametrize(
    ("grain", "dims"),
    [("minute", ()), ("hour", ("locale", "device")), ("day", ("locale",)), (None, ())],
)
def test_family_scans_equal_the_single_scan(
    backend: Any, grain: Any, dims: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(timeseries_module, "DAY_SPLIT_ROWS_PER_DAY", 1)  # a small lake
    metrics = [
        m
        for m in load_catalog(catalog_files())
        if not isinstance(m, FunnelMetric | RetentionMetric)
    ]
    query = _query(grain, dims)
    options: dict[str, Any] = {
        "grain": grain, "dimensions": dims, "start": query.start, "end": query.end
    }  # fmt: skip
    single = timeseries_expr(metrics, events_table(backend), **options)
    split = timeseries_expr(
        metrics, events_table(backend), **options, source=_family_source(backend, query)
    )
    days = _day_source(backend, query)
    assert (days is None) == (grain is None)  # a grain over three days: split by day
    by_day = timeseries_expr(
        metrics,
        events_table(backend),
        **options,
        source=_family_source(backend, query),
        day_source=days,
    )
    keys = (["bucket"] if grain else []) + list(dims)
    expected = _normalise(backend.to_pyarrow(single), keys)
    for variant in (split, by_day):
        actual = _normalise(backend.to_pyarrow(variant), keys)
        assert actual.num_rows == expected.num_rows > 0
        assert actual.select(keys).equals(expected.select(keys))
        for name in expected.column_names:
            if name in keys:
                continue
            for a, b in zip(actual[name].to_pylist(), expected[name].to_pylist(), strict=True):
                assert _close(a, b, 0 if not name.endswith("__value") else 1e-12), name


def test_day_split_only_for_a_grain_over_several_large_days_of_a_lake(
    backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Days under the size threshold, one day, no grain or no lake (an in-memory
    ``events`` table): no per-day source."""
    query = _query()
    assert query.start is not None and query.end is not None
    days = _day_source(backend, query)
    assert days is not None
    assert days(None) == [] and days(frozenset({"Turn Completed"})) == []  # small days
    monkeypatch.setattr(timeseries_module, "DAY_SPLIT_ROWS_PER_DAY", 1)
    assert len(days(None)) == 3  # the range touches three UTC days
    one_day = Query(grain="hour", start=query.start, end=query.start + timedelta(hours=2))
    assert _day_source(backend, one_day) is None
    assert _day_source(backend, Query(grain=None, start=query.start, end=query.end)) is None
    assert _day_source(backend, Query(grain="hour")) is None  # open range
    memory = ibis.duckdb.connect()
    memory.create_table("events", backend.to_pyarrow(events_table(backend).limit(5)))
    in_memory = _day_source(memory, query)
    assert in_memory is not None and in_memory(None) == []
