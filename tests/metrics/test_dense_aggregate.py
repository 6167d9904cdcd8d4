"""The embedded engine's NumPy per-unit aggregation equals the engine's GROUP BY exactly."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pyarrow as pa
import pytest

from tripwire.metrics import dense_aggregate
from tripwire.metrics.definitions import parse_metric
from tripwire.metrics.exposures import exposure_sources, resolve_exposures, summarize
from tripwire.metrics.unit_stats import (
    CELL,
    INDEX,
    analysed_units,
    coded_units,
    component_columns,
    compute_from_units,
    per_unit_components,
    plan_metrics,
)
from tripwire.store.engine import connect_lake, events_table
from tripwire.store.lake import write_events

from . import unit_world as uw

METRICS = [
    {"name": "ordered", "type": "proportion", "events": ["Order Completed"]},
    {"name": "any_click", "type": "distinct", "events": ["Recommendation Clicked"]},
    {"name": "revenue", "type": "mean", "per": "unit", "events": ["Order Completed"],
     "value": "properties.revenue"},
    {"name": "ctr", "type": "ratio", "numerator": {"events": ["Recommendation Clicked"]},
     "denominator": {"events": ["Session Started"]}},
    {"name": "aov", "type": "ratio",
     "numerator": {"events": ["Order Completed"], "agg": "sum", "value": "properties.revenue"},
     "denominator": {"events": ["Order Completed"]}},
    {"name": "latency", "type": "mean", "per": "event", "events": ["Turn Completed"],
     "value": "properties.latency_ms"},
    {"name": "first_day_clicks", "type": "count", "events": ["Recommendation Clicked"],
     "window": {"start": "0d", "end": "1d"}},
    {"name": "slow_turns", "type": "count", "events": ["Turn Completed"],
     "where": [{"field": "properties.latency_ms", "op": ">", "value": 900}]},
]  # fmt: skip
DIMENSIONS = ["locale", "device"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Any:
    lake = tmp_path_factory.mktemp("lake")
    write_events(lake, uw.build().envelopes)
    events = events_table(connect_lake(lake))
    plan = plan_metrics(
        [parse_metric(m) for m in METRICS],
        analysis_window=timedelta(days=7),
        pre_period_days=3,
    )
    exposed = resolve_exposures(
        events, "exp", sources=exposure_sources(uw.MAPPING), dimensions=DIMENSIONS
    ).cache()
    units, coding = coded_units(analysed_units(exposed), DIMENSIONS, 20)
    return events, plan, units.cache(), coding, summarize(exposed, "exp")


def _by_index(table: Any, columns: list[str]) -> dict[int, tuple[int, ...]]:
    """Per unit index: its cell and component values, units that are all zeros left out."""
    rows = table.to_pyarrow().to_pylist()
    out = {}
    for row in rows:
        values = tuple(int(row[c]) for c in columns)
        if any(values):
            out[int(row[INDEX])] = (int(row[CELL]), *values)
    return out


def test_dense_strategy_equals_the_engine_unit_by_unit(
    setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    events, plan, units, _, _ = setup
    calls: list[int] = []
    original = dense_aggregate.aggregate

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(dense_aggregate, "aggregate", spy)
    modes = {c.key: c.mode for c in plan.components}
    assert "sum" in modes.values() and "any" in modes.values() and "count" in modes.values()
    columns = component_columns(plan)
    engine = per_unit_components(events, units, plan, strategy="engine")
    assert not calls
    dense = per_unit_components(events, units, plan)
    assert calls  # the NumPy strategy ran
    expected = _by_index(engine, columns)
    assert len(expected) > 20
    assert _by_index(dense, columns) == expected


def test_dense_strategy_gives_identical_statistics(setup: Any) -> None:
    events, plan, units, coding, summary = setup
    tables = [
        compute_from_units(
            per_unit_components(events, units, plan, strategy=strategy),
            units,
            plan,
            experiment="exp",
            summary=summary,
            dimensions=DIMENSIONS,
            max_cohort_values=20,
            coding=coding,
        ).table
        for strategy in ("engine", "auto")
    ]
    assert tables[0].num_rows > 0
    assert tables[1].equals(tables[0])  # bit-identical floats and counts


def test_only_count_any_and_sum_components_on_duckdb_with_an_index(setup: Any) -> None:
    events, _, units, _, _ = setup
    assert dense_aggregate.applicable(units, {"a": "sum", "b": "any"}, INDEX, CELL)
    assert not dense_aggregate.applicable(units, {"a": "distinct"}, INDEX, CELL)
    assert not dense_aggregate.applicable(events, {"a": "count"}, INDEX, CELL)


def test_the_totals_view_is_dropped_with_its_last_expression(setup: Any) -> None:
    import gc

    events, plan, units, _, _ = setup
    con = events._find_backend().con

    def views() -> set[str]:
        rows = con.sql("SELECT view_name FROM duckdb_views() WHERE temporary").fetchall()
        return {r[0] for r in rows if r[0].startswith("__tw_per_unit_")}

    before = views()
    per_unit = per_unit_components(events, units, plan)
    assert len(views() - before) == 1
    del per_unit
    gc.collect()
    assert views() == before


def test_prefetched_batches_arrive_in_order_and_all() -> None:
    batches = [pa.record_batch({"x": [i, i + 1]}) for i in range(0, 20, 2)]
    got = list(dense_aggregate.prefetched(iter(batches)))
    assert [b["x"].to_pylist() for b in got] == [b["x"].to_pylist() for b in batches]


def test_prefetched_raises_the_producers_error_at_its_place() -> None:
    def failing() -> Iterator[pa.RecordBatch]:
        yield pa.record_batch({"x": [1]})
        raise OSError("the lake went away")

    stream = dense_aggregate.prefetched(failing())
    assert next(stream)["x"].to_pylist() == [1]
    with pytest.raises(OSError, match="the lake went away"):
        next(stream)


def test_prefetched_releases_the_producer_when_the_caller_stops_early() -> None:
    produced: list[int] = []

    def endless() -> Iterator[pa.RecordBatch]:
        i = 0
        while True:
            produced.append(i)
            yield pa.record_batch({"x": [i]})
            i += 1

    stream = dense_aggregate.prefetched(endless())
    assert next(stream)["x"].to_pylist() == [0]
    stream.close()  # joins the producer: it stops instead of running on
    assert not any(t.name == "tripwire-prefetch" and t.is_alive() for t in threading.enumerate())
    # the producer ran ahead by at most the queue's depth (+ the batch it was offering)
    assert len(produced) <= dense_aggregate.PREFETCH_BATCHES + 2


def test_state_coding_packs_the_code_and_flags_and_decodes_each_selection() -> None:
    columns = {
        "orders": dense_aggregate.Column("count", "__a", codes=(1,)),
        "slow": dense_aggregate.Column("count", "__a", match="__m"),
        "pre_orders": dense_aggregate.Column("count", "__pre", codes=(1, 2)),
    }
    coding = dense_aggregate.StateCoding.of(columns, "__e")
    assert coding.flags == ("__a", "__m", "__pre") and coding.dtype == "uint16"
    limit = dense_aggregate.CODE_LIMIT

    def state(code: int, *flags: str) -> int:
        return code + limit * sum(1 << coding.flags.index(f) for f in flags)

    assert coding.selects(columns["orders"], state(1, "__a"))
    assert not coding.selects(columns["orders"], state(2, "__a"))  # another event
    assert not coding.selects(columns["orders"], state(1, "__pre"))  # another window
    assert coding.selects(columns["slow"], state(5, "__a", "__m"))
    assert not coding.selects(columns["slow"], state(5, "__a"))  # the filter did not match
    assert coding.selects(columns["pre_orders"], state(2, "__pre", "__m"))
    # without event codes the code part is 0; many flags widen the type
    many = {f"c{i}": dense_aggregate.Column("count", f"__w{i}") for i in range(12)}
    wide = dense_aggregate.StateCoding.of(many, None)
    assert wide.code is None and wide.dtype == "int32"
    bit = wide.flags.index("__w11")
    assert wide.selects(many["c11"], limit << bit)
    assert not wide.selects(many["c10"], limit << bit)


def test_fold_batch_hands_each_aggregate_the_rows_of_its_states() -> None:
    columns = {
        "n_a": dense_aggregate.Column("count", "__a", codes=(1,)),
        "v_a": dense_aggregate.Column("sum", "__a", codes=(1,), value="__v"),
        "n_pre": dense_aggregate.Column("count", "__pre"),
    }
    coding = dense_aggregate.StateCoding.of(columns, "__e")
    limit = dense_aggregate.CODE_LIMIT
    a, pre = limit << coding.flags.index("__a"), limit << coding.flags.index("__pre")
    batch = pa.RecordBatch.from_pydict(
        {
            "__ix": pa.array([0, 1, 0, 2, 1, 2], pa.int32()),
            dense_aggregate.STATE: pa.array(
                [1 + a, 2 + a, 1 + a, 1 + pre, 0, 2 + pre], pa.uint16()
            ),
            "__v": pa.array([5, 7, 11, 13, 17, 19], pa.int64()),
        }
    )
    buffers = {
        name: dense_aggregate._Buffer(3, column.value is not None)
        for name, column in columns.items()
    }
    dense_aggregate._fold_batch(batch, columns, coding, buffers, index="__ix")
    assert buffers["n_a"].total().tolist() == [2, 0, 0]
    assert buffers["v_a"].total().tolist() == [16, 0, 0]
    assert buffers["n_pre"].total().tolist() == [0, 0, 2]
