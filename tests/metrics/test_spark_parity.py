"""The scale path is real: the same definitions give the same answers on DuckDB and Spark.

One local Spark session (``local[1]``, UI off, loopback only) serves the module. On a small
synthetic lake both engines compute, through the same Ibis code: a proportion, a ratio and
a count time series, exact and approximate quantiles, a funnel, a retention and per-unit
experiment statistics with CUPED and cohorts.

Tolerances: counts and sums must be equal (per-unit statistics bit for bit: they are
fixed-point/DECIMAL sums); ratios of equal sums are equal up to float rounding (1e-12);
exact quantiles (DuckDB ``quantile_cont``, Spark ``percentile``, both linear
interpolation) agree to 1e-9 relative; approximate quantiles (DuckDB's t-digest
``approx_quantile``, Spark's Greenwald–Khanna ``percentile_approx``) are checked against
the exact empirical distribution: each must sit within ±0.05 in rank of ``q``.
"""

from __future__ import annotations

import bisect
import math
import os
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from tripwire.metrics.definitions import parse_metric
from tripwire.metrics.exposures import exposure_sources
from tripwire.metrics.timeseries import Query, timeseries
from tripwire.metrics.unit_stats import unit_stats
from tripwire.store.engine import connect_lake, events_table, register_events
from tripwire.store.lake import write_events

from . import unit_world as uw

pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.xdist_group("spark")]


SERIES = [
    {"name": "ordered", "type": "proportion", "events": ["Order Completed"]},
    {
        "name": "ctr",
        "type": "ratio",
        "numerator": {"events": ["Recommendation Clicked"]},
        "denominator": {"events": ["Session Started"]},
    },
    {"name": "orders", "type": "count", "events": ["Order Completed"]},
    {
        "name": "revenue",
        "type": "sum",
        "events": ["Order Completed"],
        "value": "properties.revenue",
    },
    {
        "name": "p90",
        "type": "quantile",
        "events": ["Turn Completed"],
        "value": "properties.latency_ms",
        "q": 0.9,
    },
    {
        "name": "p90_approx",
        "type": "quantile",
        "events": ["Turn Completed"],
        "value": "properties.latency_ms",
        "q": 0.9,
        "approximate": True,
    },
    {
        "name": "checkout",
        "type": "funnel",
        "steps": ["Session Started", "Recommendation Clicked", "Order Completed"],
    },
    {"name": "returning", "type": "retention", "days": [2, 6]},
]
UNIT_METRICS = [
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


def _spark_available() -> str | None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install 'tripwire[spark]')"
    java_home = os.environ.get("JAVA_HOME")
    if not shutil.which("java") and not (java_home and Path(java_home, "bin", "java").exists()):
        return "no Java runtime (install a JDK 17, e.g. Debian's openjdk-17-jre-headless)"
    return None


@pytest.fixture(scope="module")
def world() -> Any:
    return uw.build(seed=21, users=90, days=10)


@pytest.fixture(scope="module")
def lake(world: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lake")
    write_events(path, world.envelopes)
    return path


@pytest.fixture(scope="module")
def duck(lake: Path) -> Any:
    return connect_lake(lake)


@pytest.fixture(scope="module")
def spark(lake: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    reason = _spark_available()
    if reason:
        pytest.skip(f"Spark parity skipped: {reason}")
    import ibis
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    scratch = tmp_path_factory.mktemp("spark")
    session = (
        SparkSession.builder.appName("tripwire-parity")
        .master("local[1]")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "1")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.warehouse.dir", str(scratch / "warehouse"))
        .config("spark.local.dir", str(scratch / "local"))
        .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={scratch}")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    backend = ibis.pyspark.connect(session)
    register_events(backend, lake)
    yield backend
    session.stop()


def _query(world: Any) -> Query:
    start = uw.START
    return Query(grain="day", dimensions=("locale",), start=start, end=start + timedelta(days=11))


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist()  # type: ignore[no-any-return]


def _close(a: Any, b: Any, rel: float) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)
    return bool(a == b)


@pytest.fixture(scope="module")
def series(world: Any, duck: Any, spark: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    metrics = [parse_metric(m) for m in SERIES]
    query = _query(world)
    return timeseries(duck, metrics, query), timeseries(spark, metrics, query)


@pytest.mark.parametrize("name", ["ordered", "ctr", "orders", "revenue", "checkout", "returning"])
def test_counts_sums_funnels_and_retention_are_equal(
    series: tuple[dict[str, Any], dict[str, Any]], name: str
) -> None:
    duck_rows, spark_rows = (_rows(s[name].table) for s in series)
    assert duck_rows, f"{name}: the world should produce data"
    assert len(duck_rows) == len(spark_rows)
    for d, s in zip(duck_rows, spark_rows, strict=True):
        assert d.keys() == s.keys()
        for key in d:
            assert _close(d[key], s[key], 1e-12), (name, key, d, s)


def test_exact_quantiles_agree(series: tuple[dict[str, Any], dict[str, Any]]) -> None:
    duck_rows, spark_rows = (_rows(s["p90"].table) for s in series)
    assert len(duck_rows) == len(spark_rows) > 0
    for d, s in zip(duck_rows, spark_rows, strict=True):
        assert (d["bucket"], d["locale"], d["denominator"]) == (
            s["bucket"],
            s["locale"],
            s["denominator"],
        )
        assert _close(d["value"], s["value"], 1e-9), (d, s)


def test_approximate_quantiles_within_rank_tolerance(
    world: Any, series: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    values: dict[tuple[str, str], list[float]] = {}
    for e in world.envelopes:
        latency = e["properties"].get("latency_ms")
        if e["event"] == "Turn Completed" and latency is not None:
            key = (e["timestamp"][:10], e["context"]["locale"])
            values.setdefault(key, []).append(latency)
    for engine in series:
        for row in _rows(engine["p90_approx"].table):
            if row["value"] is None:  # a slice with events but no latency values
                assert not row["denominator"]
                continue
            sample = sorted(values[(row["bucket"].date().isoformat(), row["locale"])])
            n = len(sample)
            below = bisect.bisect_right(sample, row["value"]) / n
            assert abs(below - 0.9) <= 0.05 + 1.0 / n, (row, n, below)


def test_per_unit_statistics_are_identical(duck: Any, spark: Any) -> None:
    metrics = [parse_metric(m) for m in UNIT_METRICS]
    settings: dict[str, Any] = {
        "dimensions": ["locale", "device"],
        "analysis_window": timedelta(days=5),
        "pre_period_days": 2,
        "sources": exposure_sources(uw.MAPPING),
    }
    on_duck = unit_stats(events_table(duck), "exp", metrics, **settings)
    on_spark = unit_stats(events_table(spark), "exp", metrics, **settings)
    assert on_duck.exposures == on_spark.exposures
    assert on_duck.table.num_rows > 0
    assert on_duck.table.equals(on_spark.table)


def test_series_cover_the_range(series: tuple[dict[str, Any], dict[str, Any]]) -> None:
    buckets = {r["bucket"] for r in _rows(series[0]["orders"].table)}
    assert min(buckets) >= datetime(2026, 3, 1, tzinfo=min(buckets).tzinfo)
    assert len(buckets) >= 10
