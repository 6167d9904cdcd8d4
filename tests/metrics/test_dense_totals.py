"""Dense per-index running totals: exact merges, overflow detection, padding, storage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

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


def _python_sums(rows: int, index: list[int], values: list[int]) -> list[int]:
    out = [0] * rows
    for i, v in zip(index, values, strict=True):
        out[i] += v
    return out


def test_grouped_sum_is_exact_beyond_float_precision() -> None:
    """Values whose float64 sums would round: runs short enough to stay exact (many runs),
    and values too large for float runs (added one by one)."""
    rng = np.random.default_rng(7)
    # one float run; three runs of 2047 values; values added one by one (twice)
    for peak, size in ((10**6, 5000), (2**42 + 5, 5000), (2**45 + 3, 3000), (2**59 + 7, 15)):
        index = rng.integers(0, 5, size=size)
        values = rng.integers(-peak, peak, size=size, dtype=np.int64)
        values[:3] = [peak, peak - 1, -peak]
        got = dense.grouped_sum(5, index, values)
        assert got.tolist() == _python_sums(5, index.tolist(), values.tolist()), peak
    empty = np.array([], dtype=np.int64)
    assert dense.grouped_sum(3, empty, empty).tolist() == [0, 0, 0]


def test_float_bincount_alone_would_round_these_sums() -> None:
    """Guards the test above: the naive float64 bincount is wrong on such values."""
    values = np.array([2**53 - 1, 2**53 - 1, 1], dtype=np.int64)
    naive = np.bincount([0, 0, 0], weights=values).astype(np.int64)
    assert naive.tolist() != [2**54 - 1]
    assert dense.grouped_sum(1, np.array([0, 0, 0]), values).tolist() == [2**54 - 1]
    # runs: 4999 odd values near 2**42 in one unit sum beyond 2**54 (runs of 2047 each)
    many = np.full(4999, 2**42 + 5, dtype=np.int64) - 2 * np.arange(4999, dtype=np.int64)
    index = np.zeros(4999, dtype=np.int64)  # odd total above 2**54: no float64 holds it
    assert int(np.bincount(index, weights=many)[0]) != int(many.sum())
    assert dense.grouped_sum(1, index, many).tolist() == [sum(many.tolist())]


def test_grouped_sum_overflow_raises_and_counts_are_exact() -> None:
    top = np.iinfo(np.int64).max
    with pytest.raises(UnitStatsError, match="overflow"):
        dense.grouped_sum(1, np.array([0, 0]), np.array([top, 1], dtype=np.int64))
    assert dense.grouped_count(4, np.array([3, 0, 3, 3])).tolist() == [1, 0, 0, 3]
    assert dense.checked_add(np.array([top - 1]), np.array([1])).tolist() == [top]


_INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@given(st.lists(st.tuples(_INT64, _INT64), min_size=1, max_size=6))
def test_checked_add_is_exact_or_raises_whichever_path_it_takes(
    pairs: list[tuple[int, int]],
) -> None:
    """Both paths (bounds prove no overflow / element-wise check) agree with Python ints."""
    left = np.array([a for a, _ in pairs], dtype=np.int64)
    right = np.array([b for _, b in pairs], dtype=np.int64)
    exact = [a + b for a, b in pairs]
    if all(-(2**63) <= v < 2**63 for v in exact):
        assert dense.checked_add(left, right).tolist() == exact
    else:
        with pytest.raises(UnitStatsError, match="overflow"):
            dense.checked_add(left, right)


def test_checked_add_near_the_limit_without_overflow_takes_the_checked_path() -> None:
    # the magnitudes add up to more than 2**63 but no element overflows
    left = np.array([2**62 + 1, 0], dtype=np.int64)
    right = np.array([0, 2**62], dtype=np.int64)
    assert dense.checked_add(left, right).tolist() == [2**62 + 1, 2**62]


def test_update_rewrites_the_named_columns_as_apply_and_save_would(tmp_path: Path) -> None:
    first = dense.save(tmp_path, "a.npy", np.array([1, 2, 3], dtype=np.int64))
    second = dense.save(tmp_path, "b.npy", np.array([0, 1, 0], dtype=np.int64))
    files = dense.update(
        tmp_path,
        {"a": (first, "a2.npy"), "b": (second, "b2.npy")},
        4,
        pa.array([0, 3, 3]),
        {"a": ("sum", [5, 7, 1]), "b": ("any", [1, 0, 1])},
        reset=np.array([1]),
    )
    assert files == {"a": "a2.npy", "b": "b2.npy"}
    assert dense.load(tmp_path, "a2.npy").tolist() == [6, 0, 3, 8]
    assert dense.load(tmp_path, "b2.npy").tolist() == [1, 0, 0, 1]
    assert dense.load(tmp_path, first).tolist() == [1, 2, 3]  # stored columns untouched
    top = np.iinfo(np.int64).max
    big = dense.save(tmp_path, "c.npy", np.array([top], dtype=np.int64))
    with pytest.raises(UnitStatsError, match="overflow"):
        dense.update(tmp_path, {"c": (big, "c2.npy")}, 1, [0], {"c": ("sum", [1])})
    assert not (tmp_path / "c2.npy").exists()
