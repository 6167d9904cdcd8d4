"""The opt-in approximate mode: ``Query(approximate=True)``.

Distinct counts become HyperLogLog estimates (``approx_count_distinct``) and quantiles
t-digest estimates (``approx_quantile``) for event families above
``EXACT_QUANTILE_MAX_ROWS`` rows (below it, the cheaper exact quantile); everything else
stays exact. The t-digest path is tested with that bound at 0. On a lake whose
slices hold ≥ 1000 distinct users and ≥ 1000 latency values, each estimate is checked
against the exact result (mode off) and against an independent pure-Python reference:

* distinct counts within 10% relative (DuckDB's sketch: ~2% mean, ~2.5% standard error
  per slice measured on the 20M bench lake, so 10% is ~4 standard errors);
* quantiles within 0.01 in rank (the share of values ≤ the estimate is within q ± 0.01);
* counts and sums identical to the exact mode, and a proportion with a population
  (computed per unit, no sketch) identical too.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from tripwire.metrics import timeseries as timeseries_module
from tripwire.metrics.definitions import parse_metric
from tripwire.metrics.query import Metrics
from tripwire.metrics.timeseries import Query, timeseries
from tripwire.store.engine import connect_lake

from . import random_lake as rl

USERS = 4000
LOCALES = ("en-US", "de-DE")
DEVICES = ("web", "Echo Show")
QS = (0.5, 0.95, 0.99)

METRICS: list[dict[str, Any]] = [
    {"name": "users", "type": "distinct"},
    {"name": "turns", "type": "count", "events": "Turn Completed"},
    {"name": "turns_per_user", "type": "mean", "per": "unit", "events": "Turn Completed"},
    {"name": "turn_users", "type": "proportion", "events": "Turn Completed"},
    {
        "name": "session_turn_rate",
        "type": "ratio",
        "numerator": {"events": "Turn Completed", "agg": "distinct", "value": "session_id"},
        "denominator": {"events": "Session Started", "agg": "distinct", "value": "session_id"},
    },
    {
        "name": "latency_sum",
        "type": "sum",
        "events": "Turn Completed",
        "value": "properties.latency_ms",
    },
    *[
        {
            "name": f"p{round(q * 100)}",
            "type": "quantile",
            "events": "Turn Completed",
            "value": "properties.latency_ms",
            "q": q,
        }
        for q in QS
    ],
    {
        "name": "turning_sessions_users",
        "type": "proportion",
        "events": "Turn Completed",
        "population": {"events": "Session Started"},
    },
]


def _rows(seed: int) -> list[Any]:
    """Each user: one session (started) with 0–3 turns of skewed latency, on one day."""
    rng = random.Random(seed)
    rows = []
    for u in range(USERS):
        user, session = f"user-{u:05d}", f"s-{u:05d}"
        locale, device = LOCALES[u % 2], DEVICES[(u // 2) % 2]
        start = rl.T0 + timedelta(minutes=rng.randrange(24 * 60 - 30))
        rows.append(rl.Row("Session Started", user, session, start, start, locale, device, "app"))
        for turn in range(rng.randint(0, 3)):
            moment = start + timedelta(seconds=10 * (turn + 1))
            latency = float(round(rng.lognormvariate(6.5, 0.8), 1))
            props = {"latency_ms": latency}
            rows.append(
                rl.Row(
                    "Turn Completed", user, session, moment, moment, locale, device, "app", props
                )
            )
    return rows


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[Any]]:
    rows = _rows(seed=17)
    path = tmp_path_factory.mktemp("lake")
    rl.write(path, rows)
    return connect_lake(path), rows


def _both(backend: Any, dims: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    metrics = [parse_metric(m) for m in METRICS]
    exact = timeseries(backend, metrics, Query(grain=None, dimensions=dims, top_n=None))
    approximate = timeseries(
        backend, metrics, Query(grain=None, dimensions=dims, top_n=None, approximate=True)
    )
    return exact, approximate


def _by_slice(result: Any, dims: tuple[str, ...]) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {tuple(r[d] for d in dims): r for r in result.table.to_pylist()}


def _reference(rows: list[Any], dims: tuple[str, ...]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Distinct users, turn sessions, started sessions and latencies per slice (pure Python)."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        key = tuple({"locale": row.locale, "device": row.device}[d] for d in dims)
        ref = out.setdefault(
            key,
            {
                "users": set(),
                "turn_users": set(),
                "turn_sessions": set(),
                "sessions": set(),
                "latency": [],
            },
        )
        ref["users"].add(row.user)
        if row.event == "Turn Completed":
            ref["turn_users"].add(row.user)
            ref["turn_sessions"].add(row.session)
            ref["latency"].append(row.props["latency_ms"])
        else:
            ref["sessions"].add(row.session)
    return out


@pytest.mark.parametrize("dims", [(), ("locale",), ("device",)])
def test_distinct_estimates_within_10_percent_at_1000_units(
    world: tuple[Any, list[Any]], dims: tuple[str, ...]
) -> None:
    backend, rows = world
    exact, approximate = _both(backend, dims)
    reference = _reference(rows, dims)
    checked = 0
    for key, ref in reference.items():
        assert len(ref["users"]) >= 1000
        pairs = {
            ("users", "numerator"): ref["users"],
            ("turns_per_user", "denominator"): ref["users"],
            ("turn_users", "numerator"): ref["turn_users"],
            ("turn_users", "denominator"): ref["users"],
            ("session_turn_rate", "numerator"): ref["turn_sessions"],
            ("session_turn_rate", "denominator"): ref["sessions"],
        }
        for (name, part), units in pairs.items():
            truth = len(units)
            assert _by_slice(exact[name], dims)[key][part] == truth, (name, part, key)
            estimate = _by_slice(approximate[name], dims)[key][part]
            assert abs(estimate - truth) <= 0.10 * truth, (name, part, key, estimate, truth)
            checked += 1
    assert checked == 6 * len(reference)


@pytest.fixture(params=["t-digest", "exact below the bound"])
def sketched(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Whether the approximate mode's quantiles are t-digests (the bound forced to 0)."""
    if request.param == "t-digest":
        monkeypatch.setattr(timeseries_module, "EXACT_QUANTILE_MAX_ROWS", 0)
    return bool(request.param == "t-digest")


@pytest.mark.parametrize("dims", [(), ("locale",)])
def test_quantile_estimates_within_one_percent_in_rank(
    world: tuple[Any, list[Any]], dims: tuple[str, ...], sketched: bool
) -> None:
    backend, rows = world
    _, approximate = _both(backend, dims)
    assert ("approx_quantile" in approximate["p95"].sql.lower()) is sketched
    for key, ref in _reference(rows, dims).items():
        values = sorted(ref["latency"])
        assert len(values) >= 1000
        for q in QS:
            estimate = _by_slice(approximate[f"p{round(q * 100)}"], dims)[key]["value"]
            below = sum(v <= estimate for v in values) / len(values)
            above = sum(v < estimate for v in values) / len(values)
            # the estimate's rank interval [above, below] lies within q ± 0.01
            assert q - 0.01 <= below and above <= q + 0.01, (q, key, estimate, above, below)


def test_counts_sums_and_population_proportions_stay_exact(
    world: tuple[Any, list[Any]], sketched: bool
) -> None:
    backend, _ = world
    exact, approximate = _both(backend, ("locale",))
    for name in ("turns", "latency_sum", "turning_sessions_users"):
        assert approximate[name].table.equals(exact[name].table), name
    assert "approx_count_distinct" in approximate["users"].sql.lower()
    assert "approx_count_distinct" not in exact["users"].sql.lower()
    assert ("approx_quantile" in approximate["p95"].sql.lower()) is sketched
    assert "approx_quantile" not in exact["p95"].sql.lower()


def test_quantiles_of_families_below_the_bound_are_exact(world: tuple[Any, list[Any]]) -> None:
    """The approximate mode keeps a small family's quantiles exact: the same tables as the
    exact mode (hourly too, where the per-day split and the families both apply)."""
    backend, _ = world
    metrics = [parse_metric(m) for m in METRICS if m["type"] == "quantile"]
    for grain in (None, "hour"):
        query = Query(grain=grain, dimensions=("locale", "device"), top_n=None)  # type: ignore[arg-type]
        exact = timeseries(backend, metrics, query)
        approximate = timeseries(backend, metrics, replace(query, approximate=True))
        for metric in metrics:
            assert approximate[metric.name].table.equals(exact[metric.name].table), metric.name
            assert approximate[metric.name].table.num_rows > 0


def test_metric_own_approximate_flag_still_sketches(world: tuple[Any, list[Any]]) -> None:
    backend, _ = world
    metric = parse_metric({**METRICS[6], "name": "p50_sketch", "approximate": True})
    result = timeseries(backend, [metric], Query(grain=None, top_n=None, approximate=True))
    assert "approx_quantile" in result["p50_sketch"].sql.lower()


def test_metrics_build_query_passes_the_mode(world: tuple[Any, list[Any]]) -> None:
    backend, _ = world
    metrics = Metrics(workspace=None, backend=backend, catalog=None)  # type: ignore[arg-type]
    assert metrics.build_query(approximate=True).approximate is True
    assert metrics.build_query().approximate is False
