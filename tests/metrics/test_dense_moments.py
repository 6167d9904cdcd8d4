"""NumPy per-cell moments equal the engine's (unit_stats.moments_expr on DuckDB) exactly."""

from __future__ import annotations

from typing import Any

import ibis
import numpy as np
import pyarrow as pa
import pytest

from tripwire.metrics.definitions import parse_metric
from tripwire.metrics.dense_moments import _Sorted, cell_moments
from tripwire.metrics.unit_stats import (
    CELL,
    CellCoding,
    StatsPlan,
    collect,
    moments_expr,
    plan_metrics,
)

SPECS: list[dict[str, Any]] = [
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
METRICS = [parse_metric(m) for m in SPECS]
CODING = CellCoding(("control", "treatment"), (("de", "jp"),))


def _plan() -> StatsPlan:
    return plan_metrics(METRICS, pre_period_days=7)


def _columns(rng: np.random.Generator, units: int, huge: bool) -> dict[str, np.ndarray]:
    plan = _plan()
    out: dict[str, np.ndarray] = {}
    for component in plan.components:
        for prefix in ("a", "p"):
            if component.mode == "any":
                values = rng.integers(0, 2, units)
            elif component.mode == "count":
                values = rng.integers(0, 30, units)
            else:  # fixed-point sums: realistic, or near the int64 limit (products overflow)
                peak = 2**50 if huge else 10**11  # sums of squares stay within DECIMAL(38)
                values = rng.integers(-peak if huge else 0, peak, units)
            values[rng.random(units) < 0.3] = 0
            out[f"{prefix}_{component.key}"] = values.astype(np.int64)
    return out


@pytest.mark.parametrize("huge", [False, True], ids=["realistic", "near-int64-limit"])
def test_cell_moments_equal_the_engine_bit_for_bit(huge: bool) -> None:
    rng = np.random.default_rng(5 if huge else 4)
    units, plan = 3000, _plan()
    columns = _columns(rng, units, huge)
    cells = rng.integers(-1, 9, units).astype(np.int64)  # -1: not analysed; 9 cells in use
    cells[cells == 4] = 5  # a cell code with no units
    got_cells, got_counts = cell_moments(columns, cells, plan)

    con = ibis.duckdb.connect()
    per_unit = con.create_table("units", pa.table({CELL: cells} | columns))
    per_unit = per_unit.filter(per_unit[CELL] >= 0)
    expected = moments_expr(per_unit, plan, split=True).to_pyarrow()
    expected_counts = {c: int((cells == c).sum()) for c in set(cells.tolist()) if c >= 0}

    assert got_counts == expected_counts
    dims = ("locale",)
    assert collect(got_cells, got_counts, plan, CODING, dims).equals(
        collect(expected, expected_counts, plan, CODING, dims)
    )
    order = expected.sort_by(CELL)
    assert got_cells.select(order.column_names).to_pylist() == order.to_pylist()


def test_cell_sums_are_exact_beyond_int64() -> None:
    values = np.array([2**62, 2**62, 2**62, -(2**62), 5, -7], dtype=np.int64)
    cells = np.array([0, 0, 0, 1, 1, 1], dtype=np.int64)
    data = _Sorted({}, cells, 2)
    assert data.sums(values, 2**62) == [3 * 2**62, -(2**62) - 2]
