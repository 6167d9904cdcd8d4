"""Dense per-index running totals: exact merges, overflow detection, padding, storage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tripwire.metrics import dense_totals as dense
from tripwire.metrics.unit_stats import UnitStatsError


def test_apply_adds_or_maximises_at_the_indexes_and_pads() -> None:
    base = np.array([5, 0, 7], dtype=np.int64)
    summed = dense.apply(base, 5, pa.array([2, 4]), pa.array([3, -1]), "sum")
    assert summed.tolist() == [5, 0, 10, 0, -1]
    assert base.tolist() == [5, 0, 7]  # the stored column is not modified
    flags = dense.apply(np.array([1, 0, 0]), 3, [0, 1], [0, 1], "any")
    assert flags.tolist() == [1, 1, 0]


def test_repeated_indexes_are_summed_and_reset_rows_recomputed() -> None:
    got = dense.apply(np.array([1, 2, 3]), 3, [1, 1, 2], [10, 20, 5], "sum", reset=np.array([2]))
    assert got.tolist() == [1, 32, 5]


def test_an_overflowing_total_raises_instead_of_wrapping() -> None:
    top = np.iinfo(np.int64).max
    with pytest.raises(UnitStatsError, match="overflow"):
        dense.apply(np.array([top - 1]), 1, [0], [2], "sum")
    with pytest.raises(UnitStatsError, match="overflow"):
        dense.apply(np.array([-top]), 1, [0], [-5], "sum")
    assert dense.apply(np.array([top - 1]), 1, [0], [1], "sum").tolist() == [top]


def test_columns_round_trip_and_entries_name_their_files(tmp_path: Path) -> None:
    column = dense.scatter(4, [3, 0], [9, 1])
    name = dense.save(tmp_path, "totals-x-a_c0.npy", column)
    loaded = dense.load(tmp_path, name)
    assert loaded.tolist() == [1, 0, 0, 9]
    assert dense.padded(loaded, 6).tolist() == [1, 0, 0, 9, 0, 0]
    with pytest.raises(UnitStatsError):
        dense.padded(loaded, 3)
    entry = dense.entry(4, {"a_c0": name})
    assert dense.is_entry(entry) and dense.files(entry) == {name}
    assert not dense.is_entry("totals-old.duckdb") and dense.files(None) == set()
    with pytest.raises(UnitStatsError, match="null"):
        dense.scatter(2, pa.array([0]), pa.array([None], pa.int64()))
