"""Columnar blocks to Segment messages."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tripwire.sim.messages import Block, Ordered, iso_ms


@given(st.lists(st.integers(min_value=0, max_value=4_102_444_799_999), min_size=1, max_size=50))
def test_iso_ms_matches_numpy(values: list[int]) -> None:
    ts = np.array(values, dtype=np.int64)
    expected = np.datetime_as_string(
        ts.astype("datetime64[ms]"), unit="ms", timezone="UTC"
    ).tolist()
    assert iso_ms(ts) == expected


def test_block_properties_broadcast_scalars_and_keep_types() -> None:
    block = Block(
        "X",
        np.array([1, 2]),
        np.array([0, 1]),
        {"a": np.array([1.5, 2.5]), "b": "k", "c": [True, False]},
    )
    assert block.properties() == [{"a": 1.5, "b": "k", "c": True}, {"a": 2.5, "b": "k", "c": False}]
    assert Block("X", np.array([1]), np.array([0])).properties() == [{}]
    with pytest.raises(ValueError, match="2 times for 1 users"):
        Block("X", np.array([1, 2]), np.array([0]))


def test_merge_and_split_keep_time_order() -> None:
    a = Ordered([{"i": 1}, {"i": 3}], np.array([1, 3]), np.array([0, 0]), np.array([0, 0]))
    b = Ordered([{"i": 2}, {"i": 4}], np.array([2, 4]), np.array([0, 0]), np.array([1, 1]))
    merged = a.merge(b)
    assert [m["i"] for m in merged.messages] == [1, 2, 3, 4]
    head, tail = merged.split(3)
    assert [m["i"] for m in head.messages] == [1, 2] and [m["i"] for m in tail.messages] == [3, 4]
