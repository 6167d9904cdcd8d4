"""The reference engines of ``bench/experiments.py``, run inside ``bench/.venv-ref``.

Usage: ``experiments_ref.py {gbstats|tea_tasting} LAKE --experiment X --cutoff ISO --pre-days N``

Both start from the same DuckDB SQL over the lake: the exposed units (first exposure, units
in several arms dropped, cohort values of the first exposure) and, per unit, the ten
metrics' values in the 7-day analysis window and in the pre-period (CUPED covariates), as
tripwire defines them. Then

* ``gbstats``: per arm (and per arm × cohort value) sums in SQL, fed to GrowthBook's
  statistics objects and its two-sided frequentist t test, the way GrowthBook runs it;
* ``tea_tasting``: the per-unit table as an Ibis (DuckDB) table, analysed by
  ``tea_tasting.Experiment`` overall and per cohort value.

Prints one JSON line: seconds and cpu_seconds (whole analysis, SQL included) and, for the agreement check,
the absolute effect and SE of revenue (Welch: ``revenue:nocuped``; CUPED: ``revenue``) and
ctr (delta-method ratio: ``ctr:nocuped``; tea-tasting also ratio CUPED: ``ctr``).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import duckdb

DIMENSIONS = {"d0": "locale", "d1": "device", "d2": "trait_tenure"}
#: metric → (numerator SQL per event, denominator SQL per event or None, aggregate)
COUNT = "count"
METRICS: dict[str, tuple[str, str | None, str]] = {
    "ordered": ("e.event = 'Order Completed'", None, "any"),
    "added": ("e.event = 'Product Added'", None, "any"),
    "revenue": ("CASE WHEN e.event = 'Order Completed' THEN e.prop_revenue END", None, "sum"),
    "cart_value": ("CASE WHEN e.event = 'Product Added' THEN e.prop_price END", None, "sum"),
    "orders": ("e.event = 'Order Completed'", None, COUNT),
    "adds": ("e.event = 'Product Added'", None, COUNT),
    "turns": ("e.event = 'Turn Completed'", None, COUNT),
    "ctr": ("e.event = 'Recommendation Clicked'", "e.event = 'Session Started'", COUNT),
    "aov": (
        "CASE WHEN e.event = 'Order Completed' THEN e.prop_revenue END",
        "e.event = 'Order Completed'",
        "sum",
    ),
    "latency": (
        "CASE WHEN e.event = 'Turn Completed' THEN e.prop_latency_ms END",
        "e.event = 'Turn Completed' AND e.prop_latency_ms IS NOT NULL",
        "sum",
    ),
}
EVENTS = ["Order Completed", "Product Added", "Turn Completed", "Recommendation Clicked",
          "Session Started"]  # fmt: skip


def _agg(expr: str, kind: str, where: str) -> str:
    if kind == "any":
        return f"coalesce(max(CASE WHEN {where} AND {expr} THEN 1 ELSE 0 END), 0)"
    if kind == COUNT:
        return f"coalesce(sum(CASE WHEN {where} AND {expr} THEN 1 ELSE 0 END), 0)"
    return f"coalesce(sum(CASE WHEN {where} THEN {expr} END), 0)"


def per_unit_sql(lake: str, experiment: str, cutoff: str, pre_days: int) -> str:
    """Per analysed unit: arm, cohorts, x/y (window) and c/d (pre-period) of every metric."""
    source = f"read_parquet('{lake}/events/date=*/event=*/*.parquet', union_by_name=true, hive_partitioning=false)"
    window = "e.timestamp >= u.t0 AND e.timestamp < u.t0 + INTERVAL 7 DAY"
    pre = (
        f"CAST(e.timestamp AS DATE) >= CAST(u.t0 AS DATE) - {pre_days} "
        "AND CAST(e.timestamp AS DATE) < CAST(u.t0 AS DATE)"
    )
    columns = []
    for name, (num, den, kind) in METRICS.items():
        columns.append(f"{_agg(num, kind, window)} AS {name}_x")
        columns.append(f"{_agg(num, kind, pre)} AS {name}_c")
        if den is not None:
            columns.append(f"{_agg(den, COUNT, window)} AS {name}_y")
            columns.append(f"{_agg(den, COUNT, pre)} AS {name}_d")
    names = ", ".join(f"'{e}'" for e in EVENTS)
    dims = ", ".join(f"min({c}) AS {d}" for d, c in DIMENSIONS.items())
    return f"""
    WITH ev AS (SELECT * FROM {source} WHERE timestamp < TIMESTAMPTZ '{cutoff}'),
    ex AS (
        SELECT user_id, prop_variant AS arm, timestamp AS ts, locale, device, trait_tenure
        FROM ev WHERE event = '$exposure' AND prop_experiment = '{experiment}'
    ),
    firsts AS (
        SELECT user_id, min(ts) AS t0, count(DISTINCT arm) AS n_arms FROM ex GROUP BY 1
    ),
    u AS (
        SELECT ex.user_id, min(ex.arm) AS arm, min(f.t0) AS t0, {dims}
        FROM ex JOIN firsts f ON ex.user_id = f.user_id AND ex.ts = f.t0
        WHERE f.n_arms = 1 GROUP BY 1
    )
    SELECT u.user_id, u.arm, u.d0, u.d1, u.d2, {", ".join(columns)}
    FROM u LEFT JOIN (SELECT * FROM ev WHERE event IN ({names})) e ON e.user_id = u.user_id
    GROUP BY u.user_id, u.arm, u.d0, u.d1, u.d2
    """


def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"threads": 2})
    con.execute("SET TimeZone = 'UTC'")
    return con


# --------------------------------------------------------------------------- gbstats


def run_gbstats(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    from gbstats.frequentist.tests import FrequentistConfig, TwoSidedTTest
    from gbstats.models.statistics import (
        ProportionStatistic,
        RatioStatistic,
        RegressionAdjustedStatistic,
        SampleMeanStatistic,
        compute_theta,
    )

    sums = []
    for name, (_, den, _) in METRICS.items():
        parts = [f"sum({name}_x) AS {name}_x", f"sum({name}_x*{name}_x) AS {name}_xx",
                 f"sum({name}_c) AS {name}_c", f"sum({name}_c*{name}_c) AS {name}_cc",
                 f"sum({name}_x*{name}_c) AS {name}_xc"]  # fmt: skip
        if den is not None:
            parts += [f"sum({name}_y) AS {name}_y", f"sum({name}_y*{name}_y) AS {name}_yy",
                      f"sum({name}_x*{name}_y) AS {name}_xy"]  # fmt: skip
        sums += parts
    groups = ["arm"] + [f"arm, {d}" for d in DIMENSIONS]
    rows: list[dict[str, Any]] = []
    for group in groups:
        frame = con.execute(
            f"SELECT {group}, count(*) AS n, {', '.join(sums)} FROM units GROUP BY {group}"
        ).fetchdf()
        rows += frame.to_dict("records")

    def stat(row: dict[str, Any], name: str, cuped: bool) -> Any:
        n = int(row["n"])
        den = METRICS[name][1]
        kind = METRICS[name][2]
        if den is not None:
            m = SampleMeanStatistic(n=n, sum=row[f"{name}_x"], sum_squares=row[f"{name}_xx"])
            d = SampleMeanStatistic(n=n, sum=row[f"{name}_y"], sum_squares=row[f"{name}_yy"])
            return RatioStatistic(n=n, m_statistic=m, d_statistic=d,
                                  m_d_sum_of_products=row[f"{name}_xy"])  # fmt: skip
        if kind == "any" and not cuped:
            return ProportionStatistic(n=n, sum=row[f"{name}_x"])
        post = SampleMeanStatistic(n=n, sum=row[f"{name}_x"], sum_squares=row[f"{name}_xx"])
        if not cuped:
            return post
        pre_ = SampleMeanStatistic(n=n, sum=row[f"{name}_c"], sum_squares=row[f"{name}_cc"])
        return RegressionAdjustedStatistic(
            n=n, post_statistic=post, pre_statistic=pre_,
            post_pre_sum_of_products=row[f"{name}_xc"], theta=0.0,
        )  # fmt: skip

    config = FrequentistConfig(difference_type="absolute")
    effects: dict[str, dict[str, float]] = {}
    by_key: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
    for row in rows:
        key = tuple((d, row.get(d)) for d in DIMENSIONS if d in row)
        by_key.setdefault(key, {})[row["arm"]] = row
    for key, arms in by_key.items():
        if "control" not in arms or "treatment" not in arms:
            continue
        for name in METRICS:
            cuped = METRICS[name][1] is None
            a, b = stat(arms["control"], name, cuped), stat(arms["treatment"], name, cuped)
            if cuped:  # GrowthBook's pooled θ, set on both arms before the test
                theta = compute_theta(a, b)
                a.theta, b.theta = theta, theta
            result = TwoSidedTTest(a, b, config).compute_result()
            if not key and name == "revenue":
                effects[name] = {"estimate": float(result.expected), "se": _se(result)}
        if not key:
            for name in ("revenue", "ctr"):
                plain = TwoSidedTTest(
                    stat(arms["control"], name, False), stat(arms["treatment"], name, False),
                    config,
                ).compute_result()  # fmt: skip
                effects[f"{name}:nocuped"] = {"estimate": float(plain.expected), "se": _se(plain)}
    return effects


def _se(result: Any) -> float:
    """The standard error of the absolute difference (gbstats' ``uplift.stddev``)."""
    uplift = getattr(result, "uplift", None)
    if uplift is not None and getattr(uplift, "stddev", None):
        return float(uplift.stddev)
    raise RuntimeError("gbstats result has no standard error")


# --------------------------------------------------------------------------- tea-tasting


def run_tea_tasting(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    import ibis
    import tea_tasting as tt

    backend = ibis.duckdb.from_connection(con)
    data = backend.table("units")
    metrics: dict[str, Any] = {}
    for name, (_, den, _) in METRICS.items():
        if den is None:
            metrics[name] = tt.Mean(f"{name}_x", f"{name}_c")
        else:
            metrics[name] = tt.RatioOfMeans(f"{name}_x", f"{name}_y", f"{name}_c", f"{name}_d")
    metrics["revenue_nocuped"] = tt.Mean("revenue_x")
    metrics["ctr_nocuped"] = tt.RatioOfMeans("ctr_x", "ctr_y")
    experiment = tt.Experiment(metrics, variant="arm")
    overall = experiment.analyze(data, control="control")
    for d in DIMENSIONS:
        values = [r[0] for r in con.execute(f"SELECT DISTINCT {d} FROM units").fetchall()]
        for value in values:
            experiment.analyze(data.filter(data[d] == value), control="control")
    effects: dict[str, dict[str, float]] = {}
    for row in overall.to_dicts():
        name = str(row["metric"])
        if name not in ("revenue", "ctr", "revenue_nocuped", "ctr_nocuped"):
            continue
        key = name.replace("_nocuped", ":nocuped")
        effects[key] = {"estimate": float(row["effect_size"]), "se": _tt_se(row)}
    return effects


def _tt_se(row: dict[str, Any]) -> float:
    """tea-tasting reports the effect and its t statistic; SE = effect / statistic."""
    return abs(float(row["effect_size"]) / float(row["statistic"]))


def _import_engine(engine: str) -> None:
    """Import the reference library before the clock starts: the benchmark times the
    analysis, and tripwire's side also runs with its modules already imported."""
    if engine == "gbstats":
        import gbstats.frequentist.tests  # noqa: F401
        import gbstats.models.statistics  # noqa: F401
    else:
        import ibis  # noqa: F401
        import tea_tasting  # noqa: F401


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("engine", choices=["gbstats", "tea_tasting"])
    parser.add_argument("lake")
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--cutoff", required=True)
    parser.add_argument("--pre-days", type=int, default=7)
    args = parser.parse_args()
    _import_engine(args.engine)  # like tripwire's own run: imports are not timed
    started, cpu = time.perf_counter(), time.process_time()
    con = _connect()
    con.execute(
        "CREATE TEMP TABLE units AS "
        + per_unit_sql(args.lake, args.experiment, args.cutoff + "+00:00", args.pre_days)
    )
    effects = run_gbstats(con) if args.engine == "gbstats" else run_tea_tasting(con)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    print(
        json.dumps(
            {"engine": args.engine, "seconds": seconds, "cpu_seconds": cpu_seconds,
             "effects": effects}
        )
    )  # fmt: skip


if __name__ == "__main__":
    main()
