"""Benchmark: the whole day-1 catalog hourly × (locale, device) over 14 days of a lake.

Target (issue 3): ≤ 30 s on 2 cores for a 100M-event lake. ``bench.metrics`` builds that
lake and calls :func:`bench_catalog_hourly`; run alone with ``python -m
bench.metrics_catalog --lake DIR`` (or ``--quick`` for a small simulated lake).

Mode: exact quantiles (``quantile_cont``; the catalog's quantiles do not set
``approximate``), exact distinct counts, every metric as the catalog defines it: this is
the headline number. The opt-in approximate mode (``Query(approximate=True)``: HyperLogLog
distinct counts; quantiles exact up to 50 M rows an event family, as the mode allows, and
t-digests above; everything else exact) is timed separately and
labelled as such (``approximate_*`` keys; run alone, ``--no-approximate`` skips it;
``bench.metrics`` times the exact mode only). Measured on the shared machine (process
CPU-s, DuckDB's 2 threads included; wall 2-3× more under load 8-12): 20M lake exact 29.3,
approximate 18.6; 100M lake exact 174, approximate 83. Sixth session, before → after the
per-day distinct counts and the retention rewrite, under load 5-7: 100M exact 160.8 →
158.2, approximate 84.4 → 77.4; 20M exact (alternated in one process) ~29.3 → ~27.3,
approximate 17.2 → 17.4 (noise). The approximate mode's gain is all
in the distinct counts; its t-digest quantiles cost ~2× the exact shared sort at these
group sizes (quantile metrics alone 2.1 → 4.5 CPU-s at 20M), so since the seventh session
the mode keeps quantiles exact below 50 M rows a family. Seventh session, alternated A/B
of the session's start vs its end, one run each: 100M approximate 79.6 → 73.2 CPU-s (221 →
204 s wall) under load 8-10, and 65.6 → 64.9 CPU-s (35.0 → 49.5 s wall) under load ~2.5:
no clear gain on the whole catalog; 100M exact 144.0 → 127.6 CPU-s (146 → 129 s wall)
under load ~4; 20M approximate 17.2/18.4 → 17.2/14.4, exact ~29-30 both (noise). Retention alone (100M, return_visit_rate_7d):
~21 → ~17 CPU-s (``arg_min_null`` on the timestamp, window bounds once per unit).
Measured without gain, not kept: the plain event counts of every event summed from the
first level of the per-day distinct users instead of their own scan (20M, active users
and the two data-health shares alone, 3 alternated runs: 14.6 → 15.9 CPU-s mean; the wider
first-level hash tables cost what the second scan did); skipping retention's anti-join
when the lake holds no earlier start events (DuckDB then built the semi-join on the
return events: an empty week-2 cohort 0.3 → 8.5 CPU-s).

Eighth session (alternated A/B against the session's start in a worktree, process
CPU-s, one run per label and round): the top-N pre-pass skipped when a scalar metric of
every event already gives every dimension value (≤ N values: no pre-pass, ~3.5 CPU-s of
a scan of every event at 100M) and integer-microsecond lateness comparisons: 100M
approximate 67.7/70.6 → 66.5/64.3 (load 8-10) and 58.0 → 54.9 (50.1 → 50.4 s wall,
load ~2.5-3), 100M exact 151.9 → 133.2 (load 6-9, one
run each: mostly load); 20M approximate 16.5/17.2 → 14.6/16.1, exact 30.3 → 29.2 (load
4-9). Where the approximate 100M time goes (profiled): the scalar statement ~46 CPU-s,
of which the every-event family ~24 (HyperLogLog of the string user id ~13 of it: its
decode and hash, measured without the sketch), Turn Completed ~7, the session and order
families ~11; retention ~16 (grouping 10.4M start events by string user, then the semi-
join with 20.9M returns). Measured without gain, not kept: every other family's
aggregates computed in the every-event scan (one scan instead of eight; each aggregate
then tests its event name on every row: 20M approximate 16.5/15.6 → 38.0/27.0 CPU-s);
retention's first-event dimensions as one ``arg_min_null`` of a struct, or as the
``min`` of a (timestamp, locale, device) struct (20M: 3.1/3.2 → 3.3/3.4 and 3.5/3.8).

Exact rewrites of the per-slice distinct users measured without gain (20M lake, every
event, hour × locale × device, ~12 CPU-s each): an integer user key instead of the
string, grouping on (hour, user) only, ``len(list_distinct(list(user)))`` per slice, the
date partition in the key. The cost is the ~20M-entry hash table (nearly every event its
own (hour, slice, user) group), not the key width; only smaller tables cut it: a grained
query over several days of a large event family now counts its exact distinct units one
UTC day at a time in the same statement (each day's partitions, a bucket never spans
days; families under 1M events a day, e.g. the demo's, keep one scan: a plan per day
made the monitor backfill ~40% dearer). active_users alone, A/B under load: 20M 11.7 →
9.7 CPU-s, 100M 73.5 → 68.1.

How it runs: all scalar metrics are one statement with one grouped scan per *event
family* (the events an aggregate reads, e.g. every ``Turn Completed`` metric in one scan of
that event's partitions of the 14 days); exact quantiles of one value share one sort per
group; funnels and retention each run their own query (retention groups only the start
events of its cohort window and counts retained and eligible units per slice, without
joining the retained flags back to the cohort). Buckets are integer keys on DuckDB.

What bounds the number: DuckDB's Parquet scan and hash aggregation on 2 cores, mostly
the exact distinct users per hour × locale × device (a hash set of ~all (slice, user)
pairs: every event is read) and the per-session funnel; on small lakes the fixed cost per
query (Ibis compile, DuckDB bind) dominates instead. The machine is shared: wall time
follows the load, so the process CPU time (DuckDB's threads included) is reported too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from tripwire.metrics.catalog import catalog_files
from tripwire.metrics.loader import load_catalog
from tripwire.metrics.timeseries import Query, data_end, timeseries
from tripwire.store.engine import connect_lake


def bench_catalog_hourly(
    lake_dir: Path,
    *,
    repeats: int = 3,
    days: int = 14,
    threads: int = 2,
    per_type: bool = True,
    approximate: bool = False,
) -> dict[str, Any]:
    """Median seconds to compute every catalog metric hourly × (locale, device).

    The range is the last ``days`` days of the lake. Returns the median, each run's
    time, the number of metrics and of result rows (as a sanity check), and (with
    ``per_type``) each metric type's time when computed alone; with ``approximate``, the
    same for the approximate mode under ``approximate_*`` keys (never the headline).
    """
    catalog = load_catalog(catalog_files())
    metrics = list(catalog)
    backend = connect_lake(lake_dir, threads=threads)
    end = data_end(backend)
    if end is None:
        raise ValueError(f"{lake_dir} holds no events")
    query = Query(
        grain="hour", dimensions=("locale", "device"), start=end - timedelta(days=days), end=end
    )
    result = {
        **_timed(backend, metrics, query, repeats, per_type),
        "metrics": len(metrics),
        "load_average": os.getloadavg()[0],
    }
    if approximate:
        sketched = _timed(backend, metrics, replace(query, approximate=True), repeats, per_type)
        result |= {f"approximate_{key}": value for key, value in sketched.items()}
    return result


def _timed(
    backend: Any, metrics: list[Any], query: Query, repeats: int, per_type: bool
) -> dict[str, Any]:
    """Median wall and process CPU seconds of the catalog under ``query`` (and per type)."""
    times, cpu = [], []
    rows = 0
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        results = timeseries(backend, metrics, query)
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
        rows = sum(r.table.num_rows for r in results.values())
    by_type: dict[str, list[Any]] = {}
    for metric in metrics:
        by_type.setdefault(metric.type, []).append(metric)
    by_kind = {}
    for kind, group in by_type.items() if per_type else ():
        started, started_cpu = time.perf_counter(), time.process_time()
        timeseries(backend, group, query)
        by_kind[kind] = (time.perf_counter() - started, time.process_time() - started_cpu)
    return {
        "catalog_hourly_locale_device_s": statistics.median(times),
        "catalog_hourly_locale_device_cpu_s": statistics.median(cpu),
        "runs_s": times,
        "cpu_runs_s": cpu,
        "per_type_wall_cpu_s": by_kind,
        "result_rows": rows,
    }


def _quick_lake(folder: Path) -> Path:
    """A small simulated lake (300 users × 3 days) for a smoke run."""
    from tripwire.sim import World, WorldConfig
    from tripwire.store.lake import write_events

    lake = folder / "lake"
    messages = []
    for batch in World(WorldConfig(seed=3, users=300, days=3)).batches():
        messages += [{**m, "source": batch.source} for m in batch.messages]
    write_events(lake, messages)
    return lake


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lake", type=Path, help="Lake directory (holding events/).")
    parser.add_argument("--quick", action="store_true", help="Small simulated lake, one run.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--no-per-type", action="store_true", help="Skip timing each metric type alone."
    )
    parser.add_argument(
        "--no-approximate", action="store_true", help="Skip the approximate-mode timing."
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        lake = args.lake or _quick_lake(Path(tmp))
        result = bench_catalog_hourly(
            lake,
            repeats=1 if args.quick else args.repeats,
            per_type=not args.no_per_type,
            approximate=not args.no_approximate,
        )
    _print(f"day-1 catalog ({result['metrics']} metrics), exact", result, "")
    if "approximate_runs_s" in result:
        _print(
            "APPROXIMATE mode (HLL distinct, quantiles exact <= 50M rows)", result, "approximate_"
        )
    print(f"load average {result['load_average']:.1f}")
    return result


def _print(title: str, result: dict[str, Any], prefix: str) -> None:
    print(
        f"{title}, hourly × (locale, device): "
        f"median {result[prefix + 'catalog_hourly_locale_device_s']:.2f} s "
        f"(runs: {', '.join(f'{t:.2f}' for t in result[prefix + 'runs_s'])}; "
        f"{result[prefix + 'result_rows']} rows), "
        f"CPU {result[prefix + 'catalog_hourly_locale_device_cpu_s']:.2f} s "
        f"(runs: {', '.join(f'{t:.2f}' for t in result[prefix + 'cpu_runs_s'])})"
    )
    for kind, (wall, cpu) in result[prefix + "per_type_wall_cpu_s"].items():
        print(f"  {kind:<12} alone: {wall:6.2f} s wall, {cpu:6.2f} s CPU")


if __name__ == "__main__":
    main()
